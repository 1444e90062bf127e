package testenv_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/scheduler"
	"github.com/amberfn/amber/testenv"
)

// Security checks against the real cluster over loopback: credentials on
// the scheduler's and the agents' APIs, names that try to escape into
// paths, oversize bodies, and functions that try to reach each other. The
// unit tests in scheduler/security_test.go and agent/security_test.go go
// through every route; these take a representative subset end to end.

type secResp struct {
	status int
	header http.Header
	body   []byte
}

func secDo(t *testing.T, method, url, auth string, body []byte, sign *scheduler.AccessKey) secResp {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if sign != nil {
		req.Header.Set("X-Amz-Invocation-Type", "DryRun")
		sum := sha256.Sum256(body)
		err := v4.NewSigner().SignHTTP(t.Context(), aws.Credentials{AccessKeyID: sign.AccessKeyID, SecretAccessKey: sign.SecretAccessKey},
			req, hex.EncodeToString(sum[:]), "lambda", "us-east-1", time.Now())
		if err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return secResp{resp.StatusCode, resp.Header, b}
}

// secEscape percent-encodes everything but letters, digits, - and _.
func secEscape(s string) string {
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

func TestSecurityCredentials(t *testing.T) {
	f := cluster(t)
	c := f.cluster
	fn := deploy(t, c.Client(), "sec-creds", f.images["shell"])
	tok := c.Token
	wrong := []struct{ name, header string }{
		{"none", ""},
		{"wrong token", "Bearer wrong"},
		{"token cut short", "Bearer " + tok[:len(tok)-1]},
		{"token and one more", "Bearer " + tok + "0"},
		{"token without Bearer", tok},
	}

	t.Run("scheduler", func(t *testing.T) {
		for _, rt := range []struct{ method, path string }{
			{"GET", "/v1/functions"},
			{"PUT", "/v1/functions/sec-creds"},
			{"DELETE", "/v1/functions/sec-creds"},
			{"POST", "/v1/functions/sec-creds/invoke"},
			{"GET", "/v1/functions/sec-creds/logs"},
			{"PUT", "/v1/functions/sec-creds/pool"},
			{"POST", "/v1/images"},
			{"GET", "/v1/images/" + fn.Image},
			{"POST", "/v1/agents/heartbeat"},
			{"GET", "/v1/state"},
			{"GET", "/metrics"},
			{"GET", "/v1/nothing-here"},
		} {
			for _, w := range wrong {
				if r := secDo(t, rt.method, c.SchedulerURL+rt.path, w.header, nil, nil); r.status != http.StatusUnauthorized {
					t.Errorf("%s %s with %s: %d %s, want 401", rt.method, rt.path, w.name, r.status, r.body)
				}
			}
			if rt.method == "GET" {
				if r := secDo(t, rt.method, c.SchedulerURL+rt.path, "Bearer "+tok, nil, nil); r.status == http.StatusUnauthorized {
					t.Errorf("%s %s with the API token: 401 %s", rt.method, rt.path, r.body)
				}
			}
		}
		if r := secDo(t, "GET", c.SchedulerURL+"/healthz", "", nil, nil); r.status != 200 {
			t.Errorf("/healthz without a token: %d", r.status)
		}
	})

	t.Run("lambda", func(t *testing.T) {
		key := c.Scheduler.AccessKey()
		u := c.SchedulerURL + "/2015-03-31/functions/sec-creds/invocations"
		for _, tc := range []struct {
			name string
			auth string
			key  *scheduler.AccessKey
			code string
		}{
			{"unsigned", "", nil, "MissingAuthenticationTokenException"},
			{"API token", "Bearer " + tok, nil, "IncompleteSignatureException"},
			{"wrong access key", "", &scheduler.AccessKey{AccessKeyID: "AKIAWRONG", SecretAccessKey: key.SecretAccessKey}, "UnrecognizedClientException"},
			{"wrong secret", "", &scheduler.AccessKey{AccessKeyID: key.AccessKeyID, SecretAccessKey: "guess"}, "InvalidSignatureException"},
		} {
			r := secDo(t, "POST", u, tc.auth, []byte(`{}`), tc.key)
			if r.status != http.StatusForbidden || r.header.Get("X-Amzn-ErrorType") != tc.code {
				t.Errorf("%s: %d %s %s, want 403 %s", tc.name, r.status, r.header.Get("X-Amzn-ErrorType"), r.body, tc.code)
			}
		}
		if r := secDo(t, "POST", u, "", []byte(`{}`), &key); r.status != http.StatusNoContent {
			t.Errorf("signed DryRun: %d %s", r.status, r.body)
		}
	})

	t.Run("agents", func(t *testing.T) {
		agents, err := readyAgents(t, c)
		if err != nil || len(agents) == 0 {
			t.Fatalf("agents: %v %v", agents, err)
		}
		for _, a := range agents {
			for _, rt := range []struct{ method, path string }{
				{"POST", "/v1/functions/sec-creds/invoke"},
				{"GET", "/v1/functions/sec-creds/logs"},
				{"GET", "/v1/instances"},
				{"GET", "/v1/images"},
				{"POST", "/v1/images/pull"},
				{"GET", "/metrics"},
			} {
				for _, w := range wrong {
					if r := secDo(t, rt.method, a.URL+rt.path, w.header, []byte(`{}`), nil); r.status != http.StatusUnauthorized {
						t.Errorf("%s %s %s with %s: %d %s, want 401", a.Name, rt.method, rt.path, w.name, r.status, r.body)
					}
				}
				if rt.method == "GET" {
					if r := secDo(t, rt.method, a.URL+rt.path, "Bearer "+tok, nil, nil); r.status != http.StatusOK {
						t.Errorf("%s %s %s with the token: %d %s", a.Name, rt.method, rt.path, r.status, r.body)
					}
				}
			}
			if r := secDo(t, "GET", a.URL+"/healthz", "", nil, nil); r.status != 200 {
				t.Errorf("%s /healthz without a token: %d", a.Name, r.status)
			}
		}
	})
}

func TestSecurityNamesAndBodies(t *testing.T) {
	f := cluster(t)
	c := f.cluster
	fn := deploy(t, c.Client(), "sec-names", f.images["shell"])
	auth := "Bearer " + c.Token
	cwd, _ := os.Getwd()
	// The cluster's containerd and the agents' state change on their own.
	skip := []string{filepath.Join(c.Dir, "containerd"), filepath.Join(c.Dir, "agents")}
	walk := func(root string) map[string]bool {
		out := map[string]bool{}
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			for _, s := range skip {
				if p == s {
					return filepath.SkipDir
				}
			}
			out[p] = true
			return nil
		})
		return out
	}
	beforeFix, beforeCwd := walk(f.dir), walk(cwd)

	spec, _ := json.Marshal(api.FunctionSpec{Image: fn.Image})
	names := []string{"../x", "..", "a/b", "%2e%2e", "x\x00y", "Upper", strings.Repeat("a", 64), "h\u0435llo", "\uff58"}
	for _, name := range names {
		seg := secEscape(name)
		for _, rt := range []struct{ method, path, body, field string }{
			{"PUT", "/v1/functions/" + seg, string(spec), "name"},
			{"POST", "/v1/functions/" + seg + "/invoke", `{}`, "name"},
			{"PUT", "/v1/functions/" + seg + "/pool", `{"min_warm":1}`, "name"},
			{"PUT", "/v1/functions/" + seg + "/schedule", `{"expression":"rate(1 hour)"}`, "name"},
			{"GET", "/v1/functions/" + seg + "/logs", ``, "name"},
			{"PUT", "/v1/functions/" + seg + "/route", `{"path":"/sec"}`, "name"},
			{"GET", "/v1/functions/" + seg + "/dead-letters", ``, "name"},
			{"GET", "/v1/dead-letters?function=" + seg, ``, "function"},
		} {
			r := secDo(t, rt.method, c.SchedulerURL+rt.path, auth, []byte(rt.body), nil)
			var eb api.ErrorBody
			if r.status != 400 || json.Unmarshal(r.body, &eb) != nil || eb.Error.Field != rt.field || !strings.Contains(eb.Error.Message, "[a-z0-9-]{1,63}") {
				t.Errorf("%s %s: %d %s, want 400 naming %s", rt.method, rt.path, r.status, r.body, rt.field)
			}
		}
		key := c.Scheduler.AccessKey()
		r := secDo(t, "POST", c.SchedulerURL+"/2015-03-31/functions/"+seg+"/invocations", "", []byte(`{}`), &key)
		if r.status != 400 || !strings.Contains(string(r.body), "FunctionName") {
			t.Errorf("Lambda invoke of %q: %d %s, want 400 naming FunctionName", name, r.status, r.body)
		}
		agents, _ := readyAgents(t, c)
		for _, a := range agents {
			r := secDo(t, "GET", a.URL+"/v1/functions/"+seg+"/logs", auth, nil, nil)
			if r.status != 400 || !strings.Contains(string(r.body), "function") {
				t.Errorf("%s logs of %q: %d %s, want 400", a.Name, name, r.status, r.body)
			}
		}
	}

	over := func(n int) []byte {
		return append(append([]byte(`{"pad":"`), bytes.Repeat([]byte("a"), n)...), `"}`...)
	}
	for _, tc := range []struct {
		method, path string
		body         []byte
		says         string
	}{
		{"PUT", "/v1/functions/sec-names", over(1 << 20), "over 1048576 bytes"},
		{"POST", "/v1/functions/sec-names/invoke", over(api.MaxSyncPayload), "over 6291456 bytes"},
		{"PUT", "/v1/functions/sec-names/pool", over(64 << 10), "over 65536 bytes"},
		{"PUT", "/v1/functions/sec-names/route", over(16 << 10), "over 16384 bytes"},
	} {
		r := secDo(t, tc.method, c.SchedulerURL+tc.path, auth, tc.body, nil)
		if r.status != http.StatusRequestEntityTooLarge || !strings.Contains(string(r.body), tc.says) {
			t.Errorf("%s %s with %d bytes: %d %.200s, want 413 saying %q", tc.method, tc.path, len(tc.body), r.status, r.body, tc.says)
		}
	}
	key := c.Scheduler.AccessKey()
	if r := secDo(t, "POST", c.SchedulerURL+"/2015-03-31/functions/sec-names/invocations", "", over(api.MaxSyncPayload), &key); r.status != 413 {
		t.Errorf("Lambda invoke over 6 MB: %d %.200s", r.status, r.body)
	}
	if v, err := c.Client().FunctionVersions(t.Context(), "sec-names"); err == nil && len(v) != 1 {
		t.Errorf("%d versions of sec-names after the refusals", len(v))
	}

	afterFix, afterCwd := walk(f.dir), walk(cwd)
	for p := range afterCwd {
		if !beforeCwd[p] {
			t.Errorf("new in the package folder: %s", p)
		}
	}
	for p := range afterFix {
		if !beforeFix[p] && !strings.HasPrefix(p, filepath.Join(c.Dir, "scheduler")+string(filepath.Separator)) {
			t.Errorf("new outside the scheduler's data folder: %s", p)
		}
		if b := filepath.Base(p); b == "x" || b == "passwd" {
			t.Errorf("a file named %q: %s", b, p)
		}
	}
}

