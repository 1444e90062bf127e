package scheduler

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// failingReply answers with a function error.
func failingReply(msg string) func(w http.ResponseWriter, r *http.Request, _ []byte) {
	return func(w http.ResponseWriter, r *http.Request, _ []byte) {
		res := api.InvokeResult{RequestID: r.Header.Get(api.HeaderRequestID), Function: "f", Version: 1, Agent: "a1",
			StartKind: api.StartWarm, BilledMs: 3, MemoryMB: 128, FunctionError: "Unhandled"}
		res.WriteHeaders(w.Header())
		w.Write([]byte(`{"errorMessage":"` + msg + `","errorType":"Error"}`))
	}
}

// waitFor polls until cond holds (deliveries and their backoffs run on
// JetStream's clock, not the fake one).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// okReply answers as agent name: a warm success echoing the payload.
func okReply(name string) func(w http.ResponseWriter, r *http.Request, payload []byte) {
	return func(w http.ResponseWriter, r *http.Request, payload []byte) {
		res := api.InvokeResult{RequestID: r.Header.Get(api.HeaderRequestID), Function: "f", Version: 1, Agent: name,
			StartKind: api.StartWarm, BilledMs: 1, MemoryMB: 128}
		res.WriteHeaders(w.Header())
		w.Write(payload)
	}
}

func newAsyncTest(t *testing.T, opts ...Option) (*testScheduler, *fakeAgent) {
	t.Helper()
	ts := newTestScheduler(t, append([]Option{WithHeartbeatTimeouts(24*time.Hour, 48*time.Hour)}, opts...)...)
	ag := newFakeAgent(t, "a1")
	ts.heartbeat(t, api.Heartbeat{Name: "a1", URL: ag.srv.URL, CapacityMB: 4096})
	ts.deploy(t, "f", 128)
	return ts, ag
}

func (ts *testScheduler) pending(t *testing.T) int {
	t.Helper()
	p, err := ts.pendingEvents()
	if err != nil {
		t.Fatal(err)
	}
	return p["f"]
}

func TestAsyncInvokeDelivers(t *testing.T) {
	ts, ag := newAsyncTest(t)
	resp := ts.do(t, "POST", "/v1/functions/f/invoke", strings.NewReader(`{"n":1}`), api.HeaderInvocationType, "Event")
	acc := decode[api.AsyncAccepted](t, resp, http.StatusAccepted)
	if acc.EventID == "" || resp.Header.Get(api.HeaderEventID) != acc.EventID {
		t.Fatalf("202 reply %+v, header %q", acc, resp.Header.Get(api.HeaderEventID))
	}
	reqs := waitRequests(t, ag, 1)
	if string(reqs[0].Payload) != `{"n":1}` || reqs[0].Version != "1" {
		t.Fatalf("agent got %+v", reqs[0])
	}
	waitFor(t, "queue empty", func() bool { return ts.pending(t) == 0 })
	// The ledger holds it, marked as an event.
	recs := decode[[]api.LedgerRecord](t, ts.do(t, "GET", "/v1/ledger?function=f", nil), http.StatusOK)
	if len(recs) != 1 || recs[0].Source != sourceEvent || recs[0].RequestID != reqs[0].RequestID {
		t.Fatalf("ledger %+v", recs)
	}

	// Invalid payloads, unknown functions, bad types and DryRun.
	errorBody(t, ts.do(t, "POST", "/v1/functions/f/invoke", strings.NewReader(`{`), api.HeaderInvocationType, "Event"), http.StatusBadRequest)
	errorBody(t, ts.do(t, "POST", "/v1/functions/nope/invoke", nil, api.HeaderInvocationType, "Event"), http.StatusNotFound)
	errorBody(t, ts.do(t, "POST", "/v1/functions/f/invoke", strings.NewReader(`"`+strings.Repeat("a", api.MaxAsyncPayload)+`"`), api.HeaderInvocationType, "Event"), http.StatusRequestEntityTooLarge)
	if e := errorBody(t, ts.do(t, "POST", "/v1/functions/f/invoke", nil, api.HeaderInvocationType, "Later"), http.StatusBadRequest); e.Field != "invocation_type" {
		t.Fatalf("bad type: %+v", e)
	}
	if r := ts.do(t, "POST", "/v1/functions/f/invoke", nil, api.HeaderInvocationType, "DryRun"); r.StatusCode != http.StatusNoContent {
		t.Fatalf("DryRun: %d", r.StatusCode)
	}
	if n := len(ag.got()); n != 1 {
		t.Fatalf("agent got %d requests, want 1", n)
	}
}

