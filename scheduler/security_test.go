package scheduler

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// The security suite: every route the scheduler serves, who may call it,
// which names it takes and how much body it reads.

// routeAuth is what a route takes as credentials.
type routeAuth int

const (
	authPublic routeAuth = iota // nothing: /healthz, /r/…
	authAPI                     // the API token
	authAgent                   // the API token or the join token
	authSigV4                   // AWS SigV4 with the scheduler's access key
)

func (a routeAuth) String() string {
	return [...]string{"public", "API token", "API or join token", "SigV4"}[a]
}

// schedulerRoute is one pattern registered in Scheduler.Handler.
type schedulerRoute struct {
	pattern string
	auth    routeAuth
}

// schedulerRoutes is every pattern Scheduler.Handler registers.
// TestSchedulerRouteTableIsComplete fails when the code and this table
// part ways: a new route has to be added here, and so gets the checks
// below.
var schedulerRoutes = []schedulerRoute{
	{"GET /healthz", authPublic},
	{"POST /v1/images", authAPI},
	{"GET /v1/images/{digest}", authAgent},
	{"POST /v1/images/resolve", authAPI},
	{"PUT /v1/functions/{name}", authAPI},
	{"GET /v1/functions", authAPI},
	{"GET /v1/functions/{name}", authAPI},
	{"DELETE /v1/functions/{name}", authAPI},
	{"GET /v1/functions/{name}/versions", authAPI},
	{"GET /v1/functions/{name}/versions/{version}", authAgent},
	{"POST /v1/functions/{name}/invoke", authAPI},
	{"GET /v1/functions/{name}/async", authAPI},
	{"PUT /v1/functions/{name}/async", authAPI},
	{"GET /v1/functions/{name}/dead-letters", authAPI},
	{"GET /v1/dead-letters", authAPI},
	{"GET /v1/functions/{name}/schedule", authAPI},
	{"PUT /v1/functions/{name}/schedule", authAPI},
	{"DELETE /v1/functions/{name}/schedule", authAPI},
	{"GET /v1/schedules", authAPI},
	{"GET /v1/bill", authAPI},
	{"GET /v1/ledger", authAPI},
	{"GET /v1/history", authAPI},
	{"GET /v1/functions/{name}/logs", authAPI},
	{"GET /v1/functions/{name}/pool", authAPI},
	{"PUT /v1/functions/{name}/pool", authAPI},
	{"POST /v1/agents/heartbeat", authAgent},
	{"GET /v1/agents", authAPI},
	{"POST /v1/agents/{name}/drain", authAPI},
	{"DELETE /v1/agents/{name}/drain", authAPI},
	{"GET /v1/state", authAPI},
	{"GET /v1/events", authAPI},
	{"GET /v1/stream", authAPI},
	{"GET /v1/cluster", authAPI},
	{"PUT /v1/functions/{name}/route", authAPI},
	{"GET /v1/functions/{name}/route", authAPI},
	{"DELETE /v1/functions/{name}/route", authAPI},
	{"GET /v1/routes", authAPI},
	{"GET /metrics", authAPI},
	{"POST /2015-03-31/functions/{name}/invocations", authSigV4},
	{"/r/", authPublic},
	{"/v1/", authAPI},
}

// method and a concrete path of a pattern, for one function name.
func (rt schedulerRoute) request(name, digest string) (method, path string) {
	method, path, ok := strings.Cut(rt.pattern, " ")
	if !ok {
		method, path = "GET", rt.pattern
	}
	path = strings.NewReplacer("{name}", name, "{digest}", digest, "{version}", "1").Replace(path)
	switch path {
	case "/r/":
		path = "/r/nowhere"
	case "/v1/":
		path = "/v1/no-such-endpoint"
	}
	return method, path
}

