package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/amberfn/amber/api"
)

// startSchedulers starts n schedulers whose embedded NATS nodes join one
// cluster (each lists the others as peers), each behind its own HTTP
// server, on one fake clock.
func startSchedulers(t *testing.T, n int) []*testScheduler {
	t.Helper()
	clock := newFakeClock()
	routes := make([]string, n)
	for i := range routes {
		routes[i] = freeAddr(t)
	}
	out := make([]*testScheduler, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		var peers []string
		for j, r := range routes {
			if j != i {
				peers = append(peers, r)
			}
		}
		dir := t.TempDir()
		// Each New waits for JetStream, which needs its peers: start them together.
		wg.Go(func() {
			s, err := New(WithDataDir(dir), WithClock(clock.Now), WithLogger(testLogger(t)), WithStartGrace(0), WithToken("tok"),
				WithNATS(NATSConfig{Dir: filepath.Join(dir, "nats"), Name: fmt.Sprintf("sched-%d", i+1), ClusterListen: routes[i], Peers: peers}))
			errs[i] = err
			if err == nil {
				out[i] = &testScheduler{Scheduler: s, dir: dir, clock: clock, token: "tok"}
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			for _, ts := range out {
				if ts != nil {
					ts.Close()
				}
			}
			t.Fatalf("scheduler %d: %v", i+1, err)
		}
	}
	for _, ts := range out {
		ts.srv = httptest.NewServer(ts.Handler())
		t.Cleanup(func() {
			ts.srv.Close()
			if err := ts.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	// Heartbeats are relayed on plain NATS subjects: until every node
	// knows the others' subscriptions, a relay can be lost (an agent's
	// next heartbeat, a second later, repairs it). Tests that send one
	// heartbeat wait for that first: each scheduler's probe, sent until
	// every other scheduler has it, then forgotten.
	for i, from := range out {
		probe := fmt.Sprintf("probe-%d", i)
		bus := &heartbeatBus{nc: from.eng.Conn, origin: "probe", log: from.log}
		waitFor(t, "heartbeat relay between every scheduler", func() bool {
			bus.publish(api.Heartbeat{Name: probe, URL: "http://127.0.0.1:9"})
			time.Sleep(50 * time.Millisecond)
			for _, ts := range out {
				if _, ok := ts.agentGen(probe); !ok {
					return false
				}
			}
			return true
		})
	}
	time.Sleep(100 * time.Millisecond) // probes still in flight land
	for _, ts := range out {
		ts.mu.Lock()
		for i := range out {
			delete(ts.agents, fmt.Sprintf("probe-%d", i))
		}
		ts.mu.Unlock()
	}
	return out
}

func (ts *testScheduler) agentGen(name string) (uint64, bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	e, ok := ts.agents[name]
	if !ok {
		return 0, false
	}
	return e.gen, true
}

func (ts *testScheduler) agentState(name string) api.AgentState {
	for _, a := range ts.agentStatuses() {
		if a.Name == name {
			return a.State
		}
	}
	return ""
}

func heartbeatTo(t *testing.T, ts *testScheduler, hb api.Heartbeat) {
	t.Helper()
	b, _ := json.Marshal(hb)
	resp := ts.do(t, http.MethodPost, "/v1/agents/heartbeat", bytes.NewReader(b))
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		t.Fatalf("heartbeat to %s: %d %s", ts.srv.URL, resp.StatusCode, msg)
	}
}

// An agent heartbeats to one scheduler; every scheduler then knows it as
// ready, and the one it reached applied it once.
func TestHeartbeatReachesEveryScheduler(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test: skipped in -short")
	}
	ss := startSchedulers(t, 3)
	heartbeatTo(t, ss[0], api.Heartbeat{Name: "a1", URL: "http://127.0.0.1:9", CapacityMB: 1024,
		Instances: []api.Instance{{ID: "i1", Function: "hello", Version: 1, State: api.StateIdle}}})
	for i, ts := range ss {
		waitFor(t, fmt.Sprintf("agent a1 ready on scheduler %d", i+1), func() bool { return ts.agentState("a1") == api.AgentReady })
	}
	// The instance came along: placement on scheduler 3 sees the idle one.
	if got := ss[2].instancesByFunction()["hello"]; len(got) != 1 || got[0].Agent != "a1" {
		t.Errorf("scheduler 3 sees instances %+v, want a1's one", got)
	}
	// A marker published by scheduler 1's connection after the heartbeat
	// reaches scheduler 1 after its own echo: once the marker is in, the
	// echo was handled, and must not have been applied a second time.
	marker := &heartbeatBus{nc: ss[0].eng.Conn, origin: "someone-else", log: ss[0].log}
	marker.publish(api.Heartbeat{Name: "marker", URL: "http://127.0.0.1:9"})
	waitFor(t, "marker on scheduler 1", func() bool { _, ok := ss[0].agentGen("marker"); return ok })
	if gen, _ := ss[0].agentGen("a1"); gen != 1 {
		t.Errorf("scheduler 1 applied a1's heartbeat %d times, want once", gen)
	}
	// The agent moves to scheduler 2: scheduler 1 hears of it too.
	heartbeatTo(t, ss[1], api.Heartbeat{Name: "a1", URL: "http://127.0.0.1:9", CapacityMB: 2048})
	waitFor(t, "scheduler 1 sees the new capacity", func() bool {
		for _, a := range ss[0].agentStatuses() {
			if a.Name == "a1" && a.CapacityMB == 2048 {
				return true
			}
		}
		return false
	})
	// A bad heartbeat on the subject is refused, not applied.
	bad := &heartbeatBus{nc: ss[0].eng.Conn, origin: "someone-else", log: ss[0].log}
	bad.publish(api.Heartbeat{Name: "Bad Name!", URL: "http://127.0.0.1:9"})
	marker.publish(api.Heartbeat{Name: "marker2", URL: "http://127.0.0.1:9"})
	waitFor(t, "marker2 on scheduler 2", func() bool { _, ok := ss[1].agentGen("marker2"); return ok })
	if _, ok := ss[1].agentGen("Bad Name!"); ok {
		t.Error("a heartbeat with a bad name was applied")
	}
}

// The api client with every scheduler's URL keeps answering when the
// first one is gone, and GET /v1/cluster reports the engine's health.
func TestClusterEndpointAndFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test: skipped in -short")
	}
	ss := startSchedulers(t, 3)
	ctx := context.Background()
	c := api.NewClient(ss[0].srv.URL+","+ss[1].srv.URL, api.WithToken("tok"))
	cp, err := c.ControlPlane(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !cp.Embedded || cp.MetaLeader == "" || cp.Peers != 2 || cp.Replicas != 3 || cp.Server != "sched-1" {
		t.Errorf("control plane %+v: want embedded sched-1 with a meta leader, 2 peers, 3 replicas", cp)
	}
	heartbeatTo(t, ss[0], api.Heartbeat{Name: "a1", URL: "http://127.0.0.1:9", CapacityMB: 1024})
	waitFor(t, "a1 on scheduler 2", func() bool { return ss[1].agentState("a1") == api.AgentReady })
	ss[0].srv.Close() // connections to scheduler 1 are refused from now on
	agents, err := c.Agents(ctx)
	if err != nil || len(agents) != 1 || agents[0].Name != "a1" {
		t.Fatalf("agents through the client after scheduler 1 went: %+v %v", agents, err)
	}
}

// /metrics carries JetStream's figures: streams' messages and bytes,
// durable consumers' pending and ack-pending.
func TestJetStreamMetrics(t *testing.T) {
	ts := newTestScheduler(t, WithToken("tok"))
	ctx := context.Background()
	st, err := ts.eng.Stream(ctx, jetstream.StreamConfig{Name: "AMBER_TEST", Subjects: []string{"amber.test.>"}})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := ts.eng.JS.Publish(ctx, "amber.test.x", []byte("hello")); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "work", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cons.Fetch(1); err != nil { // one delivered, not acknowledged
		t.Fatal(err)
	}
	var body string
	waitFor(t, "consumer figures", func() bool {
		resp := ts.do(t, http.MethodGet, "/metrics", nil)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		return strings.Contains(body, `amber_jetstream_consumer_ack_pending{stream="AMBER_TEST",consumer="work"} 1`)
	})
	for _, want := range []string{
		"amber_jetstream_up 1",
		"amber_jetstream_meta_leader 1",
		`amber_jetstream_stream_messages{stream="AMBER_TEST"} 3`,
		`amber_jetstream_consumer_pending{stream="AMBER_TEST",consumer="work"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
	if !strings.Contains(body, `amber_jetstream_stream_bytes{stream="AMBER_TEST"} `) {
		t.Errorf("metrics lack the stream's bytes:\n%s", body)
	}
}

// Warmth (idle instances between two heartbeats) is billed by the
// scheduler the agent sent its heartbeats to, not again by every scheduler
// that hears them relayed.
func TestRelayedHeartbeatsBillNoWarmth(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test: skipped in -short")
	}
	ss := startSchedulers(t, 3)
	idle := []api.Instance{{ID: "i1", Function: "hello", Version: 1, State: api.StateIdle, MemoryMB: 128}}
	for range 2 {
		heartbeatTo(t, ss[0], api.Heartbeat{Name: "a1", URL: "http://127.0.0.1:9", CapacityMB: 1024, Instances: idle})
		ss[0].clock.Advance(5 * time.Second) // the clock all three share
	}
	heartbeatTo(t, ss[0], api.Heartbeat{Name: "a1", URL: "http://127.0.0.1:9", CapacityMB: 1024, Instances: idle})
	waitFor(t, "the third heartbeat relayed", func() bool { g, _ := ss[1].agentGen("a1"); return g >= 3 })
	waitFor(t, "the third heartbeat relayed", func() bool { g, _ := ss[2].agentGen("a1"); return g >= 3 })
	if w := ss[0].ledger.takeWarmth()["hello"]; w == nil || w.seconds != 10 {
		t.Fatalf("the receiving scheduler's warmth %+v, want 10 s", w)
	}
	for i, ts := range ss[1:] {
		if w := ts.ledger.takeWarmth(); len(w) != 0 {
			t.Errorf("scheduler %d billed relayed warmth: %+v", i+2, w["hello"])
		}
	}
}