const testBackoff = 100 * time.Millisecond

func TestRetryDelay(t *testing.T) {
	for _, tc := range []struct {
		base time.Duration
		n    int
		want time.Duration
	}{
		{time.Second, 1, time.Second},
		{time.Second, 2, 2 * time.Second},
		{time.Second, 3, 4 * time.Second},
		{time.Second, 11, 1024 * time.Second},
		{time.Second, 0, time.Second},                       // no attempt yet: the base
		{time.Millisecond, 100, 1 << 20 * time.Millisecond}, // capped
	} {
		if got := retryDelay(tc.base, tc.n); got != tc.want {
			t.Errorf("retryDelay(%s, %d) = %s, want %s", tc.base, tc.n, got, tc.want)
		}
	}
}

func TestAsyncRetriesThenSucceeds(t *testing.T) {
	ts, ag := newAsyncTest(t, WithAsyncBackoff(testBackoff))
	var calls atomic.Int32
	ag.setReply(func(w http.ResponseWriter, r *http.Request, p []byte) {
		if calls.Add(1) <= 2 {
			failingReply("flaky")(w, r, p)
			return
		}
		res := api.InvokeResult{RequestID: r.Header.Get(api.HeaderRequestID), Function: "f", Version: 1, Agent: "a1", StartKind: api.StartWarm, BilledMs: 1, MemoryMB: 128}
		res.WriteHeaders(w.Header())
		w.Write([]byte(`"ok"`))
	})
	fn, _ := ts.reg.latest("f")
	if _, err := ts.enqueue(fn, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, "three attempts", func() bool { return calls.Load() == 3 && ts.pending(t) == 0 })
	// Backoff of base, then 2 × base, before the third attempt (a lower
	// bound: JetStream holds the event back at least that long).
	if d := time.Since(start); d < 3*testBackoff {
		t.Fatalf("three attempts within %s; want backoff of %s and %s", d, testBackoff, 2*testBackoff)
	}
	if dl, _ := ts.deadLetters(""); len(dl) != 0 {
		t.Fatalf("dead letters %+v", dl)
	}
	if recs, _ := ts.ledgerRecords("f", time.Time{}, 100); len(recs) != 3 || !recs[0].Error || recs[2].Error {
		t.Fatalf("ledger %+v", recs)
	}
}

func TestAsyncDeadLetter(t *testing.T) {
	ts, ag := newAsyncTest(t, WithAsyncBackoff(10*time.Millisecond))
	ag.setReply(failingReply("always"))
	resp := ts.do(t, "POST", "/v1/functions/f/invoke", strings.NewReader(`{"k":"v"}`), api.HeaderInvocationType, "Event")
	acc := decode[api.AsyncAccepted](t, resp, http.StatusAccepted)
	waitFor(t, "dead letter", func() bool { dl, _ := ts.deadLetters("f"); return len(dl) == 1 })
	if n := len(ag.got()); n != 3 {
		t.Fatalf("%d attempts, want 3 (1 + 2 retries)", n)
	}
	for _, path := range []string{"/v1/dead-letters", "/v1/functions/f/dead-letters", "/v1/dead-letters?function=f"} {
		dl := decode[[]api.DeadLetter](t, ts.do(t, "GET", path, nil), http.StatusOK)
		if len(dl) != 1 {
			t.Fatalf("%s: %+v", path, dl)
		}
		d := dl[0]
		if d.EventID != acc.EventID || d.Function != "f" || string(d.Payload) != `{"k":"v"}` || len(d.Attempts) != 3 {
			t.Fatalf("%s: dead letter %+v", path, d)
		}
		for _, a := range d.Attempts {
			if !strings.Contains(a.Error, "function error (Unhandled): Error: always") || a.RequestID == "" || a.Agent != "a1" {
				t.Fatalf("attempt %+v", a)
			}
		}
	}
	if dl := decode[[]api.DeadLetter](t, ts.do(t, "GET", "/v1/dead-letters?function=other", nil), http.StatusOK); len(dl) != 0 {
		t.Fatalf("other function: %+v", dl)
	}
	if ts.pending(t) != 0 {
		t.Fatal("dead event still queued")
	}

	// max_retries 0: one attempt, then the dead-letter list.
	errorBody(t, ts.doJSON(t, "PUT", "/v1/functions/f/async", api.AsyncConfig{MaxRetries: 11}), http.StatusBadRequest)
	errorBody(t, ts.doJSON(t, "PUT", "/v1/functions/nope/async", api.AsyncConfig{MaxRetries: 1}), http.StatusNotFound)
	st := decode[api.AsyncStatus](t, ts.doJSON(t, "PUT", "/v1/functions/f/async", api.AsyncConfig{MaxRetries: 0}), http.StatusOK)
	if st.MaxRetries != 0 || st.DeadLetters != 1 {
		t.Fatalf("async status %+v", st)
	}
	ts.do(t, "POST", "/v1/functions/f/invoke", nil, api.HeaderInvocationType, "Event")
	waitFor(t, "second dead letter", func() bool { dl, _ := ts.deadLetters("f"); return len(dl) == 2 })
	if n := len(ag.got()); n != 4 {
		t.Fatalf("%d attempts in all, want 4", n)
	}
}