// registeredPatterns reads the route patterns out of the package's source:
// calls of v1(…), forAgents(…) and mux.Handle/HandleFunc(…) whose first
// argument is a string constant expression. consts resolves identifiers.
func registeredPatterns(t *testing.T, files []string, consts map[string]string, callees map[string]bool) []string {
	t.Helper()
	fset := token.NewFileSet()
	var out []string
	for _, file := range files {
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) != 2 {
				return true
			}
			var name string
			switch fn := call.Fun.(type) {
			case *ast.Ident:
				name = fn.Name
			case *ast.SelectorExpr:
				if x, ok := fn.X.(*ast.Ident); ok {
					name = x.Name + "." + fn.Sel.Name
				}
			}
			if !callees[name] {
				return true
			}
			if id, ok := call.Args[0].(*ast.Ident); ok && id.Name == "pattern" {
				return true // the v1 and forAgents helpers themselves
			}
			var eval func(e ast.Expr) string
			eval = func(e ast.Expr) string {
				switch e := e.(type) {
				case *ast.BasicLit:
					s, err := strconv.Unquote(e.Value)
					if err != nil {
						t.Fatalf("%s: %v", fset.Position(e.Pos()), err)
					}
					return s
				case *ast.Ident:
					v, ok := consts[e.Name]
					if !ok {
						t.Fatalf("%s: route pattern uses %s: add it to the test's constants", fset.Position(e.Pos()), e.Name)
					}
					return v
				case *ast.BinaryExpr:
					if e.Op == token.ADD {
						return eval(e.X) + eval(e.Y)
					}
				}
				t.Fatalf("%s: route pattern is not a constant string expression", fset.Position(e.Pos()))
				return ""
			}
			out = append(out, eval(call.Args[0]))
			return true
		})
	}
	sort.Strings(out)
	return out
}

func packageSources(t *testing.T) []string {
	t.Helper()
	all, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, f := range all {
		if !strings.HasSuffix(f, "_test.go") {
			files = append(files, f)
		}
	}
	return files
}

// TestSchedulerRouteTableIsComplete: the table above is exactly what the
// code registers, and each entry is what the mux picks for its sample path.
func TestSchedulerRouteTableIsComplete(t *testing.T) {
	got := registeredPatterns(t, packageSources(t),
		map[string]string{"lambdaInvokePath": lambdaInvokePath, "RoutePrefix": RoutePrefix},
		map[string]bool{"v1": true, "forAgents": true, "mux.Handle": true, "mux.HandleFunc": true})
	var want []string
	for _, rt := range schedulerRoutes {
		want = append(want, rt.pattern)
	}
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("the scheduler registers\n  %s\nthe security table lists\n  %s\nadd new routes to schedulerRoutes (with their credentials)",
			strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	ts := newTestScheduler(t, WithToken("api"))
	mux, ok := ts.Handler().(*http.ServeMux)
	if !ok {
		t.Fatalf("Handler is a %T, not a *http.ServeMux", ts.Handler())
	}
	for _, rt := range schedulerRoutes {
		method, path := rt.request("hello", "sha256:"+strings.Repeat("0", 64))
		r := httptest.NewRequest(method, path, nil)
		if _, p := mux.Handler(r); p != rt.pattern {
			t.Errorf("%s %s is served by %q, want %q", method, path, p, rt.pattern)
		}
	}
}

// send makes one request to the test server with an Authorization header
// ("" for none); the response's body is read and closed.
// sendSigned sends body signed with SigV4 by the AWS SDK's signer with the
// scheduler's access key, and the headers hdr (name, value pairs).
func sendSigned(t *testing.T, ts *testScheduler, method, path string, body []byte, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	r, err := http.NewRequest(method, ts.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	sdkSign(t, r, body, ts.AccessKey(), "us-east-1", "lambda", ts.clock.Now())
	resp, err := ts.srv.Client().Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func send(t *testing.T, ts *testScheduler, method, path, auth string, body io.Reader, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, ts.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := ts.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var b []byte
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ = io.ReadAll(resp.Body)
	}
	return resp, b
}

// TestSchedulerAuthEveryRoute sends every route no credentials, a wrong
// token, the token cut short and made longer, the token without "Bearer",
// Basic auth, the join token and the API token, and checks each answer
// against the route's policy.
func TestSchedulerAuthEveryRoute(t *testing.T) {
	const apiTok, joinTok = "0123456789abcdef0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210fedcba9876543210"
	ts := newTestScheduler(t, WithToken(apiTok), WithJoinToken(joinTok))
	fn := ts.deploy(t, "hello", 128)
	creds := []struct {
		name, header string
		api, agent   bool // accepted where the API token / the join token is
	}{
		{"none", "", false, false},
		{"wrong token", "Bearer wrong", false, false},
		{"wrong token of the right length", "Bearer " + strings.Repeat("x", len(apiTok)), false, false},
		{"API token cut short", "Bearer " + apiTok[:len(apiTok)-1], false, false},
		{"API token and one more", "Bearer " + apiTok + "0", false, false},
		{"API token as a prefix of another", "Bearer " + apiTok + " " + apiTok, false, false},
		{"API token without Bearer", apiTok, false, false},
		{"API token lower-case scheme", "bearer " + apiTok, false, false},
		{"API token as Basic", "Basic " + base64.StdEncoding.EncodeToString([]byte("amber:"+apiTok)), false, false},
		{"join token cut short", "Bearer " + joinTok[:len(joinTok)-1], false, false},
		{"join token", "Bearer " + joinTok, false, true},
		{"API token", "Bearer " + apiTok, true, true},
	}
	for _, rt := range schedulerRoutes {
		method, path := rt.request("hello", fn.Image)
		t.Run(rt.pattern, func(t *testing.T) {
			for _, c := range creds {
				resp, body := send(t, ts, method, path, c.header, nil)
				var want bool // whether the credentials get past authentication
				switch rt.auth {
				case authPublic:
					want = true
				case authAPI:
					want = c.api
				case authAgent:
					want = c.agent
				case authSigV4:
					want = false // no bearer token is a signature
				}
				refused := resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden
				if want == refused {
					t.Errorf("%s with %s: %d %s; want accepted=%v", rt.auth, c.name, resp.StatusCode, body, want)
					continue
				}
				if !refused {
					continue
				}
				if rt.auth == authSigV4 {
					if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Amzn-ErrorType") == "" {
						t.Errorf("%s: %d %v, want 403 with X-Amzn-ErrorType", c.name, resp.StatusCode, resp.Header)
					}
					continue
				}
				var eb api.ErrorBody
				if resp.StatusCode != http.StatusUnauthorized || json.Unmarshal(body, &eb) != nil || eb.Error.Code != "Unauthorized" ||
					resp.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("%s: %d %v %s, want 401 Unauthorized with WWW-Authenticate", c.name, resp.StatusCode, resp.Header, body)
				}
			}
		})
	}

	// What the public endpoints say without credentials.
	if resp, body := send(t, ts, "GET", "/healthz", "", nil); resp.StatusCode != 200 || string(body) != "ok\n" {
		t.Errorf("/healthz: %d %q", resp.StatusCode, body)
	}
	if resp, body := send(t, ts, "GET", "/r/nowhere", "", nil); resp.StatusCode != 404 || !strings.Contains(string(body), "Not Found") {
		t.Errorf("/r/nowhere: %d %q", resp.StatusCode, body)
	}
	// /metrics takes the API token only.
	if resp, body := send(t, ts, "GET", "/metrics", "Bearer "+apiTok, nil); resp.StatusCode != 200 || !strings.Contains(string(body), "# TYPE") {
		t.Errorf("/metrics with the API token: %d %q", resp.StatusCode, body)
	}
}