// A function cannot reach another: each instance has a network namespace
// of its own with only loopback in it. The listener function starts a
// busybox httpd on its loopback and checks it answers; the prober, invoked
// while the httpd runs, finds nothing listening on that port of its own
// loopback (connection refused, not a timeout), and the listener, invoked
// again, finds its httpd still answering. The two report different network
// namespaces, neither the host's.
func TestSecurityFunctionCannotReachAnother(t *testing.T) {
	f := cluster(t)
	const listener = `handler() {
	bb=/var/task/busybox
	echo "netns=$($bb readlink /proc/self/ns/net)"
	if [ -f /tmp/www/id ]; then echo started=running; else
		$bb mkdir -p /tmp/www
		echo "listener-$$" >/tmp/www/id
		$bb httpd -p 127.0.0.1:7777 -h /tmp/www
		echo started=new
	fi
	i=0
	while [ $i -lt 20 ]; do
		if got=$($bb timeout 3 $bb wget -q -O - http://127.0.0.1:7777/id 2>/dev/null); then break; fi
		$bb sleep 0.1
		i=$((i+1))
	done
	echo "self=$got"
	echo "expect=$($bb cat /tmp/www/id)"
}
`
	const prober = `handler() {
	bb=/var/task/busybox
	echo "netns=$($bb readlink /proc/self/ns/net)"
	out=$($bb timeout 5 $bb wget -q -O - http://127.0.0.1:7777/id 2>&1)
	echo "probe_rc=$?"
	echo "probe=$(echo "$out" | $bb tr '\n' ' ')"
	if $bb timeout 3 $bb nc 127.0.0.1 7777 </dev/null >/dev/null 2>&1; then echo nc=connected; else echo nc=failed; fi
}
`
	isoDeploy(t, f, "sec-listener", listener, func(s *api.FunctionSpec) { s.Timeout = api.Duration(20 * time.Second) })
	isoDeploy(t, f, "sec-prober", prober, func(s *api.FunctionSpec) { s.Timeout = api.Duration(20 * time.Second) })

	first := isoInvoke(t, f, "sec-listener", 40*time.Second)
	lkv := keyValues(first.Payload)
	if first.FunctionError != "" || lkv["started"] != "new" || lkv["self"] == "" || lkv["self"] != lkv["expect"] {
		t.Fatalf("the listener's own httpd does not answer it: %s", first.Payload)
	}
	probe := isoInvoke(t, f, "sec-prober", 40*time.Second)
	pkv := keyValues(probe.Payload)
	if probe.FunctionError != "" {
		t.Fatalf("prober: %s", probe.Payload)
	}
	if strings.Contains(pkv["probe"], "listener-") || pkv["probe_rc"] == "0" || pkv["nc"] != "failed" {
		t.Errorf("the prober reached the listener's port: %s", probe.Payload)
	}
	if !strings.Contains(strings.ToLower(pkv["probe"]), "refused") {
		t.Errorf("the probe failed with %q, want connection refused (nothing listening in its own namespace)", pkv["probe"])
	}
	again := isoInvoke(t, f, "sec-listener", 40*time.Second)
	akv := keyValues(again.Payload)
	if again.Instance != first.Instance || akv["started"] != "running" || akv["self"] != lkv["expect"] {
		t.Errorf("the listener's httpd did not run through the probe (instance %s then %s): %s", first.Instance, again.Instance, again.Payload)
	}

	host, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if lkv["netns"] == "" || pkv["netns"] == "" || lkv["netns"] == pkv["netns"] || lkv["netns"] == host || pkv["netns"] == host {
		t.Errorf("network namespaces: listener %q, prober %q, host %q; want three different ones", lkv["netns"], pkv["netns"], host)
	}
}

// readyAgents lists the shared cluster's ready agents (other tests leave
// agents of their own behind, stopped: those are not probed).
func readyAgents(t *testing.T, c *testenv.Cluster) ([]api.AgentStatus, error) {
	all, err := c.Client().Agents(t.Context())
	var out []api.AgentStatus
	for _, a := range all {
		if a.State == api.AgentReady {
			out = append(out, a)
		}
	}
	return out, err
}
