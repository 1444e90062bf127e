package scheduler

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/api/ociarchive"
)

// fakeClock is a settable clock for membership tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testLogger logs through t.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

type testScheduler struct {
	*Scheduler
	dir   string
	clock *fakeClock
	srv   *httptest.Server
	token string
}

// newTestScheduler starts a scheduler on a fake clock behind an httptest
// server. The token is "" unless given with WithToken in opts.
func newTestScheduler(t *testing.T, opts ...Option) *testScheduler {
	t.Helper()
	ts := &testScheduler{dir: t.TempDir(), clock: newFakeClock()}
	all := append([]Option{WithDataDir(ts.dir), WithClock(ts.clock.Now), WithLogger(testLogger(t)), WithStartGrace(0)}, opts...)
	s, err := New(all...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ts.Scheduler = s
	ts.token = s.token
	ts.srv = httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		ts.srv.Close()
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return ts
}

// do sends a request to the test server with the scheduler's token.
func (ts *testScheduler) do(t *testing.T, method, path string, body io.Reader, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, ts.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if ts.token != "" {
		req.Header.Set("Authorization", "Bearer "+ts.token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := ts.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func (ts *testScheduler) doJSON(t *testing.T, method, path string, v any) *http.Response {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return ts.do(t, method, path, bytes.NewReader(b))
}

// errorBody decodes an ErrorBody reply and checks its status.
func errorBody(t *testing.T, resp *http.Response, wantStatus int) api.ErrorDetail {
	t.Helper()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, wantStatus, b)
	}
	var eb api.ErrorBody
	if err := json.Unmarshal(b, &eb); err != nil {
		t.Fatalf("body is not an ErrorBody: %v: %s", err, b)
	}
	if eb.Error.Message == "" || eb.Error.Code == "" {
		t.Fatalf("ErrorBody without code or message: %s", b)
	}
	return eb.Error
}

func decode[T any](t *testing.T, resp *http.Response, wantStatus int) T {
	t.Helper()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, wantStatus, b)
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %T: %v: %s", v, err, b)
	}
	return v
}

// ociTar builds a small OCI image archive (ociarchive.Build of a
// bootstrap script); tag makes its digest unique.
func ociTar(tb testing.TB, tag string) []byte {
	tb.Helper()
	dir := tb.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bootstrap"), []byte("#!/bin/sh\n# "+tag+"\n"), 0o755); err != nil {
		tb.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := ociarchive.Build(dir, &buf); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func tarOf(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	// Deterministic order.
	for _, name := range []string{"oci-layout", "index.json", "blobs/sha256/00", "other.txt"} {
		body, ok := files[name]
		if !ok {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// uploadImage stores an archive and returns its digest.
func (ts *testScheduler) uploadImage(t *testing.T, tag string) string {
	t.Helper()
	up := decode[api.ImageUpload](t, ts.do(t, "POST", "/v1/images", bytes.NewReader(ociTar(t, tag))), http.StatusCreated)
	return up.Digest
}

// deploy uploads an image and deploys name with it.
func (ts *testScheduler) deploy(t *testing.T, name string, memoryMB int) api.Function {
	t.Helper()
	digest := ts.uploadImage(t, name)
	spec := api.FunctionSpec{Name: name, Image: digest, MemoryMB: memoryMB, Timeout: api.Duration(3 * time.Second)}
	return decode[api.Function](t, ts.doJSON(t, "PUT", "/v1/functions/"+name, spec), http.StatusCreated)
}

// deployShared deploys name on ts, which shares its registry with other
// schedulers that may have deployed the same spec already (200 then).
func (ts *testScheduler) deployShared(t *testing.T, name string, memoryMB int) api.Function {
	t.Helper()
	digest := ts.uploadImage(t, name)
	spec := api.FunctionSpec{Name: name, Image: digest, MemoryMB: memoryMB, Timeout: api.Duration(3 * time.Second)}
	resp := ts.doJSON(t, "PUT", "/v1/functions/"+name, spec)
	if resp.StatusCode == http.StatusOK {
		resp.StatusCode = http.StatusCreated
	}
	return decode[api.Function](t, resp, http.StatusCreated)
}

func (ts *testScheduler) heartbeat(t *testing.T, hb api.Heartbeat) {
	t.Helper()
	resp := ts.doJSON(t, "POST", "/v1/agents/heartbeat", hb)
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("heartbeat: %d %s", resp.StatusCode, b)
	}
}

// fakeAgent is an agent's invoke endpoint that records what it got.
type fakeAgent struct {
	srv *httptest.Server

	mu       sync.Mutex
	requests []agentRequest
	// reply answers a request; nil means a warm success echoing the payload.
	reply func(w http.ResponseWriter, r *http.Request, payload []byte)
}

type agentRequest struct {
	Path, Version, RequestID, Auth string
	Payload                        []byte
}

func newFakeAgent(t *testing.T, name string) *fakeAgent {
	t.Helper()
	fa := &fakeAgent{}
	fa.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		payload, _ := io.ReadAll(r.Body)
		fa.mu.Lock()
		fa.requests = append(fa.requests, agentRequest{
			Path: r.URL.Path, Version: r.Header.Get(api.HeaderVersion), RequestID: r.Header.Get(api.HeaderRequestID),
			Auth: r.Header.Get("Authorization"), Payload: payload,
		})
		reply := fa.reply
		fa.mu.Unlock()
		if reply != nil {
			reply(w, r, payload)
			return
		}
		v, _ := strconv.Atoi(r.Header.Get(api.HeaderVersion))
		res := api.InvokeResult{
			RequestID: r.Header.Get(api.HeaderRequestID), Function: strings.Split(r.URL.Path, "/")[3], Version: v,
			Agent: name, Instance: name + "-i1", StartKind: api.StartWarm, Duration: 1500 * time.Microsecond,
			BilledMs: 2, MemoryMB: 128,
		}
		res.WriteHeaders(w.Header())
		w.Header().Set("Content-Type", "application/json")
		w.Write(payload)
	}))
	t.Cleanup(fa.srv.Close)
	return fa
}

func (fa *fakeAgent) got() []agentRequest {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	return append([]agentRequest(nil), fa.requests...)
}

func (fa *fakeAgent) setReply(f func(w http.ResponseWriter, r *http.Request, payload []byte)) {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	fa.reply = f
}

// testPool reads a function's pool settings from the registry.
func testPool(t *testing.T, ts *testScheduler, name string) api.PoolSettings {
	t.Helper()
	p, err := ts.reg.pool(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
