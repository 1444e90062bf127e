package scheduler

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/scheduler/internal/placement"
)

func TestHealthzAndAuth(t *testing.T) {
	endpoints := []struct{ method, path string }{
		{"GET", "/v1/functions"},
		{"GET", "/v1/functions/hello"},
		{"PUT", "/v1/functions/hello"},
		{"DELETE", "/v1/functions/hello"},
		{"GET", "/v1/functions/hello/versions/1"},
		{"POST", "/v1/functions/hello/invoke"},
		{"POST", "/v1/images"},
		{"GET", "/v1/images/sha256:" + strings.Repeat("a", 64)},
		{"POST", "/v1/agents/heartbeat"},
		{"GET", "/v1/agents"},
		{"GET", "/v1/state"},
		{"GET", "/v1/nothing-here"},
	}
	tests := []struct {
		name       string
		token      string // the scheduler's
		send       string // the Authorization header sent
		wantAuthed bool
	}{
		{"auth off, no header", "", "", true},
		{"auth off, any header", "", "Bearer whatever", true},
		{"auth on, no header", "s3cret", "", false},
		{"auth on, wrong token", "s3cret", "Bearer nope", false},
		{"auth on, token without Bearer", "s3cret", "s3cret", false},
		{"auth on, token prefix", "s3cret", "Bearer s3cre", false},
		{"auth on, right token", "s3cret", "Bearer s3cret", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestScheduler(t, WithToken(tt.token))
			ts.token = "" // send headers by hand
			for _, ep := range endpoints {
				resp := ts.do(t, ep.method, ep.path, strings.NewReader("{}"), "Authorization", tt.send)
				body, _ := io.ReadAll(resp.Body)
				if got := resp.StatusCode == http.StatusUnauthorized; got == tt.wantAuthed {
					t.Errorf("%s %s: status %d (%s); want authorized=%v", ep.method, ep.path, resp.StatusCode, body, tt.wantAuthed)
				}
				if resp.StatusCode == http.StatusUnauthorized && !strings.Contains(string(body), `"Unauthorized"`) {
					t.Errorf("%s %s: 401 without an ErrorBody: %s", ep.method, ep.path, body)
				}
			}
			resp := ts.do(t, "GET", "/healthz", nil)
			if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || strings.TrimSpace(string(b)) != "ok" {
				t.Errorf("healthz: %d %q", resp.StatusCode, b)
			}
		})
	}
}

func TestDeployValidation(t *testing.T) {
	ts := newTestScheduler(t)
	good := ts.deploy(t, "hello", 256)
	if good.Version != 1 {
		t.Fatalf("first deploy: version %d", good.Version)
	}
	missing := "sha256:" + strings.Repeat("b", 64)
	spec := func(mut func(*api.FunctionSpec)) api.FunctionSpec {
		s := good.FunctionSpec
		s.Env = map[string]string{"A": "1"}
		mut(&s)
		return s
	}
	tests := []struct {
		name      string
		path      string
		body      any // api.FunctionSpec or a raw string
		wantField string
		wantMsg   string
	}{
		{"image not a digest", "hello", spec(func(s *api.FunctionSpec) { s.Image = "sha256:latest" }), "image", "not a sha256 digest"},
		{"image not a reference", "hello", spec(func(s *api.FunctionSpec) { s.Image = "Busybox Latest" }), "image", "nor a registry reference"},
		{"image registry unreachable", "hello", spec(func(s *api.FunctionSpec) { s.Image = "127.0.0.1:1/fn:v1" }), "image", "127.0.0.1:1/fn:v1"},
		{"image not stored", "hello", spec(func(s *api.FunctionSpec) { s.Image = missing }), "image", "not in the image store"},
		{"memory too small", "hello", spec(func(s *api.FunctionSpec) { s.MemoryMB = 64 }), "memory", "64 MB"},
		{"memory too large", "hello", spec(func(s *api.FunctionSpec) { s.MemoryMB = 20000 }), "memory", "20000 MB"},
		{"timeout too short", "hello", spec(func(s *api.FunctionSpec) { s.Timeout = api.Duration(500 * time.Millisecond) }), "timeout", "500ms"},
		{"timeout too long", "hello", spec(func(s *api.FunctionSpec) { s.Timeout = api.Duration(time.Hour) }), "timeout", "1h0m0s"},
		{"env bad key", "hello", spec(func(s *api.FunctionSpec) { s.Env = map[string]string{"1BAD": "x"} }), "env", "1BAD"},
		{"env reserved", "hello", spec(func(s *api.FunctionSpec) { s.Env = map[string]string{"AWS_LAMBDA_X": "x"} }), "env", "reserved"},
		{"name mismatch", "hello", spec(func(s *api.FunctionSpec) { s.Name = "other" }), "name", "does not match"},
		{"bad path name", "Hello_World", spec(func(s *api.FunctionSpec) { s.Name = "" }), "name", "Hello_World"},
		{"malformed JSON", "hello", `{"name": "hello",`, "body", "malformed JSON"},
		{"not JSON", "hello", `memory=128`, "body", "malformed JSON"},
		{"empty body", "hello", ``, "body", "empty"},
		{"two values", "hello", `{} {}`, "body", "more than one"},
		{"memory wrong type", "hello", `{"memory_mb":"lots"}`, "memory_mb", "want a JSON int, got string"},
		{"timeout unparsable", "hello", `{"timeout":"soon"}`, "timeout", "soon"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var resp *http.Response
			if raw, ok := tt.body.(string); ok {
				resp = ts.do(t, "PUT", "/v1/functions/"+tt.path, strings.NewReader(raw))
			} else {
				resp = ts.doJSON(t, "PUT", "/v1/functions/"+tt.path, tt.body)
			}
			e := errorBody(t, resp, http.StatusBadRequest)
			if e.Field != tt.wantField || !strings.Contains(e.Message, tt.wantMsg) {
				t.Errorf("error %+v; want field %q and message containing %q", e, tt.wantField, tt.wantMsg)
			}
			// The earlier version is intact and still the latest.
			st := decode[api.FunctionStatus](t, ts.do(t, "GET", "/v1/functions/hello", nil), http.StatusOK)
			if st.Version != 1 || st.Image != good.Image || st.MemoryMB != 256 {
				t.Errorf("after a failed deploy the latest is %+v; want version 1 intact", st.Function)
			}
		})
	}
	vs := decode[[]api.Function](t, ts.do(t, "GET", "/v1/functions/hello/versions", nil), http.StatusOK)
	if len(vs) != 1 {
		t.Errorf("versions after failed deploys: %d, want 1", len(vs))
	}
}