// TestSchedulerLambdaAuth: the Lambda path refuses an unsigned request, a
// bad signature, a wrong access key and a signature for another service,
// and takes a good one.
func TestSchedulerLambdaAuth(t *testing.T) {
	ts := newTestScheduler(t, WithToken("api"))
	ts.deploy(t, "hello", 128)
	const path = "/2015-03-31/functions/hello/invocations"
	now := ts.clock.Now()
	key := ts.AccessKey()
	for _, tc := range []struct {
		name   string
		sign   func(r *http.Request, body []byte)
		status int
		code   string
	}{
		{"unsigned", func(*http.Request, []byte) {}, 403, errMissingAuth},
		{"bearer API token", func(r *http.Request, _ []byte) { r.Header.Set("Authorization", "Bearer api") }, 403, errIncompleteSignature},
		{"wrong access key", func(r *http.Request, b []byte) {
			sdkSign(t, r, b, AccessKey{AccessKeyID: "AKIAWRONG", SecretAccessKey: key.SecretAccessKey}, "us-east-1", "lambda", now)
		}, 403, errUnrecognizedClient},
		{"wrong secret", func(r *http.Request, b []byte) {
			sdkSign(t, r, b, AccessKey{AccessKeyID: key.AccessKeyID, SecretAccessKey: "guess"}, "us-east-1", "lambda", now)
		}, 403, errInvalidSignature},
		{"bad signature", func(r *http.Request, b []byte) {
			sdkSign(t, r, b, key, "us-east-1", "lambda", now)
			a := r.Header.Get("Authorization")
			last := a[len(a)-1]
			flip := byte('0')
			if last == '0' {
				flip = '1'
			}
			r.Header.Set("Authorization", a[:len(a)-1]+string(flip))
		}, 403, errInvalidSignature},
		{"other service", func(r *http.Request, b []byte) { sdkSign(t, r, b, key, "us-east-1", "s3", now) }, 403, errInvalidSignature},
		{"expired", func(r *http.Request, b []byte) { sdkSign(t, r, b, key, "us-east-1", "lambda", now.Add(-time.Hour)) }, 403, errInvalidSignature},
		{"signed body swapped", func(r *http.Request, _ []byte) { sdkSign(t, r, []byte(`{"other":1}`), key, "us-east-1", "lambda", now) }, 403, errInvalidSignature},
		{"good", func(r *http.Request, b []byte) { sdkSign(t, r, b, key, "us-east-1", "lambda", now) }, 204, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(`{"a":1}`)
			r, err := http.NewRequest("POST", ts.srv.URL+path, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			r.Header.Set("X-Amz-Invocation-Type", "DryRun")
			tc.sign(r, body)
			resp, err := ts.srv.Client().Do(r)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || resp.Header.Get("X-Amzn-ErrorType") != tc.code {
				t.Fatalf("%d %s %s; want %d %s", resp.StatusCode, resp.Header.Get("X-Amzn-ErrorType"), b, tc.status, tc.code)
			}
		})
	}
}

