package initd

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// TestRuntimeAPIConformance drives the real HTTP server as a runtime would
// and checks Lambda's status codes and bodies, and the frames that result.
func TestRuntimeAPIConformance(t *testing.T) {
	full := api.FrameMeta{
		RequestID:       "req-full",
		DeadlineMs:      1700000000123,
		FunctionARN:     "arn:aws:lambda:us-east-1:000000000000:function:echo",
		TraceID:         "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
		ClientContext:   `{"custom":{"k":"v"}}`,
		CognitoIdentity: `{"cognitoIdentityId":"id","cognitoIdentityPoolId":"pool"}`,
	}
	tooBig := bytes.Repeat([]byte("x"), api.MaxSyncPayload+1)
	maxBody := bytes.Repeat([]byte("y"), api.MaxSyncPayload)
	begin := func(h *harness) { h.begin("req-1", `{"in":1}`) }
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	// wantError checks the FrameError sent for req-1.
	wantError := func(typ, msg string, stack ...string) func(*testing.T, *harness, reply) {
		return func(t *testing.T, h *harness, _ reply) {
			f := h.expect(api.FrameError)
			if f.Meta.RequestID != "req-1" || f.Meta.ErrorType != typ {
				t.Errorf("error frame meta = %+v, want id req-1 type %q", f.Meta, typ)
			}
			var fe api.FunctionError
			if err := json.Unmarshal(f.Body, &fe); err != nil {
				t.Fatalf("error frame body %q: %v", f.Body, err)
			}
			if fe.ErrorType != typ || (msg != "*" && fe.ErrorMessage != msg) || !slices.Equal(fe.StackTrace, stack) {
				t.Errorf("error frame body = %+v, want type %q message %q stack %q", fe, typ, msg, stack)
			}
		}
	}
	// thenNextParks checks the runtime may call /next again.
	thenNextParks := func(t *testing.T, h *harness) {
		h.nextAsync()
		h.expect(api.FrameReady)
	}

	tests := []struct {
		name   string
		setup  func(h *harness) // state before the request
		method string           // the request
		path   string           // relative to /2018-06-01/runtime/ unless it starts with "/"
		body   []byte           //
		header http.Header      //
		during func(h *harness) // when set the request runs in the background meanwhile
		status int              // want
		errTyp string           // want errorType; "" means want body (if set)
		want   string           //
		check  func(*testing.T, *harness, reply)
	}{
		{
			name: "next returns the invocation with every header", method: "GET", path: "invocation/next",
			during: func(h *harness) { h.expect(api.FrameReady); h.invoke(full, `{"hello":"world"}`) },
			status: 200, want: `{"hello":"world"}`,
			check: func(t *testing.T, _ *harness, r reply) {
				for k, v := range map[string]string{
					hdrRequestID: full.RequestID, hdrDeadlineMs: "1700000000123",
					hdrFunctionARN: full.FunctionARN, hdrTraceID: full.TraceID,
					hdrClientContext: full.ClientContext, hdrCognitoIdentity: full.CognitoIdentity,
				} {
					if got := r.header.Get(k); got != v {
						t.Errorf("header %s = %q, want %q", k, got, v)
					}
				}
			},
		},
		{
			name: "next without optional meta", method: "GET", path: "invocation/next",
			during: func(h *harness) { h.expect(api.FrameReady); h.invoke(api.FrameMeta{RequestID: "r"}, "") },
			status: 200, want: "",
			check: func(t *testing.T, _ *harness, r reply) {
				for _, k := range []string{hdrClientContext, hdrCognitoIdentity} {
					if _, ok := r.header[k]; ok {
						t.Errorf("header %s present, want absent", k)
					}
				}
				ms, err := strconv.ParseInt(r.header.Get(hdrDeadlineMs), 10, 64)
				if err != nil || ms <= time.Now().UnixMilli() {
					t.Errorf("deadline header %q: want a future Unix ms", r.header.Get(hdrDeadlineMs))
				}
			},
		},
		{
			name: "next while an invocation is outstanding", setup: begin,
			method: "GET", path: "invocation/next", status: 403, errTyp: errTypeInvalidState,
		},
		{
			name: "response", setup: begin, method: "POST", path: "invocation/req-1/response",
			body: []byte(`{"out":2}`), status: 202, want: `{"status":"OK"}`,
			check: func(t *testing.T, h *harness, _ reply) {
				f := h.expect(api.FrameResponse)
				if f.Meta.RequestID != "req-1" || string(f.Body) != `{"out":2}` {
					t.Errorf("response frame = %+v %q", f.Meta, f.Body)
				}
				thenNextParks(t, h)
			},
		},
		{
			name: "response of exactly 6 MB", setup: begin, method: "POST", path: "invocation/req-1/response",
			body: maxBody, status: 202, want: `{"status":"OK"}`,
			check: func(t *testing.T, h *harness, _ reply) {
				if f := h.expect(api.FrameResponse); len(f.Body) != api.MaxSyncPayload {
					t.Errorf("response frame body %d bytes, want %d", len(f.Body), api.MaxSyncPayload)
				}
			},
		},
		{
			name: "response over 6 MB", setup: begin, method: "POST", path: "invocation/req-1/response",
			body: tooBig, status: 413, errTyp: errTypeTooLarge,
			check: func(t *testing.T, h *harness, r reply) {
				wantError(errTypeResponseTooBig, "*")(t, h, r)
				thenNextParks(t, h)
			},
		},
		{
			name: "response for an unknown id", setup: begin, method: "POST", path: "invocation/other/response",
			body: []byte("x"), status: 400, errTyp: errTypeInvalidID,
			check: func(t *testing.T, h *harness, _ reply) { h.noFrame() },
		},
		{
			name: "response with nothing outstanding", method: "POST", path: "invocation/req-1/response",
			body: []byte("x"), status: 400, errTyp: errTypeInvalidID,
		},
		{
			name: "second response for the same id",
			setup: func(h *harness) {
				begin(h)
				if r := h.do("POST", "invocation/req-1/response", []byte("1"), nil); r.status != 202 {
					h.t.Fatalf("first response: %d", r.status)
				}
				h.expect(api.FrameResponse)
			},
			method: "POST", path: "invocation/req-1/response", body: []byte("2"), status: 400, errTyp: errTypeInvalidID,
			check: func(t *testing.T, h *harness, _ reply) { h.noFrame() },
		},
		{
			name: "error with a Lambda error body", setup: begin, method: "POST", path: "invocation/req-1/error",
			body:   []byte(`{"errorMessage":"boom","errorType":"MyError","stackTrace":["at a","at b"]}`),
			header: hdr(hdrErrorType, "Ignored"), status: 202, want: `{"status":"OK"}`,
			check: wantError("MyError", "boom", "at a", "at b"),
		},
		{
			name: "error with aws-lambda-go stack frames", setup: begin, method: "POST", path: "invocation/req-1/error",
			body:   []byte(`{"errorMessage":"m","errorType":"T","stackTrace":[{"path":"main.go","line":12,"label":"handler"},"raw"]}`),
			status: 202, check: wantError("T", "m", "main.go:12 handler", "raw"),
		},
		{
			name: "error with a single-string stack trace", setup: begin, method: "POST", path: "invocation/req-1/error",
			body:   []byte(`{"errorMessage":"m","errorType":"T","stackTrace":"at x"}`),
			status: 202, check: wantError("T", "m", "at x"),
		},
		{
			name: "error with only the type header", setup: begin, method: "POST", path: "invocation/req-1/error",
			body: []byte("segfault\n"), header: hdr(hdrErrorType, "Runtime.ExitError"), status: 202,
			check: wantError("Runtime.ExitError", "segfault"),
		},
		{
			name: "error body without a type takes the header's", setup: begin, method: "POST", path: "invocation/req-1/error",
			body: []byte(`{"errorMessage":"m"}`), header: hdr(hdrErrorType, "Header.Type"), status: 202,
			check: wantError("Header.Type", "m"),
		},
		{
			name: "error with nothing at all", setup: begin, method: "POST", path: "invocation/req-1/error",
			status: 202, check: wantError(errTypeUnhandled, ""),
		},
		{
			name: "error for an unknown id", setup: begin, method: "POST", path: "invocation/nope/error",
			body: []byte(`{}`), status: 400, errTyp: errTypeInvalidID,
		},
		{
			name: "error over 6 MB", setup: begin, method: "POST", path: "invocation/req-1/error",
			body: tooBig, status: 413, errTyp: errTypeTooLarge, check: wantError(errTypeResponseTooBig, "*"),
		},
		{
			name: "init error before the first next", method: "POST", path: "init/error",
			body:   []byte(`{"errorMessage":"no handler","errorType":"Runtime.NoSuchHandler"}`),
			status: 202, want: `{"status":"OK"}`,
			check: func(t *testing.T, h *harness, _ reply) {
				f := h.expect(api.FrameInitError)
				var fe api.FunctionError
				if err := json.Unmarshal(f.Body, &fe); err != nil || fe.ErrorType != "Runtime.NoSuchHandler" ||
					fe.ErrorMessage != "no handler" || f.Meta.ErrorType != "Runtime.NoSuchHandler" {
					t.Errorf("init error frame = %+v %q (%v)", f.Meta, f.Body, err)
				}
			},
		},
		{
			name: "init error with an unparsable body", method: "POST", path: "init/error",
			body: []byte("cannot load"), header: hdr(hdrErrorType, "Runtime.Unknown"), status: 202,
			check: func(t *testing.T, h *harness, _ reply) {
				f := h.expect(api.FrameInitError)
				if f.Meta.ErrorType != "Runtime.Unknown" || !strings.Contains(string(f.Body), "cannot load") {
					t.Errorf("init error frame = %+v %q", f.Meta, f.Body)
				}
			},
		},
		{
			name:   "init error after the first next",
			setup:  func(h *harness) { h.nextAsync(); h.expect(api.FrameReady) },
			method: "POST", path: "init/error", body: []byte(`{}`), status: 403, errTyp: errTypeInvalidState,
			check: func(t *testing.T, h *harness, _ reply) { h.noFrame() },
		},
		{name: "unknown path", method: "GET", path: "/healthz", status: 404, errTyp: errTypeNotFound},
		{name: "unknown runtime path", method: "GET", path: "bogus", status: 404, errTyp: errTypeNotFound},
		{name: "unknown invocation action", method: "POST", path: "invocation/req-1/bogus", status: 404, errTyp: errTypeNotFound},
		{name: "empty request id", method: "POST", path: "invocation//response", status: 404, errTyp: errTypeNotFound},
		{name: "POST next", method: "POST", path: "invocation/next", status: 405, errTyp: errTypeMethod},
		{name: "GET response", method: "GET", path: "invocation/req-1/response", status: 405, errTyp: errTypeMethod},
		{name: "PUT error", method: "PUT", path: "invocation/req-1/error", status: 405, errTyp: errTypeMethod},
		{name: "GET init error", method: "GET", path: "init/error", status: 405, errTyp: errTypeMethod},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startHarness(t, WithoutProcess())
			if tt.setup != nil {
				tt.setup(h)
			}
			var r reply
			if tt.during != nil {
				ch := make(chan reply, 1)
				go func() {
					r, _ := h.request(context.Background(), tt.method, tt.path, tt.body, tt.header)
					ch <- r
				}()
				tt.during(h)
				r = h.await(ch)
			} else {
				r = h.do(tt.method, tt.path, tt.body, tt.header)
			}
			if r.status != tt.status {
				t.Fatalf("status = %d (%s), want %d", r.status, r.body, tt.status)
			}
			if tt.errTyp != "" {
				var fe api.FunctionError
				if err := json.Unmarshal(r.body, &fe); err != nil || fe.ErrorType != tt.errTyp || fe.ErrorMessage == "" {
					t.Errorf("body = %s, want {errorMessage, errorType:%q}", r.body, tt.errTyp)
				}
				if ct := r.header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q", ct)
				}
			} else if tt.want != "" || tt.status == 200 {
				if got := strings.TrimSpace(string(r.body)); got != tt.want {
					t.Errorf("body = %q, want %q", got, tt.want)
				}
			}
			if tt.status == 405 && r.header.Get("Allow") == "" {
				t.Error("405 without an Allow header")
			}
			if tt.check != nil {
				tt.check(t, h, r)
			}
		})
	}
}