func TestDeployVersionsAndDefaults(t *testing.T) {
	ts := newTestScheduler(t)
	digest := ts.uploadImage(t, "img1")
	// Zero memory and timeout take the defaults; the name comes from the path.
	v1 := decode[api.Function](t, ts.doJSON(t, "PUT", "/v1/functions/hello", api.FunctionSpec{Image: digest}), http.StatusCreated)
	if v1.Version != 1 || v1.Name != "hello" || v1.MemoryMB != api.DefaultMemory || time.Duration(v1.Timeout) != api.DefaultTimeout {
		t.Fatalf("defaults: %+v", v1)
	}
	if v1.UpdatedAt.IsZero() {
		t.Errorf("UpdatedAt not set")
	}
	// The same spec again is not a new version (200, version 1).
	same := decode[api.Function](t, ts.doJSON(t, "PUT", "/v1/functions/hello", api.FunctionSpec{Name: "hello", Image: digest, MemoryMB: 128, Env: map[string]string{}}), http.StatusOK)
	if same.Version != 1 {
		t.Errorf("identical deploy: version %d, want 1", same.Version)
	}
	// A change is.
	v2 := decode[api.Function](t, ts.doJSON(t, "PUT", "/v1/functions/hello", api.FunctionSpec{Image: digest, MemoryMB: 512}), http.StatusCreated)
	if v2.Version != 2 || v2.MemoryMB != 512 {
		t.Errorf("second deploy: %+v", v2)
	}
	old := decode[api.Function](t, ts.do(t, "GET", "/v1/functions/hello/versions/1", nil), http.StatusOK)
	if old.Version != 1 || old.MemoryMB != 128 {
		t.Errorf("version 1 after deploying 2: %+v", old)
	}
	e := errorBody(t, ts.do(t, "GET", "/v1/functions/hello/versions/9", nil), http.StatusNotFound)
	if !strings.Contains(e.Message, `function "hello" version 9 not found`) {
		t.Errorf("missing version: %q", e.Message)
	}
	e = errorBody(t, ts.do(t, "GET", "/v1/functions/hello/versions/x", nil), http.StatusBadRequest)
	if e.Field != "version" {
		t.Errorf("bad version: %+v", e)
	}
	// Delete, then deploy again: numbering continues, old versions are gone.
	if resp := ts.do(t, "DELETE", "/v1/functions/hello", nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	errorBody(t, ts.do(t, "GET", "/v1/functions/hello", nil), http.StatusNotFound)
	errorBody(t, ts.do(t, "DELETE", "/v1/functions/hello", nil), http.StatusNotFound)
	v3 := decode[api.Function](t, ts.doJSON(t, "PUT", "/v1/functions/hello", api.FunctionSpec{Image: digest}), http.StatusCreated)
	if v3.Version != 3 {
		t.Errorf("redeploy after delete: version %d, want 3", v3.Version)
	}
	errorBody(t, ts.do(t, "GET", "/v1/functions/hello/versions/1", nil), http.StatusNotFound)
}

func TestImageStore(t *testing.T) {
	ts := newTestScheduler(t, WithMaxImageBytes(64<<10))
	good := ociTar(t, "x")
	sum := sha256.Sum256(good)
	wantDigest := "sha256:" + hex.EncodeToString(sum[:])

	t.Run("good archive", func(t *testing.T) {
		up := decode[api.ImageUpload](t, ts.do(t, "POST", "/v1/images", bytes.NewReader(good)), http.StatusCreated)
		if up.Digest != wantDigest || up.Size != int64(len(good)) {
			t.Fatalf("upload: %+v; want %s, %d bytes", up, wantDigest, len(good))
		}
		// Uploading it again is fine and gives the same digest.
		again := decode[api.ImageUpload](t, ts.do(t, "POST", "/v1/images", bytes.NewReader(good)), http.StatusCreated)
		if again.Digest != wantDigest {
			t.Fatalf("re-upload: %+v", again)
		}
		resp := ts.do(t, "GET", "/v1/images/"+wantDigest, nil)
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !bytes.Equal(b, good) {
			t.Fatalf("fetch: %d, %d bytes", resp.StatusCode, len(b))
		}
	})
	bad := []struct {
		name     string
		body     []byte
		status   int
		field    string
		wantText string
	}{
		{"tar without index.json", tarOf(t, map[string]string{"oci-layout": "{}", "other.txt": "x"}), 400, "image", "not an OCI image archive: no index.json"},
		{"tar without oci-layout", tarOf(t, map[string]string{"index.json": "{}"}), 400, "image", "not an OCI image archive: no oci-layout"},
		{"not a tar", bytes.Repeat([]byte("hello, world\n"), 100), 400, "image", "not an OCI image archive"},
		{"short garbage", []byte("nope"), 400, "image", "not an OCI image archive"},
		{"empty", nil, 400, "image", "not an OCI image archive"},
		{"truncated tar", good[:700], 400, "image", "not an OCI image archive"},
		{"too large", bytes.Repeat([]byte{0}, 65<<10), 413, "", "over"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			e := errorBody(t, ts.do(t, "POST", "/v1/images", bytes.NewReader(tt.body)), tt.status)
			if e.Field != tt.field || !strings.Contains(e.Message, tt.wantText) {
				t.Errorf("error %+v; want field %q, message containing %q", e, tt.field, tt.wantText)
			}
		})
	}
	t.Run("too large without content length", func(t *testing.T) {
		// A reader that is not a bytes.Reader makes the client stream chunked.
		body := io.MultiReader(bytes.NewReader(good), strings.NewReader(strings.Repeat("z", 70<<10)))
		errorBody(t, ts.do(t, "POST", "/v1/images", body), http.StatusRequestEntityTooLarge)
	})
	t.Run("nothing left behind", func(t *testing.T) {
		ents, err := ts.images.tmpEntries()
		if err != nil || len(ents) != 0 {
			t.Errorf("tmp after uploads: %v, %v", ents, err)
		}
	})
	gets := []struct {
		name, path string
		status     int
	}{
		{"unknown digest", "/v1/images/sha256:" + strings.Repeat("c", 64), 404},
		{"escaping path", "/v1/images/..%2F..%2Famber.db", 400},
		{"escaping digest", "/v1/images/sha256:..%2F..%2Famber.db", 400},
		{"hex only", "/v1/images/" + strings.Repeat("c", 64), 400},
		{"upper-case hex", "/v1/images/sha256:" + strings.Repeat("C", 64), 400},
	}
	for _, tt := range gets {
		t.Run("GET "+tt.name, func(t *testing.T) {
			e := errorBody(t, ts.do(t, "GET", tt.path, nil), tt.status)
			if tt.status == 400 && e.Field != "digest" {
				t.Errorf("error %+v; want field digest", e)
			}
		})
	}
}

func TestRegistrySurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	open := func() *testScheduler {
		t.Helper()
		s, err := New(WithDataDir(dir), WithLogger(testLogger(t)))
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		return &testScheduler{Scheduler: s}
	}
	s1 := open()
	digest, _, err := s1.images.put(bytes.NewReader(ociTar(t, "persist")))
	if err != nil {
		t.Fatal(err)
	}
	for _, mem := range []int{128, 256} {
		if _, _, err := s1.Scheduler.deploy("hello", api.FunctionSpec{Image: digest, MemoryMB: mem}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s1.Scheduler.deploy("world", api.FunctionSpec{Image: digest}); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := open()
	defer s2.Close()
	fns, err := s2.reg.list()
	if err != nil {
		t.Fatal(err)
	}
	if len(fns) != 2 || fns[0].Name != "hello" || fns[0].Version != 2 || fns[0].MemoryMB != 256 || fns[1].Name != "world" {
		t.Fatalf("after reopen: %+v", fns)
	}
	v1, err := s2.reg.version("hello", 1)
	if err != nil || v1.MemoryMB != 128 {
		t.Fatalf("version 1 after reopen: %+v, %v", v1, err)
	}
	if !s2.images.has(digest) {
		t.Errorf("image gone after reopen")
	}
	fn, created, err := s2.Scheduler.deploy("hello", api.FunctionSpec{Image: digest, MemoryMB: 512})
	if err != nil || !created || fn.Version != 3 {
		t.Errorf("deploy after reopen: %+v, %v, %v; want version 3", fn, created, err)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(); err == nil {
		t.Error("New without a data folder succeeded")
	}
	if _, err := New(WithDataDir(t.TempDir()), WithHeartbeatTimeouts(10*time.Second, time.Second)); err == nil {
		t.Error("New with gone < suspect succeeded")
	}
}

func agentHB(name, url string, capMB int, instances ...api.Instance) api.Heartbeat {
	return api.Heartbeat{Name: name, URL: url, CapacityMB: capMB, Instances: instances}
}

func TestMembership(t *testing.T) {
	ts := newTestScheduler(t, WithHeartbeatTimeouts(5*time.Second, 15*time.Second), WithForgetAfter(time.Minute))
	state := func(name string) api.AgentState {
		t.Helper()
		for _, a := range decode[[]api.AgentStatus](t, ts.do(t, "GET", "/v1/agents", nil), http.StatusOK) {
			if a.Name == name {
				return a.State
			}
		}
		return "absent"
	}
	steps := []struct {
		advance   time.Duration
		heartbeat bool
		want      api.AgentState
	}{
		{0, true, api.AgentReady},
		{4 * time.Second, false, api.AgentReady},
		{time.Second, false, api.AgentSuspect}, // 5s
		{9 * time.Second, false, api.AgentSuspect},
		{time.Second, false, api.AgentGone}, // 15s
		{0, true, api.AgentReady},           // back
		{20 * time.Second, false, api.AgentGone},
		{45 * time.Second, false, api.AgentGone},
		{10 * time.Second, false, "absent"}, // gone + forget-after
		{0, true, api.AgentReady},           // re-registers
	}
	for i, st := range steps {
		ts.clock.Advance(st.advance)
		if st.heartbeat {
			ts.heartbeat(t, agentHB("n1", "http://127.0.0.1:1", 1024))
		}
		if got := state("n1"); got != st.want {
			t.Fatalf("step %d (+%s, heartbeat %v): state %s, want %s", i, st.advance, st.heartbeat, got, st.want)
		}
	}

	bad := []struct {
		name  string
		body  string
		field string
	}{
		{"bad name", `{"name":"Node_1","url":"http://x:1","capacity_mb":1}`, "name"},
		{"no url", `{"name":"n2","capacity_mb":1}`, "url"},
		{"relative url", `{"name":"n2","url":"/agent","capacity_mb":1}`, "url"},
		{"bad scheme", `{"name":"n2","url":"ftp://x:1","capacity_mb":1}`, "url"},
		{"unparsable url", `{"name":"n2","url":"http://[::1","capacity_mb":1}`, "url"},
		{"negative capacity", `{"name":"n2","url":"http://x:1","capacity_mb":-1}`, "capacity_mb"},
		{"malformed JSON", `{"name":`, "body"},
		{"wrong type", `{"name":"n2","capacity_mb":"big"}`, "capacity_mb"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			e := errorBody(t, ts.do(t, "POST", "/v1/agents/heartbeat", strings.NewReader(tt.body)), http.StatusBadRequest)
			if e.Field != tt.field {
				t.Errorf("error %+v; want field %q", e, tt.field)
			}
		})
	}
}

// TestReserveIdleClaims drives placement through the membership table:
// an idle instance is handed out once per heartbeat, memory is reserved in
// flight, and releases give both back.
func TestReserveIdleClaims(t *testing.T) {
	ts := newTestScheduler(t)
	fn := &api.Function{FunctionSpec: api.FunctionSpec{Name: "hello", MemoryMB: 256}, Version: 2}
	idle := api.Instance{ID: "i1", Function: "hello", Version: 2, State: api.StateIdle, MemoryMB: 256}
	oldIdle := api.Instance{ID: "i0", Function: "hello", Version: 1, State: api.StateIdle, MemoryMB: 256}
	if err := ts.heartbeat0(agentHB("big", "http://big:1", 4096, oldIdle)); err != nil {
		t.Fatal(err)
	}
	if err := ts.heartbeat0(agentHB("small", "http://small:1", 512, idle)); err != nil {
		t.Fatal(err)
	}
	reserve := func(wantAgent, wantReason string) reservation {
		t.Helper()
		r, _, p, err := ts.reserve(fn, testPool(t, ts, fn.Name), nil)
		if err != nil {
			t.Fatalf("reserve: %v", err)
		}
		if p.Agent != wantAgent || p.Reason != wantReason {
			t.Fatalf("placed %+v; want %s/%s", p, wantAgent, wantReason)
		}
		return r
	}
	reserved := func(agent string) int {
		for _, a := range ts.agentStatuses() {
			if a.Name == agent {
				return a.ReservedMB
			}
		}
		return -1
	}
	r1 := reserve("small", placement.ReasonIdleInstance) // the idle v2 instance (v1's does not count)
	r2 := reserve("big", placement.ReasonFreeMemory)     // idle one claimed: most free memory
	if reserved("small") != 256 || reserved("big") != 256 {
		t.Fatalf("reserved: small %d big %d", reserved("small"), reserved("big"))
	}
	ts.release(r1) // the instance is idle again
	r3 := reserve("small", placement.ReasonIdleInstance)
	ts.release(r2)
	ts.release(r3)
	if reserved("small") != 0 || reserved("big") != 0 {
		t.Fatalf("after release: small %d big %d", reserved("small"), reserved("big"))
	}
	// A heartbeat resets claims: the agent's own view wins.
	r4 := reserve("small", placement.ReasonIdleInstance)
	if err := ts.heartbeat0(agentHB("small", "http://small:1", 512, idle)); err != nil {
		t.Fatal(err)
	}
	r5 := reserve("small", placement.ReasonIdleInstance)
	ts.release(r4) // from an older heartbeat: must not free r5's claim
	reserve("big", placement.ReasonFreeMemory)
	ts.release(r5)

	// Claim the idle instance, then fill the memory: big has 4096-256 MB
	// free (15 invocations), small 512-256 (1).
	reserve("small", placement.ReasonIdleInstance)
	n := 0
	for ; ; n++ {
		_, _, _, err := ts.reserve(fn, testPool(t, ts, fn.Name), nil)
		if err != nil {
			if !strings.Contains(err.Error(), "no ready agent with 256 MB free for function hello") {
				t.Fatalf("full cluster: %v", err)
			}
			break
		}
		if n > 100 {
			t.Fatal("reservations never run out")
		}
	}
	if n != 16 || reserved("big") != 4096 || reserved("small") != 512 {
		t.Errorf("placed %d more; reserved big %d small %d; want 16, 4096, 512", n, reserved("big"), reserved("small"))
	}
}

// heartbeat0 records a heartbeat without HTTP.
func (ts *testScheduler) heartbeat0(hb api.Heartbeat) error { return ts.Scheduler.heartbeat(hb) }

func TestInvokeForwarded(t *testing.T) {
	ts := newTestScheduler(t, WithToken("tok"))
	ag := newFakeAgent(t, "n1")
	ts.heartbeat(t, agentHB("n1", ag.srv.URL+"/", 1024))
	fn := ts.deploy(t, "echo", 128)

	resp := ts.do(t, "POST", "/v1/functions/echo/invoke", strings.NewReader(`{"hi":1}`))
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != `{"hi":1}` {
		t.Fatalf("invoke: %d %s", resp.StatusCode, body)
	}
	got := ag.got()
	if len(got) != 1 {
		t.Fatalf("agent got %d requests", len(got))
	}
	r := got[0]
	if r.Path != "/v1/functions/echo/invoke" || r.Version != fmt.Sprint(fn.Version) || r.Auth != "Bearer tok" || string(r.Payload) != `{"hi":1}` {
		t.Errorf("agent request %+v", r)
	}
	if r.RequestID == "" || resp.Header.Get(api.HeaderRequestID) != r.RequestID {
		t.Errorf("request id: agent %q, caller %q", r.RequestID, resp.Header.Get(api.HeaderRequestID))
	}
	res := api.ReadInvokeHeaders(resp.Header, body)
	if res.Agent != "n1" || res.Instance != "n1-i1" || res.StartKind != api.StartWarm || res.Duration != 1500*time.Microsecond ||
		res.BilledMs != 2 || res.Function != "echo" || res.Version != 1 || res.FunctionError != "" {
		t.Errorf("headers not passed through: %+v", res)
	}

	// A function error is a 200 with Amber-Function-Error, counted as an error.
	ag.setReply(func(w http.ResponseWriter, r *http.Request, _ []byte) {
		res := api.InvokeResult{RequestID: r.Header.Get(api.HeaderRequestID), Function: "echo", Version: 1, Agent: "n1",
			StartKind: api.StartCold, FunctionError: "Unhandled"}
		res.WriteHeaders(w.Header())
		w.Write([]byte(`{"errorMessage":"boom","errorType":"Error"}`))
	})
	resp = ts.do(t, "POST", "/v1/functions/echo/invoke", strings.NewReader(`{}`))
	body, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get(api.HeaderFunctionError) != "Unhandled" || !strings.Contains(string(body), "boom") {
		t.Fatalf("function error: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	// A 4xx from the agent passes through unchanged.
	ag.setReply(func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		api.WriteError(w, api.Invalid("version", "nope"))
	})
	e := errorBody(t, ts.do(t, "POST", "/v1/functions/echo/invoke", nil), http.StatusBadRequest)
	if e.Field != "version" {
		t.Errorf("agent 400: %+v", e)
	}

	st := decode[api.FunctionStatus](t, ts.do(t, "GET", "/v1/functions/echo", nil), http.StatusOK)
	want := api.FunctionStats{Invocations: 3, Errors: 2, ColdStarts: 1, WarmStarts: 1, WarmHitRatio: 1.0 / 3, ColdStartsPerMinute: 0.2, BilledMs: 2, GBSeconds: 0.00025, LastStartKind: api.StartCold, LastInvokedAt: ts.clock.Now()}
	if st.Stats != want {
		t.Errorf("stats %+v; want %+v", st.Stats, want)
	}
	// Nothing stays reserved.
	for _, a := range ts.agentStatuses() {
		if a.ReservedMB != 0 {
			t.Errorf("agent %s still has %d MB reserved", a.Name, a.ReservedMB)
		}
	}
}

func TestInvokePinnedVersion(t *testing.T) {
	ts := newTestScheduler(t)
	ag := newFakeAgent(t, "n1")
	ts.heartbeat(t, agentHB("n1", ag.srv.URL, 1024))
	fn := ts.deploy(t, "echo", 128)
	if _, _, err := ts.Scheduler.deploy("echo", api.FunctionSpec{Image: fn.Image, MemoryMB: 256}); err != nil {
		t.Fatal(err)
	}
	ts.do(t, "POST", "/v1/functions/echo/invoke", nil)
	ts.do(t, "POST", "/v1/functions/echo/invoke", nil, api.HeaderVersion, "1")
	got := ag.got()
	if len(got) != 2 || got[0].Version != "2" || got[1].Version != "1" {
		t.Errorf("versions sent: %+v", got)
	}
	errorBody(t, ts.do(t, "POST", "/v1/functions/echo/invoke", nil, api.HeaderVersion, "7"), http.StatusNotFound)
	errorBody(t, ts.do(t, "POST", "/v1/functions/echo/invoke", nil, api.HeaderVersion, "x"), http.StatusBadRequest)
	if e := errorBody(t, ts.do(t, "POST", "/v1/functions/echo/invoke", strings.NewReader("{bad")), http.StatusBadRequest); e.Field != "payload" {
		t.Errorf("non-JSON payload: field %q, want payload", e.Field)
	}
	if n := len(ag.got()); n != 2 {
		t.Errorf("a refused payload reached the agent (%d requests)", n)
	}
}

// deadURL returns a URL nothing listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

func TestInvokeFailures(t *testing.T) {
	t.Run("unknown function", func(t *testing.T) {
		ts := newTestScheduler(t)
		e := errorBody(t, ts.do(t, "POST", "/v1/functions/nope/invoke", nil), http.StatusNotFound)
		if e.Message != `function "nope" not found` {
			t.Errorf("message %q", e.Message)
		}
	})
	t.Run("bad function name", func(t *testing.T) {
		ts := newTestScheduler(t)
		errorBody(t, ts.do(t, "POST", "/v1/functions/No_Pe/invoke", nil), http.StatusBadRequest)
	})
	t.Run("oversize payload", func(t *testing.T) {
		ts := newTestScheduler(t)
		ag := newFakeAgent(t, "n1")
		ts.heartbeat(t, agentHB("n1", ag.srv.URL, 1024))
		ts.deploy(t, "echo", 128)
		e := errorBody(t, ts.do(t, "POST", "/v1/functions/echo/invoke", bytes.NewReader(make([]byte, api.MaxSyncPayload+1))), http.StatusRequestEntityTooLarge)
		if !strings.Contains(e.Message, "payload") || len(ag.got()) != 0 {
			t.Errorf("413: %+v, agent got %d", e, len(ag.got()))
		}
	})
	t.Run("no agent", func(t *testing.T) {
		ts := newTestScheduler(t)
		ts.deploy(t, "echo", 512)
		ts.heartbeat(t, agentHB("tiny", "http://127.0.0.1:1", 256))
		e := errorBody(t, ts.do(t, "POST", "/v1/functions/echo/invoke", nil), http.StatusServiceUnavailable)
		if !strings.Contains(e.Message, "no ready agent with 512 MB free for function echo") {
			t.Errorf("message %q", e.Message)
		}
	})
	t.Run("agent down", func(t *testing.T) {
		ts := newTestScheduler(t)
		ts.deploy(t, "echo", 128)
		ts.heartbeat(t, agentHB("n1", deadURL(t), 1024))
		resp := ts.do(t, "POST", "/v1/functions/echo/invoke", nil)
		e := errorBody(t, resp, http.StatusBadGateway)
		id := resp.Header.Get(api.HeaderRequestID)
		t.Logf("502: %s", e.Message)
		if id == "" || !strings.Contains(e.Message, id) || !strings.Contains(e.Message, "agent n1") {
			t.Errorf("502 %q; want it to name agent n1 and request %q", e.Message, id)
		}
		// The agent is suspect until it sends a heartbeat again.
		if a := ts.agentStatuses()[0]; a.State != api.AgentSuspect {
			t.Errorf("agent state after refused connection: %s", a.State)
		}
	})
	t.Run("refused connection retried on another agent", func(t *testing.T) {
		ts := newTestScheduler(t)
		ts.deploy(t, "echo", 128)
		ag := newFakeAgent(t, "live")
		ts.heartbeat(t, agentHB("dead", deadURL(t), 8192)) // most free memory: tried first
		ts.heartbeat(t, agentHB("live", ag.srv.URL, 1024))
		resp := ts.do(t, "POST", "/v1/functions/echo/invoke", strings.NewReader(`"x"`))
		if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(b) != `"x"` {
			t.Fatalf("invoke: %d %s", resp.StatusCode, b)
		}
		if len(ag.got()) != 1 {
			t.Errorf("live agent got %d requests", len(ag.got()))
		}
	})
	statuses := []struct {
		agentStatus, want int
	}{
		{500, http.StatusBadGateway},
		{502, http.StatusBadGateway},
		{503, http.StatusServiceUnavailable},
		{504, http.StatusGatewayTimeout},
	}
	for _, tt := range statuses {
		t.Run(fmt.Sprintf("agent replies %d", tt.agentStatus), func(t *testing.T) {
			ts := newTestScheduler(t)
			ts.deploy(t, "echo", 128)
			ag := newFakeAgent(t, "n1")
			ag.setReply(func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				api.WriteJSON(w, tt.agentStatus, api.ErrorBody{Error: api.ErrorDetail{Code: "X", Message: "disk on fire"}})
			})
			ts.heartbeat(t, agentHB("n1", ag.srv.URL, 1024))
			resp := ts.do(t, "POST", "/v1/functions/echo/invoke", nil)
			e := errorBody(t, resp, tt.want)
			id := resp.Header.Get(api.HeaderRequestID)
			t.Logf("%d: %s", resp.StatusCode, e.Message)
			for _, want := range []string{"agent n1", id, "disk on fire"} {
				if !strings.Contains(e.Message, want) {
					t.Errorf("message %q does not contain %q", e.Message, want)
				}
			}
			if len(ag.got()) != 1 {
				t.Errorf("agent got %d requests; a 5xx must not be retried", len(ag.got()))
			}
			st, _ := ts.reg.latest("echo")
			if s := ts.statsFor(st.Name); s.Invocations != 1 || s.Errors != 1 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func TestMalformedJSON(t *testing.T) {
	ts := newTestScheduler(t)
	for _, tt := range []struct{ method, path, body string }{
		{"PUT", "/v1/functions/hello", `{`},
		{"PUT", "/v1/functions/hello", `[1,2]`},
		{"PUT", "/v1/functions/hello", `{"env":{"A":1}}`},
		{"POST", "/v1/agents/heartbeat", `}`},
		{"POST", "/v1/agents/heartbeat", `{"instances":{}}`},
	} {
		e := errorBody(t, ts.do(t, tt.method, tt.path, strings.NewReader(tt.body)), http.StatusBadRequest)
		if e.Field == "" {
			t.Errorf("%s %s %s: no field in %+v", tt.method, tt.path, tt.body, e)
		}
	}
}

func TestFunctionsAndState(t *testing.T) {
	ts := newTestScheduler(t)
	for _, name := range []string{"zeta", "alpha", "mid"} {
		ts.deploy(t, name, 128)
	}
	in := func(id, fn, agent string) api.Instance {
		return api.Instance{ID: id, Function: fn, Version: 1, Agent: agent, State: api.StateIdle, MemoryMB: 128}
	}
	ts.heartbeat(t, agentHB("old", "http://old:1", 1024, in("o1", "alpha", "")))
	ts.clock.Advance(10 * time.Second) // old: suspect
	ts.heartbeat(t, agentHB("b", "http://b:1", 1024, in("b1", "alpha", "b"), in("b2", "mid", "b")))
	ts.heartbeat(t, agentHB("a", "http://a:1", 2048, in("a1", "alpha", "a")))

	fns := decode[[]api.FunctionStatus](t, ts.do(t, "GET", "/v1/functions", nil), http.StatusOK)
	var names []string
	for _, f := range fns {
		names = append(names, f.Name)
	}
	if strings.Join(names, ",") != "alpha,mid,zeta" {
		t.Fatalf("functions not sorted: %v", names)
	}
	ids := func(list []api.Instance) string {
		var s []string
		for _, i := range list {
			s = append(s, i.Agent+"/"+i.ID)
		}
		return strings.Join(s, ",")
	}
	if got := ids(fns[0].Instances); got != "a/a1,b/b1,old/o1" {
		t.Errorf("alpha instances (suspect agent included, agent filled in): %s", got)
	}
	if fns[2].Instances == nil {
		t.Errorf("zeta instances: nil, want []")
	}
	ts.clock.Advance(10 * time.Second) // old: gone (20s); a, b: suspect (10s)
	fns = decode[[]api.FunctionStatus](t, ts.do(t, "GET", "/v1/functions", nil), http.StatusOK)
	if got := ids(fns[0].Instances); got != "a/a1,b/b1" {
		t.Errorf("alpha instances after old went away: %s", got)
	}

	st := decode[api.ClusterState](t, ts.do(t, "GET", "/v1/state", nil), http.StatusOK)
	if !st.Time.Equal(ts.clock.Now()) || len(st.Agents) != 3 || len(st.Functions) != 3 {
		t.Fatalf("state: %+v", st)
	}
	var agents []string
	for _, a := range st.Agents {
		agents = append(agents, a.Name+":"+string(a.State))
	}
	if got := strings.Join(agents, ","); got != "a:suspect,b:suspect,old:gone" {
		t.Errorf("agents: %s", got)
	}
}

// TestConcurrentInvokes runs invocations in parallel (for -race) and checks
// the counters and reservations add up.
func TestConcurrentInvokes(t *testing.T) {
	ts := newTestScheduler(t)
	a1, a2 := newFakeAgent(t, "n1"), newFakeAgent(t, "n2")
	ts.heartbeat(t, agentHB("n1", a1.srv.URL, 4096))
	ts.heartbeat(t, agentHB("n2", a2.srv.URL, 4096))
	ts.deploy(t, "echo", 128)
	const n = 40
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", ts.srv.URL+"/v1/functions/echo/invoke", strings.NewReader(fmt.Sprint(i)))
			resp, err := ts.srv.Client().Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(b) != fmt.Sprint(i) {
				t.Errorf("invoke %d: %d %s", i, resp.StatusCode, b)
			}
		})
	}
	wg.Wait()
	if got := len(a1.got()) + len(a2.got()); got != n {
		t.Errorf("agents got %d requests, want %d", got, n)
	}
	if s := ts.statsFor("echo"); s.Invocations != n || s.WarmStarts != n {
		t.Errorf("stats %+v", s)
	}
	for _, a := range ts.agentStatuses() {
		if a.ReservedMB != 0 {
			t.Errorf("agent %s: %d MB still reserved", a.Name, a.ReservedMB)
		}
	}
}

func TestUnknownRoute(t *testing.T) {
	ts := newTestScheduler(t)
	e := errorBody(t, ts.do(t, "GET", "/v1/nope", nil), http.StatusNotFound)
	if !strings.Contains(e.Message, "/v1/nope") {
		t.Errorf("message %q", e.Message)
	}
}

func (st *imageStore) tmpEntries() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(st.dir, "tmp"))
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, err
}