func TestAsyncThrottleIsRetryable(t *testing.T) {
	cw := newRecorder(maxCapture)
	api.WriteError(cw, api.ErrThrottled)
	if o := cw.outcome(); !strings.HasPrefix(o, "429 ") {
		t.Fatalf("429 outcome %q", o)
	}
	cw = newRecorder(maxCapture)
	cw.Write([]byte("ok"))
	if o := cw.outcome(); o != "" {
		t.Fatalf("200 outcome %q", o)
	}
}

// TestAsyncDurable: queued events survive a close and reopen, and an
// event whose delivery ran but whose acknowledgement never reached
// JetStream (the scheduler died) is delivered again on the next start.
func TestAsyncDurable(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	open := func(opts ...Option) *Scheduler {
		s, err := New(append([]Option{WithDataDir(dir), WithClock(clock.Now), WithLogger(testLogger(t)), WithStartGrace(0),
			WithHeartbeatTimeouts(24*time.Hour, 48*time.Hour), withAsyncAckWait(time.Second)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// One worker, and an agent that holds every request: the first event
	// is in flight, the other three wait in the queue.
	s1 := open(WithAsyncWorkers(1))
	spec := api.FunctionSpec{Name: "f", Image: "sha256:" + strings.Repeat("a", 64), MemoryMB: 128, Timeout: api.Duration(time.Second)}
	fn, _, err := s1.reg.put(spec)
	if err != nil {
		t.Fatal(err)
	}
	ag1 := newFakeAgent(t, "a1")
	release := make(chan struct{})
	ag1.setReply(func(w http.ResponseWriter, r *http.Request, p []byte) { <-release; okReply("a1")(w, r, p) })
	if err := s1.heartbeat(api.Heartbeat{Name: "a1", URL: ag1.srv.URL, CapacityMB: 4096}); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 4 {
		p := `{"i":` + strconv.Itoa(i) + `}`
		if _, err := s1.enqueue(fn, []byte(p)); err != nil {
			t.Fatal(err)
		}
		want = append(want, p)
	}
	waitRequests(t, ag1, 1)
	// The scheduler loses JetStream (as when it is killed); the function
	// then finishes, but its acknowledgement goes nowhere.
	s1.eng.Conn.Close()
	close(release)
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := open()
	defer s2.Close()
	p, err := s2.pendingEvents()
	if err != nil || p["f"] != 4 {
		t.Fatalf("after reopen: pending %v, %v; want 4", p, err)
	}
	ag2 := newFakeAgent(t, "a2")
	if err := s2.heartbeat(api.Heartbeat{Name: "a2", URL: ag2.srv.URL, CapacityMB: 4096}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "queue empty after reopen", func() bool { p, _ := s2.pendingEvents(); return p["f"] == 0 })
	got := map[string]int{}
	for _, r := range ag2.got() {
		got[string(r.Payload)]++
	}
	for _, w := range want {
		if got[w] != 1 {
			t.Fatalf("payload %s delivered %d times after reopen, want 1; got %v", w, got[w], got)
		}
	}
}

func TestAsyncEventJSON(t *testing.T) {
	b := scheduledEvent("id-1", "tick", time.Date(2025, 1, 2, 3, 5, 0, 0, time.UTC))
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]any{"version": "0", "id": "id-1", "detail-type": "Scheduled Event", "source": "aws.events", "time": "2025-01-02T03:05:00Z"} {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	if r, ok := m["resources"].([]any); !ok || len(r) != 1 {
		t.Errorf("resources %v", m["resources"])
	}
	if d, ok := m["detail"].(map[string]any); !ok || len(d) != 0 {
		t.Errorf("detail %v", m["detail"])
	}
}