// TestFrameRoundTrips follows invocations from frame to HTTP and back.
func TestFrameRoundTrips(t *testing.T) {
	t.Run("first next sends ready, invoke returns, response comes back", func(t *testing.T) {
		h := startHarness(t, WithoutProcess())
		h.noFrame() // nothing before the runtime asks
		for i, id := range []string{"a", "b", "c"} {
			r := h.begin(id, "payload-"+id)
			if got := r.header.Get(hdrRequestID); got != id || string(r.body) != "payload-"+id {
				t.Fatalf("invocation %d: id %q body %q", i, got, r.body)
			}
			h.do("POST", "invocation/"+id+"/response", []byte("resp-"+id), nil)
			f := h.expect(api.FrameResponse)
			if f.Meta.RequestID != id || string(f.Body) != "resp-"+id {
				t.Fatalf("response frame %+v %q", f.Meta, f.Body)
			}
		}
	})
	t.Run("invokes arriving while busy are queued", func(t *testing.T) {
		h := startHarness(t, WithoutProcess())
		h.begin("a", "1")
		h.invoke(api.FrameMeta{RequestID: "b"}, "2")
		h.invoke(api.FrameMeta{RequestID: "c"}, "3")
		h.do("POST", "invocation/a/response", nil, nil)
		h.expect(api.FrameResponse)
		for _, id := range []string{"b", "c"} {
			r := h.do("GET", "invocation/next", nil, nil)
			if got := r.header.Get(hdrRequestID); r.status != 200 || got != id {
				t.Fatalf("/next = %d id %q, want %q", r.status, got, id)
			}
			h.do("POST", "invocation/"+id+"/error", []byte(`{"errorType":"E","errorMessage":"m"}`), nil)
			if f := h.expect(api.FrameError); f.Meta.RequestID != id {
				t.Fatalf("error frame for %q, want %q", f.Meta.RequestID, id)
			}
		}
		h.nextAsync()
		h.expect(api.FrameReady)
	})
	t.Run("an abandoned next does not lose the invocation", func(t *testing.T) {
		h := startHarness(t, WithoutProcess())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _, _ = h.request(ctx, "GET", "invocation/next", nil, nil) }()
		h.expect(api.FrameReady)
		cancel()
		<-done
		time.Sleep(50 * time.Millisecond) // let the server notice the hang-up
		ch := h.nextAsync()
		h.expect(api.FrameReady)
		h.invoke(api.FrameMeta{RequestID: "kept"}, "p")
		if r := h.await(ch); r.header.Get(hdrRequestID) != "kept" {
			t.Fatalf("/next = %d %q", r.status, r.body)
		}
	})
	t.Run("response failure in trailers becomes an error frame", func(t *testing.T) {
		h := startHarness(t, WithoutProcess())
		h.begin("req-1", "")
		fe := `{"errorMessage":"stream broke","errorType":"Runtime.StreamError"}`
		req, _ := http.NewRequest("POST", h.base+"invocation/req-1/response", io.MultiReader(strings.NewReader("partial")))
		req.ContentLength = -1
		req.Trailer = http.Header{
			hdrErrorType: {"Runtime.StreamError"},
			trlErrorBody: {base64.StdEncoding.EncodeToString([]byte(fe))},
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 202 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		f := h.expect(api.FrameError)
		if f.Meta.ErrorType != "Runtime.StreamError" || !strings.Contains(string(f.Body), "stream broke") {
			t.Fatalf("frame %+v %q", f.Meta, f.Body)
		}
	})
	t.Run("shutdown never answers a parked next with 200", func(t *testing.T) {
		h := startHarness(t, WithoutProcess())
		ch := h.nextAsync()
		h.expect(api.FrameReady)
		h.cancel()
		if r := h.await(ch); r.status == http.StatusOK {
			t.Fatalf("/next during shutdown = 200 %q", r.body)
		}
		if err := waitRun(t, h); !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	})
	t.Run("non-invoke frames are ignored", func(t *testing.T) {
		h := startHarness(t, WithoutProcess())
		if err := h.agent.Write(api.Frame{Kind: api.FrameLog, Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		h.invoke(api.FrameMeta{}, "no id")
		h.begin("ok", "")
	})
}

// TestInputEnds checks how Run ends when stdin does.
func TestInputEnds(t *testing.T) {
	t.Run("EOF returns nil", func(t *testing.T) {
		h := startHarness(t, WithoutProcess())
		h.toInit.Close()
		if err := waitRun(t, h); err != nil || ExitCode(err) != 0 {
			t.Fatalf("Run = %v, want nil", err)
		}
	})
	for name, garbage := range map[string][]byte{
		"unknown kind":    []byte("Z\x00\x00\x00\x00\x00\x00\x00\x00"),
		"truncated":       []byte("I\x00\x00"),
		"bad meta":        append([]byte("I\x00\x00\x00\x01\x00\x00\x00\x00"), '{'),
		"frame too large": []byte("I\x00\x00\x00\x00\xff\xff\xff\xff"),
	} {
		t.Run(name, func(t *testing.T) {
			h := startHarness(t, WithoutProcess())
			go func() { _, _ = h.toInit.Write(garbage); _ = h.toInit.Close() }()
			err := waitRun(t, h)
			if !errors.Is(err, api.ErrBadFrame) && !errors.Is(err, api.ErrFrameTooLarge) {
				t.Fatalf("Run = %v, want a malformed-frame error", err)
			}
			if ExitCode(err) != 2 {
				t.Errorf("ExitCode = %d, want 2", ExitCode(err))
			}
		})
	}
}

func waitRun(t *testing.T, h *harness) error {
	t.Helper()
	select {
	case err := <-h.done:
		h.done <- err // for the cleanup
		return err
	case <-time.After(waitFor):
		t.Fatal("Run did not return")
		return nil
	}
}
