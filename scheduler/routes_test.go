package scheduler

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/amberfn/amber/api"
)

func TestRouteAPI(t *testing.T) {
	ts := newTestScheduler(t, WithToken("tok"))
	ts.deploy(t, "hello", 128)
	ts.deploy(t, "other", 128)

	rt := decode[Route](t, ts.doJSON(t, "PUT", "/v1/functions/hello/route", RouteSpec{Path: "/hello/", Methods: []string{"post", "GET", "get"}}), http.StatusOK)
	if rt.Function != "hello" || rt.Path != "/hello" || strings.Join(rt.Methods, ",") != "GET,POST" {
		t.Errorf("stored route %+v", rt)
	}
	if got := decode[Route](t, ts.do(t, "GET", "/v1/functions/hello/route", nil), http.StatusOK); got.Path != "/hello" {
		t.Errorf("GET route %+v", got)
	}
	for _, tt := range []struct {
		name   string
		fn     string
		spec   any
		status int
	}{
		{"no slash", "other", RouteSpec{Path: "hello"}, 400},
		{"empty", "other", RouteSpec{}, 400},
		{"dot dot", "other", RouteSpec{Path: "/a/../b"}, 400},
		{"dot dot in a name", "other", RouteSpec{Path: "/a..b"}, 400},
		{"dot segment", "other", RouteSpec{Path: "/a/./b"}, 400},
		{"double slash", "other", RouteSpec{Path: "/a//b"}, 400},
		{"query", "other", RouteSpec{Path: "/a?b"}, 400},
		{"space", "other", RouteSpec{Path: "/a b"}, 400},
		{"percent", "other", RouteSpec{Path: "/a%2e"}, 400},
		{"too long", "other", RouteSpec{Path: "/" + strings.Repeat("a", 600)}, 400},
		{"bad method", "other", RouteSpec{Path: "/o", Methods: []string{"FETCH"}}, 400},
		{"not JSON", "other", "nope", 400},
		{"taken path", "other", RouteSpec{Path: "/hello"}, 409},
		{"taken path, trailing slash", "other", RouteSpec{Path: "/hello/"}, 409},
		{"unknown function", "ghost", RouteSpec{Path: "/ghost"}, 404},
		{"bad function name", "Ghost", RouteSpec{Path: "/ghost"}, 400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			errorBody(t, ts.doJSON(t, "PUT", "/v1/functions/"+tt.fn+"/route", tt.spec), tt.status)
		})
	}
	// ANY clears the method list; a function's second PUT replaces its route.
	rt = decode[Route](t, ts.doJSON(t, "PUT", "/v1/functions/other/route", RouteSpec{Path: "/o", Methods: []string{"GET", "ANY"}}), http.StatusOK)
	if len(rt.Methods) != 0 {
		t.Errorf("ANY → methods %v", rt.Methods)
	}
	decode[Route](t, ts.doJSON(t, "PUT", "/v1/functions/other/route", RouteSpec{Path: "/"}), http.StatusOK)
	list := decode[[]Route](t, ts.do(t, "GET", "/v1/routes", nil), http.StatusOK)
	if len(list) != 2 || list[0].Path != "/" || list[1].Path != "/hello" {
		t.Errorf("routes %+v", list)
	}
	// The token guards the route API.
	req, _ := http.NewRequest("GET", ts.srv.URL+"/v1/routes", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Errorf("routes without token: %v %v", resp.StatusCode, err)
	}

	if resp := ts.do(t, "DELETE", "/v1/functions/other/route", nil); resp.StatusCode != 204 {
		t.Errorf("DELETE route: %d", resp.StatusCode)
	}
	errorBody(t, ts.do(t, "GET", "/v1/functions/other/route", nil), 404)
	errorBody(t, ts.do(t, "DELETE", "/v1/functions/other/route", nil), 404)

	// A deleted function's path is free again.
	if resp := ts.do(t, "DELETE", "/v1/functions/hello", nil); resp.StatusCode != 204 {
		t.Fatalf("delete function: %d", resp.StatusCode)
	}
	decode[Route](t, ts.doJSON(t, "PUT", "/v1/functions/other/route", RouteSpec{Path: "/hello"}), http.StatusOK)
	if list := decode[[]Route](t, ts.do(t, "GET", "/v1/routes", nil), http.StatusOK); len(list) != 1 || list[0].Function != "other" {
		t.Errorf("routes after delete %+v", list)
	}
	// Deployed again, the function does not get its old route back.
	ts.deploy(t, "hello", 256)
	errorBody(t, ts.do(t, "GET", "/v1/functions/hello/route", nil), 404)
}

func TestRouteSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	s1, err := New(WithDataDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	digest, _, err := s1.images.put(bytes.NewReader(ociTar(t, "r")))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s1.deploy("hello", api.FunctionSpec{Image: digest}); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.putRoute("hello", RouteSpec{Path: "/hi", Methods: []string{"GET"}}); err != nil {
		t.Fatal(err)
	}
	s1.Close()
	s2, err := New(WithDataDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	rt, err := s2.route("hello")
	if err != nil || rt.Path != "/hi" || len(rt.Methods) != 1 {
		t.Errorf("route after restart: %+v %v", rt, err)
	}
}

// routeTest has function "web" at /web (GET, POST) behind a fake agent
// that records the event and answers with reply.
type routeTest struct {
	*testScheduler
	agent *fakeAgent
}

func newRouteTest(t *testing.T, methods ...string) *routeTest {
	t.Helper()
	ts := newTestScheduler(t, WithToken("tok"))
	ag := newFakeAgent(t, "n1")
	ts.heartbeat(t, agentHB("n1", ag.srv.URL, 4096))
	ts.deploy(t, "web", 128)
	decode[Route](t, ts.doJSON(t, "PUT", "/v1/functions/web/route", RouteSpec{Path: "/web", Methods: methods}), http.StatusOK)
	return &routeTest{ts, ag}
}

// public sends a request without any credentials.
func (rt *routeTest) public(t *testing.T, method, path string, body io.Reader, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, rt.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	c := *rt.srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func (rt *routeTest) lastEvent(t *testing.T) events.APIGatewayV2HTTPRequest {
	t.Helper()
	got := rt.agent.got()
	if len(got) == 0 {
		t.Fatal("the agent got no invocation")
	}
	var ev events.APIGatewayV2HTTPRequest
	if err := json.Unmarshal(got[len(got)-1].Payload, &ev); err != nil {
		t.Fatalf("event is not an APIGatewayV2HTTPRequest: %v: %s", err, got[len(got)-1].Payload)
	}
	return ev
}

func TestRouteRequestBecomesEvent(t *testing.T) {
	rt := newRouteTest(t, "GET", "POST")
	resp, body := rt.public(t, "POST", "/r/web/items/42?b=2&a=1&a=3", strings.NewReader(`{"x":1}`),
		"Content-Type", "application/json", "User-Agent", "curl/8", "X-Custom", "one", "X-Custom", "two",
		"Cookie", "s=1; t=2")
	if resp.StatusCode != 200 {
		t.Fatalf("→ %d %s", resp.StatusCode, body)
	}
	ev := rt.lastEvent(t)
	if ev.Version != "2.0" || ev.RouteKey != "POST /web" || ev.RawPath != "/web/items/42" || ev.RawQueryString != "b=2&a=1&a=3" {
		t.Errorf("event %+v", ev)
	}
	if ev.Headers["content-type"] != "application/json" || ev.Headers["user-agent"] != "curl/8" || ev.Headers["x-custom"] != "one,two" ||
		ev.Headers["host"] == "" || ev.Headers["content-length"] != "7" || ev.Headers["cookie"] != "" {
		t.Errorf("headers %v", ev.Headers)
	}
	for k := range ev.Headers {
		if k != strings.ToLower(k) {
			t.Errorf("header %q is not lower case", k)
		}
	}
	if strings.Join(ev.Cookies, "|") != "s=1|t=2" {
		t.Errorf("cookies %q", ev.Cookies)
	}
	if ev.QueryStringParameters["a"] != "1,3" || ev.QueryStringParameters["b"] != "2" {
		t.Errorf("query %v", ev.QueryStringParameters)
	}
	if ev.PathParameters["proxy"] != "items/42" {
		t.Errorf("path parameters %v", ev.PathParameters)
	}
	h := ev.RequestContext.HTTP
	if h.Method != "POST" || h.Path != "/web/items/42" || h.SourceIP != "127.0.0.1" || h.UserAgent != "curl/8" || h.Protocol != "HTTP/1.1" {
		t.Errorf("requestContext.http %+v", h)
	}
	rc := ev.RequestContext
	if rc.RequestID == "" || rc.RequestID != resp.Header.Get(api.HeaderRequestID) || rc.Stage != "$default" || rc.TimeEpoch == 0 || rc.RouteKey != ev.RouteKey {
		t.Errorf("requestContext %+v (response id %q)", rc, resp.Header.Get(api.HeaderRequestID))
	}
	if ev.Body != `{"x":1}` || ev.IsBase64Encoded {
		t.Errorf("body %q base64 %v", ev.Body, ev.IsBase64Encoded)
	}

	// Binary bodies travel base64-encoded.
	bin := []byte{0, 1, 2, 0xff, 0xfe}
	rt.public(t, "POST", "/r/web", bytes.NewReader(bin), "Content-Type", "application/octet-stream")
	ev = rt.lastEvent(t)
	if got, _ := base64.StdEncoding.DecodeString(ev.Body); !ev.IsBase64Encoded || !bytes.Equal(got, bin) {
		t.Errorf("binary body %q base64 %v", ev.Body, ev.IsBase64Encoded)
	}
	if ev.RawPath != "/web" || ev.PathParameters != nil || ev.QueryStringParameters != nil {
		t.Errorf("exact path event %+v", ev)
	}
}

func TestRouteResponses(t *testing.T) {
	rt := newRouteTest(t, "GET", "POST")
	reply := func(status int, hdr map[string]string, body string) {
		rt.agent.setReply(func(w http.ResponseWriter, r *http.Request, _ []byte) {
			res := api.InvokeResult{RequestID: r.Header.Get(api.HeaderRequestID), Function: "web", Version: 1, Agent: "n1", StartKind: api.StartWarm}
			if status == 0 {
				res.WriteHeaders(w.Header())
			}
			for k, v := range hdr {
				w.Header().Set(k, v)
			}
			if status != 0 {
				api.WriteJSON(w, status, api.ErrorBody{Error: api.ErrorDetail{Code: "X", Message: "secret detail"}})
				return
			}
			w.Write([]byte(body))
		})
	}
	for _, tt := range []struct {
		name        string
		agentStatus int
		agentHdr    map[string]string
		fnResult    string
		wantStatus  int
		wantHdr     map[string]string
		wantCookies []string
		wantBody    string
	}{
		{name: "structured", fnResult: `{"statusCode":201,"headers":{"Content-Type":"text/plain","X-Thing":"a"},"cookies":["a=1; Path=/","b=2"],"body":"made"}`,
			wantStatus: 201, wantHdr: map[string]string{"Content-Type": "text/plain", "X-Thing": "a"}, wantCookies: []string{"a=1; Path=/", "b=2"}, wantBody: "made"},
		{name: "base64 body", fnResult: `{"statusCode":200,"headers":{"content-type":"image/png"},"body":"AAEC/w==","isBase64Encoded":true}`,
			wantStatus: 200, wantHdr: map[string]string{"Content-Type": "image/png"}, wantBody: "\x00\x01\x02\xff"},
		{name: "redirect", fnResult: `{"statusCode":302,"headers":{"Location":"/elsewhere"}}`,
			wantStatus: 302, wantHdr: map[string]string{"Location": "/elsewhere"}},
		{name: "plain JSON object", fnResult: `{"message":"hi"}`, wantStatus: 200, wantHdr: map[string]string{"Content-Type": "application/json"}, wantBody: `{"message":"hi"}`},
		{name: "JSON string", fnResult: `"hi"`, wantStatus: 200, wantHdr: map[string]string{"Content-Type": "application/json"}, wantBody: `"hi"`},
		{name: "hop headers dropped", fnResult: `{"statusCode":200,"headers":{"Content-Length":"99","Connection":"close","Bad\nName":"x"},"body":"ok"}`,
			wantStatus: 200, wantBody: "ok"},
		{name: "bad statusCode", fnResult: `{"statusCode":42,"body":"x"}`, wantStatus: 502, wantBody: `{"message":"Internal Server Error"}` + "\n"},
		{name: "statusCode not a number", fnResult: `{"statusCode":"200"}`, wantStatus: 502, wantBody: `{"message":"Internal Server Error"}` + "\n"},
		{name: "bad base64", fnResult: `{"statusCode":200,"body":"%%%","isBase64Encoded":true}`, wantStatus: 502},
		{name: "function error", agentHdr: map[string]string{api.HeaderFunctionError: "Unhandled"}, fnResult: `{"errorMessage":"secret detail"}`,
			wantStatus: 502, wantHdr: map[string]string{api.HeaderFunctionError: "Unhandled"}, wantBody: `{"message":"Internal Server Error"}` + "\n"},
		{name: "throttled", agentStatus: 429, wantStatus: 429, wantBody: `{"message":"Too Many Requests"}` + "\n"},
		{name: "platform failure", agentStatus: 503, wantStatus: 503, wantBody: `{"message":"Service Unavailable"}` + "\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reply(tt.agentStatus, tt.agentHdr, tt.fnResult)
			resp, body := rt.public(t, "GET", "/r/web", nil)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.wantStatus, body)
			}
			for k, v := range tt.wantHdr {
				if resp.Header.Get(k) != v {
					t.Errorf("header %s = %q, want %q", k, resp.Header.Get(k), v)
				}
			}
			if tt.wantCookies != nil && strings.Join(resp.Header.Values("Set-Cookie"), "|") != strings.Join(tt.wantCookies, "|") {
				t.Errorf("Set-Cookie %q", resp.Header.Values("Set-Cookie"))
			}
			if tt.wantBody != "" && string(body) != tt.wantBody {
				t.Errorf("body %q, want %q", body, tt.wantBody)
			}
			if strings.Contains(string(body), "secret detail") || resp.Header.Get(api.HeaderAgent) != "" {
				t.Errorf("internal detail leaked: %v %s", resp.Header, body)
			}
			if resp.Header.Get(api.HeaderRequestID) == "" {
				t.Errorf("no %s", api.HeaderRequestID)
			}
			if resp.Header.Get("Connection") == "close" || resp.Header.Get("X-Thing") == "" && strings.Contains(tt.fnResult, "X-Thing") {
				t.Errorf("headers %v", resp.Header)
			}
		})
	}
}

