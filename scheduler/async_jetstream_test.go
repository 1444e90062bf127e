package scheduler

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/amberfn/amber/api"
)

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestAsyncTwoSchedulers: two schedulers on one JetStream (the first
// embeds the node, the second connects to it) share the queue: each
// delivers events, and none is delivered by both.
func TestAsyncTwoSchedulers(t *testing.T) {
	addr := freeAddr(t)
	long := WithHeartbeatTimeouts(24*time.Hour, 48*time.Hour)
	a := newTestScheduler(t, long, WithAsyncWorkers(2), WithNATS(NATSConfig{Listen: addr}))
	b := newTestScheduler(t, long, WithAsyncWorkers(2), WithNATS(NATSConfig{URL: "nats://" + addr, Replicas: 1}))
	// Each scheduler's agent answers only once both agents have had a
	// request: neither scheduler can take every event.
	both := make(chan struct{})
	var once sync.Once
	agents := map[string]*fakeAgent{}
	for _, ts := range []*testScheduler{a, b} {
		name := "agent-" + strconv.Itoa(len(agents))
		ag := newFakeAgent(t, name)
		agents[name] = ag
		ts.heartbeat(t, api.Heartbeat{Name: name, URL: ag.srv.URL, CapacityMB: 4096})
		ts.deployShared(t, "f", 128) // the image store is per scheduler
	}
	for name, ag := range agents {
		ag.setReply(func(w http.ResponseWriter, r *http.Request, p []byte) {
			n := 0
			for _, other := range agents {
				if len(other.got()) > 0 {
					n++
				}
			}
			if n == len(agents) {
				once.Do(func() { close(both) })
			}
			select {
			case <-both:
			case <-time.After(20 * time.Second):
				http.Error(w, "the other scheduler delivered nothing", http.StatusInternalServerError)
				return
			}
			okReply(name)(w, r, p)
		})
	}
	const n = 20
	for i := range n {
		ts := []*testScheduler{a, b}[i%2]
		resp := ts.do(t, "POST", "/v1/functions/f/invoke", strings.NewReader(`{"i":`+strconv.Itoa(i)+`}`), api.HeaderInvocationType, "Event")
		decode[api.AsyncAccepted](t, resp, http.StatusAccepted)
	}
	waitFor(t, "queue empty", func() bool { return a.pending(t) == 0 })
	seen := map[string]string{}
	for name, ag := range agents {
		got := ag.got()
		if len(got) == 0 {
			t.Fatalf("%s (one scheduler) delivered nothing", name)
		}
		for _, r := range got {
			if prev, ok := seen[string(r.Payload)]; ok {
				t.Fatalf("event %s delivered by %s and by %s", r.Payload, prev, name)
			}
			seen[string(r.Payload)] = name
		}
	}
	if len(seen) != n {
		t.Fatalf("%d events delivered, want %d", len(seen), n)
	}
	if dl, _ := a.deadLetters(""); len(dl) != 0 {
		t.Fatalf("dead letters %+v", dl)
	}
}

// TestAsyncDeadLetterKeepsAttempts: an event whose every delivery fails
// lands in dead letters with each attempt, from both schedulers, and the
// queue and the attempt log are left empty.
func TestAsyncDeadLetterKeepsAttempts(t *testing.T) {
	addr := freeAddr(t)
	long := WithHeartbeatTimeouts(24*time.Hour, 48*time.Hour)
	backoff := WithAsyncBackoff(10 * time.Millisecond)
	a := newTestScheduler(t, long, backoff, WithNATS(NATSConfig{Listen: addr}))
	b := newTestScheduler(t, long, backoff, WithNATS(NATSConfig{URL: "nats://" + addr, Replicas: 1}))
	for i, ts := range []*testScheduler{a, b} {
		ag := newFakeAgent(t, "a"+strconv.Itoa(i))
		ag.setReply(failingReply("nope"))
		ts.heartbeat(t, api.Heartbeat{Name: "a" + strconv.Itoa(i), URL: ag.srv.URL, CapacityMB: 4096})
		ts.deployShared(t, "f", 128)
		decode[api.AsyncStatus](t, ts.doJSON(t, "PUT", "/v1/functions/f/async", api.AsyncConfig{MaxRetries: 4}), http.StatusOK)
	}
	acc := decode[api.AsyncAccepted](t, a.do(t, "POST", "/v1/functions/f/invoke", strings.NewReader(`{"x":1}`), api.HeaderInvocationType, "Event"), http.StatusAccepted)
	var dl []api.DeadLetter
	waitFor(t, "dead letter", func() bool { dl, _ = b.deadLetters("f"); return len(dl) == 1 })
	d := dl[0]
	if d.EventID != acc.EventID || string(d.Payload) != `{"x":1}` || d.Source != sourceEvent || len(d.Attempts) != 5 {
		t.Fatalf("dead letter %+v; want 5 attempts", d)
	}
	ids := map[string]bool{}
	for _, at := range d.Attempts {
		if !strings.Contains(at.Error, "Error: nope") || at.RequestID == "" || ids[at.RequestID] {
			t.Fatalf("attempt %+v", at)
		}
		ids[at.RequestID] = true
	}
	waitFor(t, "dead event out of the queue", func() bool { return a.pending(t) == 0 })
	if st := decode[api.AsyncStatus](t, b.do(t, "GET", "/v1/functions/f/async", nil), http.StatusOK); st.DeadLetters != 1 || st.Pending != 0 {
		t.Fatalf("async status %+v", st)
	}
	waitFor(t, "attempt log dropped", func() bool {
		_, err := a.async.attempts.Get(context.Background(), attemptsKey(acc.EventID))
		return err != nil
	})
}

// TestAsyncEnqueueUnavailable: when JetStream cannot take an event the
// caller gets 503 naming the cause, never a 202.
func TestAsyncEnqueueUnavailable(t *testing.T) {
	ts, ag := newAsyncTest(t)
	ts.eng.Conn.Close()
	e := errorBody(t, ts.do(t, "POST", "/v1/functions/f/invoke", strings.NewReader(`{}`), api.HeaderInvocationType, "Event"), http.StatusServiceUnavailable)
	if !strings.Contains(e.Message, "control plane store unavailable") || !strings.Contains(e.Message, "connection closed") {
		t.Fatalf("503 message %q does not name the cause", e.Message)
	}
	fn, _ := ts.reg.latest("f")
	if _, err := ts.enqueue(fn, nil); !errors.Is(err, ErrStoreUnavailable) || !errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("enqueue = %v; want ErrStoreUnavailable", err)
	}
	if len(ag.got()) != 0 {
		t.Fatal("an event was delivered")
	}
}

