package scheduler

import (
	"net/http"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

func TestDrainStopsNewPlacements(t *testing.T) {
	ts := newTestScheduler(t)
	a1, a2 := newFakeAgent(t, "a1"), newFakeAgent(t, "a2")
	ts.heartbeat(t, agentHB("a1", a1.srv.URL, 8192))
	ts.heartbeat(t, agentHB("a2", a2.srv.URL, 1024))
	ts.deploy(t, "hello", 128)
	// a1 has the most free memory: it takes the work until drained.
	ts.do(t, "POST", "/v1/functions/hello/invoke", nil)
	if len(a1.got()) != 1 {
		t.Fatalf("a1 got %d requests before the drain", len(a1.got()))
	}
	decode[map[string]any](t, ts.do(t, "POST", "/v1/agents/a1/drain", nil), http.StatusOK)
	for range 3 {
		ts.do(t, "POST", "/v1/functions/hello/invoke", nil)
	}
	if len(a1.got()) != 1 || len(a2.got()) != 3 {
		t.Errorf("after drain: a1 %d, a2 %d requests; want 1 and 3", len(a1.got()), len(a2.got()))
	}
	for _, a := range decode[[]api.AgentStatus](t, ts.do(t, "GET", "/v1/agents", nil), http.StatusOK) {
		if a.Name == "a1" && a.State != api.AgentDraining {
			t.Errorf("a1 state %s, want draining", a.State)
		}
	}
	// Still draining after its next heartbeat; resumed on request.
	ts.heartbeat(t, agentHB("a1", a1.srv.URL, 8192))
	ts.do(t, "POST", "/v1/functions/hello/invoke", nil)
	if len(a1.got()) != 1 {
		t.Errorf("a heartbeat ended the drain")
	}
	decode[map[string]any](t, ts.do(t, "DELETE", "/v1/agents/a1/drain", nil), http.StatusOK)
	ts.do(t, "POST", "/v1/functions/hello/invoke", nil)
	if len(a1.got()) != 2 {
		t.Errorf("after undrain a1 got %d requests, want 2", len(a1.got()))
	}
	errorBody(t, ts.do(t, "POST", "/v1/agents/nope/drain", nil), http.StatusNotFound)
}

func agentState(t *testing.T, ts *testScheduler, name string) api.AgentState {
	t.Helper()
	for _, a := range decode[[]api.AgentStatus](t, ts.do(t, "GET", "/v1/agents", nil), http.StatusOK) {
		if a.Name == name {
			return a.State
		}
	}
	t.Fatalf("agent %s not listed", name)
	return ""
}

// An operator's drain is on disk: a restarted scheduler keeps it, and the
// agent's heartbeats (even from a restarted agent) do not end it.
func TestDrainSurvivesSchedulerRestart(t *testing.T) {
	dir := t.TempDir()
	a1 := newFakeAgent(t, "a1")
	first := newTestScheduler(t, WithDataDir(dir))
	first.heartbeat(t, agentHB("a1", a1.srv.URL, 8192))
	first.heartbeat(t, agentHB("a2", a1.srv.URL, 8192))
	decode[map[string]any](t, first.do(t, "POST", "/v1/agents/a1/drain", nil), http.StatusOK)
	decode[map[string]any](t, first.do(t, "POST", "/v1/agents/a2/drain", nil), http.StatusOK)
	decode[map[string]any](t, first.do(t, "DELETE", "/v1/agents/a2/drain", nil), http.StatusOK)
	first.srv.Close()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	second := newTestScheduler(t, WithDataDir(dir))
	second.heartbeat(t, agentHB("a1", a1.srv.URL, 8192))
	second.heartbeat(t, agentHB("a2", a1.srv.URL, 8192))
	if st := agentState(t, second, "a1"); st != api.AgentDraining {
		t.Errorf("a1 after the restart: %s, want draining", st)
	}
	if st := agentState(t, second, "a2"); st != api.AgentReady {
		t.Errorf("a2 (undrained before the restart): %s, want ready", st)
	}
	decode[map[string]any](t, second.do(t, "DELETE", "/v1/agents/a1/drain", nil), http.StatusOK)
	if st := agentState(t, second, "a1"); st != api.AgentReady {
		t.Errorf("a1 after undrain: %s, want ready", st)
	}
}

// A stopping agent says so in its heartbeat; its restarted self, which
// does not, takes work again.
func TestShuttingDownAgentTakesNoWork(t *testing.T) {
	ts := newTestScheduler(t)
	a1, a2 := newFakeAgent(t, "a1"), newFakeAgent(t, "a2")
	ts.heartbeat(t, agentHB("a1", a1.srv.URL, 8192))
	ts.heartbeat(t, agentHB("a2", a2.srv.URL, 1024))
	ts.deploy(t, "hello", 128)
	stopping := agentHB("a1", a1.srv.URL, 8192)
	stopping.ShuttingDown = true
	ts.heartbeat(t, stopping)
	if st := agentState(t, ts, "a1"); st != api.AgentDraining {
		t.Fatalf("stopping a1: %s, want draining", st)
	}
	ts.do(t, "POST", "/v1/functions/hello/invoke", nil)
	if len(a1.got()) != 0 || len(a2.got()) != 1 {
		t.Fatalf("while a1 stops: a1 %d, a2 %d requests; want 0 and 1", len(a1.got()), len(a2.got()))
	}
	ts.heartbeat(t, agentHB("a1", a1.srv.URL, 8192)) // restarted
	ts.do(t, "POST", "/v1/functions/hello/invoke", nil)
	if len(a1.got()) != 1 {
		t.Errorf("restarted a1 got %d requests, want 1", len(a1.got()))
	}
}

// Right after a start, an invocation waits for agents to re-register
// instead of being refused.
func TestStartGraceWaitsForAgents(t *testing.T) {
	ts := newTestScheduler(t, WithStartGrace(time.Minute))
	ts.deploy(t, "hello", 128)
	a1 := newFakeAgent(t, "a1")
	go func() {
		time.Sleep(200 * time.Millisecond)
		ts.heartbeat(t, agentHB("a1", a1.srv.URL, 8192))
	}()
	resp := ts.do(t, "POST", "/v1/functions/hello/invoke", nil)
	if resp.StatusCode != http.StatusOK || len(a1.got()) != 1 {
		t.Fatalf("invoke during the start grace: %d, agent got %d", resp.StatusCode, len(a1.got()))
	}
}
