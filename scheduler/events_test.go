package scheduler

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

func TestEventsAndStream(t *testing.T) {
	ts := newTestScheduler(t, WithToken("tok"))
	c := api.NewClient(ts.srv.URL, api.WithToken("tok"))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stream, err := c.Stream(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	first := <-stream
	if first.State == nil {
		t.Fatalf("first message carries no state: %+v", first)
	}
	ag := newFakeAgent(t, "a1")
	ts.heartbeat(t, agentHB("a1", ag.srv.URL, 1024))
	ts.deploy(t, "hello", 128)
	want := map[string]bool{api.EventAgentRegistered: false, api.EventDeployed: false}
	for !want[api.EventAgentRegistered] || !want[api.EventDeployed] {
		select {
		case m, ok := <-stream:
			if !ok {
				t.Fatal("stream closed")
			}
			for _, ev := range m.Events {
				want[ev.Kind] = true
			}
		case <-ctx.Done():
			t.Fatalf("events seen: %v", want)
		}
	}
	// Suspect agents show up as an event when the clock passes the timeout.
	ts.clock.Advance(6 * time.Second)
	evs, err := c.Events(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, ev := range evs {
		kinds = append(kinds, ev.Kind)
		if ev.Seq <= 0 || ev.Time.IsZero() || ev.Message == "" {
			t.Errorf("incomplete event %+v", ev)
		}
	}
	if len(kinds) != 3 || kinds[2] != api.EventAgentState {
		t.Errorf("events %v, want registered, deployed, agent state", kinds)
	}
	later, err := c.Events(ctx, evs[len(evs)-1].Seq)
	if err != nil || len(later) != 0 {
		t.Errorf("events since the last: %v %v", later, err)
	}
	errorBody(t, ts.do(t, "GET", "/v1/events?since=x", nil), http.StatusBadRequest)
}

func TestLatencyHistogramsPerStartKind(t *testing.T) {
	ts := newTestScheduler(t)
	ag := newFakeAgent(t, "a1")
	ts.heartbeat(t, agentHB("a1", ag.srv.URL, 1024))
	ts.deploy(t, "hello", 128)
	for range 3 {
		ts.do(t, "POST", "/v1/functions/hello/invoke", nil)
	}
	st := decode[api.FunctionStatus](t, ts.do(t, "GET", "/v1/functions/hello", nil), http.StatusOK)
	var n int64
	for _, h := range st.Latency {
		n += h.Count
	}
	if n != 3 {
		t.Errorf("latency histograms count %d invocations, want 3: %+v", n, st.Latency)
	}
}