// badNames try to escape into paths, or look like a valid name.
var badNames = []string{
	"../x", "..", ".", "a/b", "/etc/passwd", "..\\x", "%2e%2e", "%2e%2e%2fx", "x\x00y", "x\n", "Hello", "hello ", " hello",
	strings.Repeat("a", 64), "h\u0435llo" /* Cyrillic e */, "\uff48\uff45\uff4c\uff4c\uff4f" /* fullwidth */, "hel\u200blo", "caf\u00e9", "a_b", "a.b",
}

// tree lists the paths under root.
func tree(t *testing.T, root string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		out[p] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSchedulerRefusesBadNames sends every bad name to every endpoint that
// takes one, percent-encoded so that it arrives whole: 400 naming the field
// and the rule, and nothing new on disk, in the data folder or next to it.
func TestSchedulerRefusesBadNames(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "data")
	ts := newTestScheduler(t, WithToken("api"), WithDataDir(data))
	fn := ts.deploy(t, "hello", 128)
	ag := newFakeAgent(t, "a1")
	ts.heartbeat(t, agentHB("a1", ag.srv.URL, 1024))
	spec, _ := json.Marshal(api.FunctionSpec{Image: fn.Image, MemoryMB: 128, Timeout: api.Duration(time.Second)})
	bodies := map[string]string{
		"PUT /v1/functions/{name}":          string(spec),
		"POST /v1/functions/{name}/invoke":  `{}`,
		"PUT /v1/functions/{name}/async":    `{"max_retries":1}`,
		"PUT /v1/functions/{name}/schedule": `{"expression":"rate(5 minutes)"}`,
		"PUT /v1/functions/{name}/pool":     `{"min_warm":1}`,
		"PUT /v1/functions/{name}/route":    `{"path":"/x"}`,
	}
	cwd, _ := os.Getwd()
	beforeCwd, beforeRoot := tree(t, cwd), tree(t, root)

	var named []schedulerRoute
	for _, rt := range schedulerRoutes {
		if strings.Contains(rt.pattern, "{name}") {
			named = append(named, rt)
		}
	}
	for _, rt := range named {
		t.Run(rt.pattern, func(t *testing.T) {
			for _, name := range badNames {
				method, path := rt.request(escapeSegment(name), fn.Image)
				body := []byte(bodies[rt.pattern])
				if rt.auth == authSigV4 {
					resp, b := sendSigned(t, ts, method, path, body, "X-Amz-Invocation-Type", "DryRun")
					if resp.StatusCode != 400 || resp.Header.Get("X-Amzn-ErrorType") != excInvalidParameter ||
						!strings.Contains(string(b), "FunctionName") {
						t.Errorf("%q: %d %s %s; want 400 InvalidParameterValueException naming FunctionName", name, resp.StatusCode, resp.Header.Get("X-Amzn-ErrorType"), b)
					}
					continue
				}
				resp, b := send(t, ts, method, path, "Bearer api", bytes.NewReader(body))
				var eb api.ErrorBody
				if resp.StatusCode != 400 || json.Unmarshal(b, &eb) != nil || eb.Error.Field != "name" ||
					!strings.Contains(eb.Error.Message, "[a-z0-9-]{1,63}") {
					t.Errorf("%q: %d %s; want 400 naming the field and the rule", name, resp.StatusCode, b)
				}
			}
		})
	}
	t.Run("names elsewhere", func(t *testing.T) {
		for _, name := range badNames {
			for _, tc := range []struct {
				method, path, body, field string
			}{
				{"GET", "/v1/dead-letters?function=" + escapeSegment(name), "", "function"},
				{"GET", "/v1/ledger?function=" + escapeSegment(name), "", "function"},
				{"GET", "/v1/history?function=" + escapeSegment(name), "", "function"},
				{"PUT", "/v1/functions/hello", jsonOf(t, api.FunctionSpec{Name: name, Image: fn.Image}), "name"},
				{"POST", "/v1/agents/heartbeat", jsonOf(t, agentHB(name, ag.srv.URL, 1024)), "name"},
			} {
				resp, b := send(t, ts, tc.method, tc.path, "Bearer api", strings.NewReader(tc.body))
				var eb api.ErrorBody
				if resp.StatusCode != 400 || json.Unmarshal(b, &eb) != nil || eb.Error.Field != tc.field {
					t.Errorf("%s %s with %q: %d %s; want 400 naming %s", tc.method, tc.path, name, resp.StatusCode, b, tc.field)
				}
			}
		}
		// An image digest is a file name in the store.
		for _, d := range []string{"..%2F..%2Fetc%2Fpasswd", "sha256:..%2F..%2Fx", "sha256:" + strings.Repeat("0", 63) + "%2F", "%2e%2e"} {
			resp, b := send(t, ts, "GET", "/v1/images/"+d, "Bearer api", nil)
			var eb api.ErrorBody
			if resp.StatusCode != 400 || json.Unmarshal(b, &eb) != nil || eb.Error.Field != "digest" {
				t.Errorf("image %q: %d %s; want 400 naming digest", d, resp.StatusCode, b)
			}
		}
	})
	t.Run("unencoded", func(t *testing.T) {
		// Raw dot segments and slashes never reach a handler as a name:
		// the mux redirects to the cleaned path or finds no route.
		client := *ts.srv.Client()
		client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		for _, p := range []string{"/v1/functions/../x/pool", "/v1/functions/./pool", "/v1/functions/a/b/pool", "/v1/functions/../../../etc/passwd",
			"/2015-03-31/functions/../x/invocations", "/v1/functions/%2e%2e/../x"} {
			for _, method := range []string{"GET", "PUT", "POST", "DELETE"} {
				req, _ := http.NewRequest(method, ts.srv.URL+p, strings.NewReader(`{}`))
				req.Header.Set("Authorization", "Bearer api")
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
					if loc := resp.Header.Get("Location"); strings.Contains(loc, "..") || strings.Contains(loc, "/./") {
						t.Errorf("%s %s redirects to %q", method, p, loc)
					}
				case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusBadRequest:
				default:
					t.Errorf("%s %s: %d, want a redirect to the cleaned path, 400, 404 or 405", method, p, resp.StatusCode)
				}
			}
		}
	})

	afterCwd, afterRoot := tree(t, cwd), tree(t, root)
	for p := range afterCwd {
		if !beforeCwd[p] {
			t.Errorf("new in the package folder: %s", p)
		}
	}
	for p := range afterRoot {
		if !beforeRoot[p] {
			t.Errorf("new after the bad names: %s", p)
		}
	}
	for p := range afterRoot {
		for _, name := range []string{"x", "passwd", "b"} {
			if filepath.Base(p) == name {
				t.Errorf("a file named %q: %s", name, p)
			}
		}
	}
	if fns := decode[[]api.FunctionStatus](t, ts.do(t, "GET", "/v1/functions", nil), 200); len(fns) != 1 || fns[0].Name != "hello" {
		t.Errorf("functions after the bad names: %+v", fns)
	}
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// bodyRoute is an endpoint that reads a body, and the most it takes.
type bodyRoute struct {
	pattern string
	limit   int64
	status  int    // what an oversize body gets
	says    string // in the message
}

