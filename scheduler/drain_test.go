package scheduler

import (
	"net/http"
	"testing"

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
