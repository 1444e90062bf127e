package agent

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

func TestHandler(t *testing.T) {
	t.Parallel()
	const token = "s3cret"
	e := newTestEnv(t, []*api.Function{testFn("web", 1, 10*time.Second, nil)}, WithToken(token))
	srv := httptest.NewServer(e.a.Handler())
	t.Cleanup(srv.Close)

	big := bytes.Repeat([]byte("x"), api.MaxSyncPayload+1)
	cases := []struct {
		name      string
		method    string
		path      string
		auth      string // Authorization header; "-" for none
		version   string // Amber-Function-Version; "-" for none
		reqID     string
		body      []byte
		status    int
		code      string // ErrorDetail.Code of an error reply
		field     string // ErrorDetail.Field of an error reply
		startKind api.StartKind
		fnError   string
	}{
		{name: "no token", path: "/v1/functions/web/invoke", auth: "-", version: "1", body: []byte(`{}`),
			status: http.StatusUnauthorized, code: "Unauthorized"},
		{name: "wrong token", path: "/v1/functions/web/invoke", auth: "Bearer nope", version: "1", body: []byte(`{}`),
			status: http.StatusUnauthorized, code: "Unauthorized"},
		{name: "token without Bearer", path: "/v1/functions/web/invoke", auth: token, version: "1", body: []byte(`{}`),
			status: http.StatusUnauthorized, code: "Unauthorized"},
		{name: "no version", path: "/v1/functions/web/invoke", version: "-", body: []byte(`{}`),
			status: http.StatusBadRequest, code: "InvalidParameterValue", field: "version"},
		{name: "version not a number", path: "/v1/functions/web/invoke", version: "latest", body: []byte(`{}`),
			status: http.StatusBadRequest, code: "InvalidParameterValue", field: "version"},
		{name: "version zero", path: "/v1/functions/web/invoke", version: "0", body: []byte(`{}`),
			status: http.StatusBadRequest, code: "InvalidParameterValue", field: "version"},
		{name: "bad name", path: "/v1/functions/Web_Fn/invoke", version: "1", body: []byte(`{}`),
			status: http.StatusBadRequest, code: "InvalidParameterValue", field: "function"},
		{name: "payload too large", path: "/v1/functions/web/invoke", version: "1", body: big,
			status: http.StatusRequestEntityTooLarge, code: "RequestTooLarge"},
		{name: "unknown function", path: "/v1/functions/ghost/invoke", version: "1", body: []byte(`{}`),
			status: http.StatusNotFound, code: "ResourceNotFound"},
		{name: "unknown version", path: "/v1/functions/web/invoke", version: "7", body: []byte(`{}`),
			status: http.StatusNotFound, code: "ResourceNotFound"},
		{name: "cold invoke", path: "/v1/functions/web/invoke", version: "1", reqID: "req-http-1",
			body: []byte(`{"op":"echo","hello":"world"}`), status: http.StatusOK, startKind: api.StartCold},
		{name: "warm invoke", path: "/v1/functions/web/invoke", version: "1", reqID: "req-http-2",
			body: []byte(`{"op":"echo","again":true}`), status: http.StatusOK, startKind: api.StartWarm},
		{name: "function error", path: "/v1/functions/web/invoke", version: "1", reqID: "req-http-3",
			body: []byte(`{"op":"error"}`), status: http.StatusOK, startKind: api.StartWarm, fnError: "Unhandled"},
		{name: "generated request id", path: "/v1/functions/web/invoke", version: "1",
			body: []byte(`{}`), status: http.StatusOK, startKind: api.StartWarm},
		{name: "instances", method: http.MethodGet, path: "/v1/instances", status: http.StatusOK},
		{name: "instances without token", method: http.MethodGet, path: "/v1/instances", auth: "-",
			status: http.StatusUnauthorized, code: "Unauthorized"},
		{name: "healthz needs no token", method: http.MethodGet, path: "/healthz", auth: "-", status: http.StatusOK},
	}
	// The cases run in order: the cold invoke makes the instance the
	// warm ones reuse.
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+tc.path, bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			switch tc.auth {
			case "":
				req.Header.Set("Authorization", "Bearer "+token)
			case "-":
			default:
				req.Header.Set("Authorization", tc.auth)
			}
			if tc.version != "" && tc.version != "-" {
				req.Header.Set(api.HeaderVersion, tc.version)
			}
			if tc.reqID != "" {
				req.Header.Set(api.HeaderRequestID, tc.reqID)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body bytes.Buffer
			_, _ = body.ReadFrom(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tc.status, body.Bytes())
			}
			if tc.code != "" {
				var eb api.ErrorBody
				if err := json.Unmarshal(body.Bytes(), &eb); err != nil {
					t.Fatalf("error body %s: %v", body.Bytes(), err)
				}
				if eb.Error.Code != tc.code || eb.Error.Field != tc.field || eb.Error.Message == "" {
					t.Errorf("error %+v, want code %s field %q and a message", eb.Error, tc.code, tc.field)
				}
				if tc.field != "" && !strings.Contains(eb.Error.Message, tc.field) {
					t.Errorf("error message %q does not name %q", eb.Error.Message, tc.field)
				}
				return
			}
			switch {
			case tc.path == "/healthz":
				if body.String() != "ok\n" {
					t.Errorf("healthz body %q", body.String())
				}
			case tc.path == "/v1/instances":
				var list []api.Instance
				if err := json.Unmarshal(body.Bytes(), &list); err != nil {
					t.Fatalf("instances body %s: %v", body.Bytes(), err)
				}
				if len(list) != 1 || list[0].Function != "web" || list[0].State != api.StateIdle {
					t.Errorf("instances %+v, want one idle instance of web", list)
				}
			default:
				checkInvokeResponse(t, resp, body.Bytes(), tc.reqID, tc.body, tc.startKind, tc.fnError)
			}
		})
	}
}

