package scheduler

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

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

// pump advances the fake clock past retry backoffs until cond holds.
func pump(t *testing.T, ts *testScheduler, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		ts.clock.Advance(500 * time.Millisecond)
		ts.wakeAsync()
		time.Sleep(5 * time.Millisecond)
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
	pump(t, ts, func() bool { return ts.pending(t) == 0 })
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

func TestAsyncRetriesThenSucceeds(t *testing.T) {
	ts, ag := newAsyncTest(t)
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
	start := ts.clock.Now()
	pump(t, ts, func() bool { return calls.Load() == 3 && ts.pending(t) == 0 })
	// 1s then 2s of backoff on the scheduler's clock.
	if d := ts.clock.Now().Sub(start); d < 3*time.Second {
		t.Fatalf("three attempts within %s; want backoff of 1s and 2s", d)
	}
	if dl, _ := ts.deadLetters(""); len(dl) != 0 {
		t.Fatalf("dead letters %+v", dl)
	}
	if recs, _ := ts.ledgerRecords("f", time.Time{}, 100); len(recs) != 3 || !recs[0].Error || recs[2].Error {
		t.Fatalf("ledger %+v", recs)
	}
}

func TestAsyncDeadLetter(t *testing.T) {
	ts, ag := newAsyncTest(t)
	ag.setReply(failingReply("always"))
	resp := ts.do(t, "POST", "/v1/functions/f/invoke", strings.NewReader(`{"k":"v"}`), api.HeaderInvocationType, "Event")
	acc := decode[api.AsyncAccepted](t, resp, http.StatusAccepted)
	pump(t, ts, func() bool { dl, _ := ts.deadLetters("f"); return len(dl) == 1 })
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
	pump(t, ts, func() bool { dl, _ := ts.deadLetters("f"); return len(dl) == 2 })
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
// event in flight when the scheduler died is delivered on the next start.
func TestAsyncDurable(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	open := func(opts ...Option) *Scheduler {
		s, err := New(append([]Option{WithDataDir(dir), WithClock(clock.Now), WithLogger(testLogger(t)),
			WithHeartbeatTimeouts(24*time.Hour, 48*time.Hour)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s1 := open(WithAsyncBackoff(time.Hour))
	spec := api.FunctionSpec{Name: "f", Image: "sha256:" + strings.Repeat("a", 64), MemoryMB: 128, Timeout: api.Duration(time.Second)}
	fn, _, err := s1.reg.put(spec)
	if err != nil {
		t.Fatal(err)
	}
	// No agent: each event fails once and waits an hour.
	var ids []string
	for i := range 3 {
		id, err := s1.enqueue(fn, []byte(`{"i":`+string(rune('0'+i))+`}`))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// And one written as if a delivery was in flight at a crash.
	if err := s1.reg.db.Update(func(tx *bolt.Tx) error {
		return putEvent(tx, s1.newEvent(fn, []byte(`{"i":"inflight"}`), sourceEvent))
	}); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := open(WithAsyncBackoff(time.Millisecond))
	defer s2.Close()
	p, err := s2.pendingEvents()
	if err != nil || p["f"] != 4 {
		t.Fatalf("after reopen: pending %v, %v; want 4", p, err)
	}
	ag := newFakeAgent(t, "a1")
	if err := s2.heartbeat(api.Heartbeat{Name: "a1", URL: ag.srv.URL, CapacityMB: 4096}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour)
	s2.wakeAsync()
	got := waitRequests(t, ag, 4)
	var payloads []string
	for _, r := range got {
		payloads = append(payloads, string(r.Payload))
	}
	for _, want := range []string{`{"i":0}`, `{"i":1}`, `{"i":2}`, `{"i":"inflight"}`} {
		if !strings.Contains(strings.Join(payloads, " "), want) {
			t.Fatalf("payload %s not delivered; got %v", want, payloads)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		p, _ := s2.pendingEvents()
		if p["f"] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still pending: %v", p)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The earlier failed attempt was kept with the event.
	_ = ids
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