// TestSchedulerRefusesOversizeBodies sends one byte over each endpoint's
// limit (each POST and PUT route is listed, so a new one needs a limit):
// 413 with a message that says so, the request refused before anything is
// stored; and an image upload without Content-Length is cut off at the cap.
func TestSchedulerRefusesOversizeBodies(t *testing.T) {
	const maxImage = 16 << 10
	ts := newTestScheduler(t, WithToken("api"), WithJoinToken("join"), WithMaxImageBytes(maxImage))
	fn := ts.deploy(t, "hello", 128)
	decode[Route](t, ts.doJSON(t, "PUT", "/v1/functions/hello/route", RouteSpec{Path: "/big"}), 200)
	ag := newFakeAgent(t, "a1")
	ts.heartbeat(t, agentHB("a1", ag.srv.URL, 1024))

	routes := []bodyRoute{
		{"POST /v1/images", maxImage, 413, "over"},
		{"POST /v1/images/resolve", 64 << 10, 413, "over 65536 bytes"},
		{"PUT /v1/functions/{name}", maxSpecBytes, 413, "over 1048576 bytes"},
		{"POST /v1/functions/{name}/invoke", api.MaxSyncPayload, 413, "over 6291456 bytes"},
		{"PUT /v1/functions/{name}/async", 4 << 10, 413, "over 4096 bytes"},
		{"PUT /v1/functions/{name}/schedule", 4 << 10, 413, "over 4096 bytes"},
		{"PUT /v1/functions/{name}/pool", 64 << 10, 413, "over 65536 bytes"},
		{"POST /v1/agents/heartbeat", 8 << 20, 413, "over 8388608 bytes"},
		{"PUT /v1/functions/{name}/route", 16 << 10, 413, "over 16384 bytes"},
		{"POST /2015-03-31/functions/{name}/invocations", api.MaxSyncPayload, 413, "smaller than 6291456 bytes"},
		{"/r/", api.MaxSyncPayload, 413, "Request Entity Too Large"},
	}
	// Routes that take no body: it is not read.
	bodiless := map[string]bool{"POST /v1/agents/{name}/drain": true}
	listed := map[string]bool{}
	for _, br := range routes {
		listed[br.pattern] = true
	}
	for _, rt := range schedulerRoutes {
		m, _, _ := strings.Cut(rt.pattern, " ")
		if (m == "POST" || m == "PUT") && !listed[rt.pattern] && !bodiless[rt.pattern] {
			t.Errorf("%s takes a body and has no oversize case here", rt.pattern)
		}
	}
	auth := map[routeAuth]string{authAPI: "Bearer api", authAgent: "Bearer join"}
	byPattern := map[string]schedulerRoute{}
	for _, rt := range schedulerRoutes {
		byPattern[rt.pattern] = rt
	}
	for _, br := range routes {
		t.Run(br.pattern, func(t *testing.T) {
			rt := byPattern[br.pattern]
			method, path := rt.request("hello", fn.Image)
			if br.pattern == "/r/" {
				method, path = "POST", "/r/big"
			}
			// Valid JSON up to the limit, and one byte more.
			pad := br.limit - int64(len(`{"pad":""}`)) + 1
			body := []byte(`{"pad":"` + strings.Repeat("a", int(pad)) + `"}`)
			if int64(len(body)) != br.limit+1 {
				t.Fatalf("body of %d bytes", len(body))
			}
			var resp *http.Response
			var b []byte
			if rt.auth == authSigV4 {
				resp, b = sendSigned(t, ts, method, path, body)
			} else {
				resp, b = send(t, ts, method, path, auth[rt.auth], bytes.NewReader(body))
			}
			if resp.StatusCode != br.status || !strings.Contains(string(b), br.says) {
				t.Errorf("%d bytes: %d %.300s; want %d saying %q", len(body), resp.StatusCode, b, br.status, br.says)
			}
		})
	}
	t.Run("image upload without Content-Length", func(t *testing.T) {
		body := io.MultiReader(bytes.NewReader(ociTar(t, "x")), bytes.NewReader(make([]byte, maxImage)))
		resp, b := send(t, ts, "POST", "/v1/images", "Bearer api", body)
		if resp.StatusCode != 413 {
			t.Errorf("%d %s; want 413", resp.StatusCode, b)
		}
	})
	// Nothing was stored by the refused requests.
	if got := ag.got(); len(got) != 0 {
		t.Errorf("the agent got %d invocations", len(got))
	}
	if v := decode[[]api.Function](t, ts.do(t, "GET", "/v1/functions/hello/versions", nil), 200); len(v) != 1 {
		t.Errorf("%d versions of hello", len(v))
	}
}