func checkInvokeResponse(t *testing.T, resp *http.Response, body []byte, reqID string, sent []byte, kind api.StartKind, fnError string) {
	t.Helper()
	h := resp.Header
	res := api.ReadInvokeHeaders(h, body)
	if reqID != "" && res.RequestID != reqID {
		t.Errorf("%s = %q, want the request's %q", api.HeaderRequestID, res.RequestID, reqID)
	}
	if res.RequestID == "" {
		t.Errorf("no %s header", api.HeaderRequestID)
	}
	if res.StartKind != kind {
		t.Errorf("%s = %q, want %q", api.HeaderStartKind, res.StartKind, kind)
	}
	if ms, err := strconv.ParseInt(h.Get(api.HeaderBilledMs), 10, 64); err != nil || ms < 1 {
		t.Errorf("%s = %q, want ≥ 1", api.HeaderBilledMs, h.Get(api.HeaderBilledMs))
	}
	if res.Function != "web" || res.Version != 1 || res.Agent != "test-agent" || res.Instance == "" || res.MemoryMB != 128 {
		t.Errorf("result headers %+v", res)
	}
	if kind == api.StartCold && res.InitDuration <= 0 {
		t.Errorf("cold start with %s = %q", api.HeaderInitMicros, h.Get(api.HeaderInitMicros))
	}
	if got := h.Get(api.HeaderFunctionError); got != fnError {
		t.Errorf("%s = %q, want %q", api.HeaderFunctionError, got, fnError)
	}
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if fnError == "" {
		if !bytes.Equal(body, sent) {
			t.Errorf("body %s, want the echo %s", body, sent)
		}
		return
	}
	var fe api.FunctionError
	if err := json.Unmarshal(body, &fe); err != nil || fe.ErrorType != "FakeError" || fe.ErrorMessage != "boom" {
		t.Errorf("function error body %s (%v)", body, err)
	}
}

func TestAgentMetrics(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, []*api.Function{testFn("met", 1, 10*time.Second, nil)}, WithToken("tok"))
	srv := httptest.NewServer(e.a.Handler())
	t.Cleanup(srv.Close)
	if _, err := e.a.Invoke(t.Context(), "met", 1, "", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	get := func(auth string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if resp, _ := get(""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/metrics without a token: %s", resp.Status)
	}
	resp, body := get("Bearer tok")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	for _, want := range []string{
		`amber_agent_function_instances{agent="test-agent",function="met",state="idle"} 1`,
		`amber_agent_function_invocations{agent="test-agent",function="met"} 1`,
		"# TYPE amber_agent_cpu_percent gauge",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
}