// TestAsyncPurgedOnDelete: deleting a function leaves none of its events
// to deliver; other functions' events stay.
func TestAsyncPurgedOnDelete(t *testing.T) {
	// No agent and a long backoff: the events wait in the queue.
	ts := newTestScheduler(t, WithHeartbeatTimeouts(24*time.Hour, 48*time.Hour), WithAsyncBackoff(time.Hour))
	ts.deploy(t, "f", 128)
	ts.deploy(t, "g", 128)
	for _, name := range []string{"f", "f", "g"} {
		decode[api.AsyncAccepted](t, ts.do(t, "POST", "/v1/functions/"+name+"/invoke", nil, api.HeaderInvocationType, "Event"), http.StatusAccepted)
	}
	if p, _ := ts.pendingEvents(); p["f"] != 2 || p["g"] != 1 {
		t.Fatalf("pending %v", p)
	}
	if r := ts.do(t, "DELETE", "/v1/functions/f", nil); r.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %d", r.StatusCode)
	}
	if p, _ := ts.pendingEvents(); p["f"] != 0 || p["g"] != 1 {
		t.Fatalf("pending after delete %v", p)
	}
}

// TestAsyncStreams: the queue is a work queue with a duplicate window
// longer than a cron tick plus skew; dead letters keep the newest
// maxDeadLetters.
func TestAsyncStreams(t *testing.T) {
	ts := newTestScheduler(t)
	ctx := context.Background()
	qi, err := ts.async.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if qi.Config.Retention.String() != "WorkQueue" || qi.Config.Duplicates < time.Minute || qi.Config.Subjects[0] != "amber.async.>" {
		t.Fatalf("queue config %+v", qi.Config)
	}
	di, err := ts.async.dead.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if di.Config.MaxMsgs != maxDeadLetters || di.Config.Discard.String() != "DiscardOld" {
		t.Fatalf("dead-letter config %+v", di.Config)
	}
}

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAsyncImportBolt: a data folder of the bbolt layout (async_queue and
// async_dead in amber.db) is imported once: queued events are delivered
// (one keeps its earlier failed attempt into its dead letter), dead
// letters are listed as they were, and a second start imports nothing.
func TestAsyncImportBolt(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	open := func(log *slog.Logger, opts ...Option) *Scheduler {
		s, err := New(append([]Option{WithDataDir(dir), WithClock(clock.Now), WithLogger(log),
			WithHeartbeatTimeouts(24*time.Hour, 48*time.Hour), WithAsyncBackoff(10 * time.Millisecond)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// A function, through the registry of today.
	s0 := open(testLogger(t))
	spec := api.FunctionSpec{Name: "f", Image: "sha256:" + strings.Repeat("a", 64), MemoryMB: 128, Timeout: api.Duration(time.Second)}
	if _, _, err := s0.reg.put(spec); err != nil {
		t.Fatal(err)
	}
	if err := s0.Close(); err != nil {
		t.Fatal(err)
	}
	// The function stays in JetStream's registry; the old queue is added
	// as a folder of the bbolt layout had it.
	// The old queue, written as the bbolt code wrote it.
	t0 := time.Date(2025, 1, 2, 3, 0, 0, 0, time.UTC)
	prior := api.AsyncAttempt{At: t0.Add(time.Second), RequestID: "r-old", Agent: "old-agent", Error: "500 InternalError: before the upgrade"}
	events := []asyncEvent{
		{ID: "11111111-1111-4111-8111-111111111111", Function: "f", Version: 1, Payload: json.RawMessage(`{"n":"ok"}`), EnqueuedAt: t0, Source: sourceEvent},
		{ID: "22222222-2222-4222-8222-222222222222", Function: "f", Version: 1, Payload: json.RawMessage(`{"n":"fail"}`), EnqueuedAt: t0, Source: sourceSchedule,
			Attempts: []api.AsyncAttempt{prior}},
	}
	dead := []api.DeadLetter{
		{EventID: "33333333-3333-4333-8333-333333333333", Function: "f", Version: 1, Payload: json.RawMessage(`{"d":1}`), EnqueuedAt: t0, DeadAt: t0.Add(time.Minute),
			Source: sourceEvent, Attempts: []api.AsyncAttempt{prior, prior, prior}},
		{EventID: "44444444-4444-4444-8444-444444444444", Function: "gone", Version: 3, EnqueuedAt: t0, DeadAt: t0.Add(2 * time.Minute),
			Source: sourceEvent, Attempts: []api.AsyncAttempt{prior}},
	}
	db, err := bolt.Open(filepath.Join(dir, "amber.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	put := func(bucket []byte, vals ...any) {
		t.Helper()
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(bucket)
			if err != nil {
				return err
			}
			for _, v := range vals {
				data, _ := json.Marshal(v)
				seq, _ := b.NextSequence()
				if err := b.Put(binary.BigEndian.AppendUint64(nil, seq), data); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	put(bucketAsyncQueue, events[0], events[1])
	put(bucketAsyncDead, dead[0], dead[1])
	put(bucketAsyncQueue, map[string]any{"id": "", "function": "Bad Name"}) // cannot be imported
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	var logs syncBuffer
	s1 := open(slog.New(slog.NewTextHandler(&logs, nil)), WithStartGrace(20*time.Second))
	ag := newFakeAgent(t, "a1")
	ag.setReply(func(w http.ResponseWriter, r *http.Request, p []byte) {
		if strings.Contains(string(p), "fail") {
			failingReply("still failing")(w, r, p)
			return
		}
		okReply("a1")(w, r, p)
	})
	if err := s1.heartbeat(api.Heartbeat{Name: "a1", URL: ag.srv.URL, CapacityMB: 4096}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), `msg="imported from bbolt" part=async`) ||
		!strings.Contains(logs.String(), "events=2 dead_letters=2 skipped=1") {
		t.Fatalf("no import line in the log:\n%s", logs.String())
	}
	var dls []api.DeadLetter
	waitFor(t, "imported events delivered or dead", func() bool {
		p, _ := s1.pendingEvents()
		dls, _ = s1.deadLetters("")
		return p["f"] == 0 && len(dls) == 3
	})
	ok := 0
	for _, r := range ag.got() {
		if string(r.Payload) == `{"n":"ok"}` {
			ok++
		}
	}
	if ok != 1 {
		t.Fatalf("imported event delivered %d times, want 1", ok)
	}
	// The two imported dead letters as they were, then the one that failed
	// again: its attempt from before the upgrade comes first.
	sortDead(dls)
	for i, want := range dead {
		if got := dls[i]; string(mustJSON(t, got)) != string(mustJSON(t, want)) {
			t.Fatalf("imported dead letter %d:\n got %s\nwant %s", i, mustJSON(t, got), mustJSON(t, want))
		}
	}
	last := dls[2]
	if last.EventID != events[1].ID || last.Source != sourceSchedule || len(last.Attempts) != 3 || last.Attempts[0] != prior ||
		!strings.Contains(last.Attempts[2].Error, "still failing") {
		t.Fatalf("dead letter of the failing imported event: %+v", last)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	// Started again: nothing is imported twice.
	logs = syncBuffer{}
	s2 := open(slog.New(slog.NewTextHandler(&logs, nil)))
	defer s2.Close()
	if strings.Contains(logs.String(), "imported from bbolt") {
		t.Fatalf("imported again:\n%s", logs.String())
	}
	if p, _ := s2.pendingEvents(); len(p) != 0 {
		t.Fatalf("pending after restart %v", p)
	}
	if dl, _ := s2.deadLetters(""); len(dl) != 3 {
		t.Fatalf("%d dead letters after restart, want 3", len(dl))
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sortDead(dls []api.DeadLetter) {
	for i := 1; i < len(dls); i++ {
		for j := i; j > 0 && dls[j].DeadAt.Before(dls[j-1].DeadAt); j-- {
			dls[j], dls[j-1] = dls[j-1], dls[j]
		}
	}
}
