package agent

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
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

// agentRoutes is every pattern Agent.Handler registers, and whether it is
// public. TestAgentRouteTableIsComplete fails when the code and this table
// part ways.
var agentRoutes = []struct {
	pattern string
	public  bool
}{
	{"GET /healthz", true},
	{"POST /v1/functions/{name}/invoke", false},
	{"GET /v1/functions/{name}/logs", false},
	{"POST /v1/images/pull", false},
	{"GET /v1/images", false},
	{"GET /metrics", false},
	{"GET /v1/instances", false},
}

func agentRoutePath(pattern, name string) (method, path string) {
	method, path, _ = strings.Cut(pattern, " ")
	return method, strings.ReplaceAll(path, "{name}", name)
}

// TestAgentRouteTableIsComplete reads the patterns out of the package's
// source (mux.Handle and mux.HandleFunc calls) and checks them against the
// table, and that the mux serves each sample path with its pattern.
func TestAgentRouteTableIsComplete(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var got []string
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) != 2 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc") {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok {
				t.Fatalf("%s: route pattern is not a string literal: extend this test", fset.Position(call.Pos()))
			}
			p, _ := strconv.Unquote(lit.Value)
			got = append(got, p)
			return true
		})
	}
	var want []string
	for _, rt := range agentRoutes {
		want = append(want, rt.pattern)
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("the agent registers\n  %s\nthe security table lists\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	e := newTestEnv(t, nil, WithToken("tok"))
	mux, ok := e.a.Handler().(*http.ServeMux)
	if !ok {
		t.Fatalf("Handler is a %T", e.a.Handler())
	}
	for _, rt := range agentRoutes {
		method, path := agentRoutePath(rt.pattern, "web")
		if _, p := mux.Handler(httptest.NewRequest(method, path, nil)); p != rt.pattern {
			t.Errorf("%s %s is served by %q, want %q", method, path, p, rt.pattern)
		}
	}
}

// TestAgentAuthEveryRoute: every route but /healthz refuses a missing,
// wrong, shortened, lengthened or scheme-less token with 401, and takes
// the right one.
func TestAgentAuthEveryRoute(t *testing.T) {
	t.Parallel()
	const tok = "0123456789abcdef0123456789abcdef"
	e := newTestEnv(t, []*api.Function{testFn("web", 1, 10*time.Second, nil)}, WithToken(tok))
	srv := httptest.NewServer(e.a.Handler())
	t.Cleanup(srv.Close)
	creds := []struct {
		name, header string
		ok           bool
	}{
		{"none", "", false},
		{"wrong token", "Bearer wrong", false},
		{"wrong token of the right length", "Bearer " + strings.Repeat("x", len(tok)), false},
		{"token cut short", "Bearer " + tok[:len(tok)-1], false},
		{"token and one more", "Bearer " + tok + "0", false},
		{"token without Bearer", tok, false},
		{"token as Basic", "Basic " + base64.StdEncoding.EncodeToString([]byte("amber:"+tok)), false},
		{"token", "Bearer " + tok, true},
	}
	for _, rt := range agentRoutes {
		// A bad function name: what passes authentication is refused
		// cheaply, and nothing starts.
		method, path := agentRoutePath(rt.pattern, "Not_A_Name")
		t.Run(rt.pattern, func(t *testing.T) {
			for _, c := range creds {
				req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(`{}`))
				if err != nil {
					t.Fatal(err)
				}
				if c.header != "" {
					req.Header.Set("Authorization", c.header)
				}
				resp, err := srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				refused := resp.StatusCode == http.StatusUnauthorized
				if refused == (rt.public || c.ok) {
					t.Errorf("%s: %d %s", c.name, resp.StatusCode, b)
					continue
				}
				var eb api.ErrorBody
				if refused && (json.Unmarshal(b, &eb) != nil || eb.Error.Code != "Unauthorized") {
					t.Errorf("%s: 401 without an ErrorBody: %s", c.name, b)
				}
			}
		})
	}
	if n := e.l.launches(); n != 0 {
		t.Errorf("%d instances launched", n)
	}
}

// TestAgentRefusesBadNamesAndBigBodies: the routes that take a function
// name refuse bad ones with 400 naming the field, and nothing lands on
// disk; the routes that take a body refuse one over their limit.
func TestAgentRefusesBadNamesAndBigBodies(t *testing.T) {
	t.Parallel()
	const tok = "tok"
	cwd, _ := os.Getwd()
	before := listTree(t, cwd)
	e := newTestEnv(t, []*api.Function{testFn("web", 1, 10*time.Second, nil)}, WithToken(tok))
	srv := httptest.NewServer(e.a.Handler())
	t.Cleanup(srv.Close)
	do := func(method, path string, body []byte, hdr ...string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	names := []string{"../x", "..", ".", "a/b", "/etc/passwd", "%2e%2e", "x\x00y", "Web", strings.Repeat("a", 64), "w\u0435b", "\uff57\uff45\uff42", "a_b", "a.b"}
	for _, pattern := range []string{"POST /v1/functions/{name}/invoke", "GET /v1/functions/{name}/logs"} {
		for _, name := range names {
			method, path := agentRoutePath(pattern, escapeAll(name))
			status, b := do(method, path, []byte(`{}`), api.HeaderVersion, "1")
			var eb api.ErrorBody
			if status != 400 || json.Unmarshal(b, &eb) != nil || eb.Error.Field != "function" || !strings.Contains(eb.Error.Message, "[a-z0-9-]{1,63}") {
				t.Errorf("%s with %q: %d %s; want 400 naming function", pattern, name, status, b)
			}
		}
	}
	for _, tc := range []struct {
		method, path string
		limit        int
		status       []int
		says         string
	}{
		{"POST", "/v1/functions/web/invoke", api.MaxSyncPayload, []int{413}, "over 6291456 bytes"},
		// The pull body is capped at 64 KB; the refusal is a 400 that says so.
		{"POST", "/v1/images/pull", 64 << 10, []int{400, 413}, "too large"},
	} {
		body := []byte(`{"image":"` + strings.Repeat("a", tc.limit) + `"}`)
		status, b := do(tc.method, tc.path, body, api.HeaderVersion, "1")
		if !containsInt(tc.status, status) || !strings.Contains(string(b), tc.says) {
			t.Errorf("%s %s with %d bytes: %d %.200s; want %v saying %q", tc.method, tc.path, len(body), status, b, tc.status, tc.says)
		}
	}
	if n := e.l.launches(); n != 0 {
		t.Errorf("%d instances launched", n)
	}
	for p := range listTree(t, cwd) {
		if !before[p] {
			t.Errorf("new in the package folder: %s", p)
		}
	}
}

func containsInt(list []int, n int) bool {
	for _, v := range list {
		if v == n {
			return true
		}
	}
	return false
}

// escapeAll percent-encodes everything but letters, digits, - and _, so a
// name arrives as one path segment, dots and slashes included.
func escapeAll(s string) string {
	var b strings.Builder
	const hexdig = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexdig[c>>4])
		b.WriteByte(hexdig[c&15])
	}
	return b.String()
}

func listTree(t *testing.T, root string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			out[p] = true
		}
		return nil
	})
	return out
}