func TestRouteRefusals(t *testing.T) {
	rt := newRouteTest(t, "GET")
	for _, tt := range []struct {
		name, method, path string
		body               io.Reader
		status             int
	}{
		{"no route", "GET", "/r/nothing", nil, 404},
		{"prefix is not a segment", "GET", "/r/webby", nil, 404},
		{"root", "GET", "/r/", nil, 404},
		{"method not allowed", "POST", "/r/web", strings.NewReader("{}"), 405},
		{"body too large", "GET", "/r/web", bytes.NewReader(make([]byte, api.MaxSyncPayload+1)), 413},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := rt.public(t, tt.method, tt.path, tt.body)
			if resp.StatusCode != tt.status {
				t.Fatalf("→ %d %s; want %d", resp.StatusCode, body, tt.status)
			}
		})
	}
	if resp, _ := rt.public(t, "POST", "/r/web", nil); resp.Header.Get("Allow") != "GET" {
		t.Errorf("Allow %q", resp.Header.Get("Allow"))
	}
	if n := len(rt.agent.got()); n != 0 {
		t.Errorf("refused requests reached the agent %d times", n)
	}
	// HEAD follows GET; the route needs no token even though /v1 does.
	if resp, _ := rt.public(t, "HEAD", "/r/web/x", nil); resp.StatusCode != 200 {
		t.Errorf("HEAD → %d", resp.StatusCode)
	}
	// A catch-all route takes what no longer route takes; the longest wins.
	rt.deploy(t, "all", 128)
	decode[Route](t, rt.doJSON(t, "PUT", "/v1/functions/all/route", RouteSpec{Path: "/"}), http.StatusOK)
	rt.public(t, "GET", "/r/webby", nil)
	rt.public(t, "GET", "/r/web/deeper", nil)
	got := rt.agent.got()
	if len(got) != 3 || !strings.Contains(got[1].Path, "/all/") || !strings.Contains(got[2].Path, "/web/") {
		t.Errorf("routing: %+v", got)
	}
	// A route of a deleted function answers 404.
	rt.do(t, "DELETE", "/v1/functions/web", nil)
	if resp, _ := rt.public(t, "GET", "/r/web", nil); resp.StatusCode != 200 || len(rt.agent.got()) != 4 {
		// /r/web now falls to the catch-all route.
		t.Errorf("after delete: %d", resp.StatusCode)
	}
}

func TestMatchRoute(t *testing.T) {
	routes := []Route{{Path: "/a"}, {Path: "/a/b"}, {Path: "/c"}}
	for _, tt := range []struct{ path, want string }{
		{"/a", "/a"}, {"/a/", "/a"}, {"/a/x", "/a"}, {"/a/b", "/a/b"}, {"/a/b/c", "/a/b"}, {"/ab", ""}, {"/", ""}, {"/c", "/c"},
	} {
		got, ok := matchRoute(routes, tt.path)
		if (tt.want == "") == ok || ok && got.Path != tt.want {
			t.Errorf("%s → %v %v; want %q", tt.path, got, ok, tt.want)
		}
	}
}
