package placement

import (
	"errors"
	"fmt"
	"testing"

	"github.com/amberfn/amber/api"
)

func ready(name string, capMB, reservedMB, idle int) Candidate {
	return Candidate{Name: name, State: api.AgentReady, CapacityMB: capMB, ReservedMB: reservedMB, IdleInstances: idle}
}

func withSnapshot(c Candidate) Candidate { c.Snapshot = true; return c }

func TestPlace(t *testing.T) {
	req := Request{Function: "hello", Version: 3, MemoryMB: 256}
	tests := []struct {
		name       string
		req        Request
		cands      []Candidate
		wantAgent  string
		wantReason string
		wantErr    bool
	}{
		{
			name:       "idle instance beats more free memory",
			req:        req,
			cands:      []Candidate{ready("a", 8192, 0, 0), ready("b", 1024, 512, 1)},
			wantAgent:  "b",
			wantReason: ReasonIdleInstance,
		},
		{
			name:       "idle instance used even when memory is fully reserved",
			req:        req,
			cands:      []Candidate{ready("a", 512, 512, 1), ready("b", 512, 0, 0)},
			wantAgent:  "a",
			wantReason: ReasonIdleInstance,
		},
		{
			name:       "most unclaimed idle instances first",
			req:        req,
			cands:      []Candidate{ready("a", 4096, 0, 1), ready("b", 1024, 0, 3)},
			wantAgent:  "b",
			wantReason: ReasonIdleInstance,
		},
		{
			name:       "equal idle: more free memory",
			req:        req,
			cands:      []Candidate{ready("a", 4096, 0, 1), ready("b", 1024, 0, 1)},
			wantAgent:  "a",
			wantReason: ReasonIdleInstance,
		},
		{
			name:       "no idle: most free memory",
			req:        req,
			cands:      []Candidate{ready("a", 4096, 3072, 0), ready("b", 2048, 0, 0), ready("c", 1024, 0, 0)},
			wantAgent:  "b",
			wantReason: ReasonFreeMemory,
		},
		{
			name:       "no idle: a snapshot holder beats more free memory",
			req:        req,
			cands:      []Candidate{ready("a", 8192, 0, 0), withSnapshot(ready("b", 1024, 0, 0))},
			wantAgent:  "b",
			wantReason: ReasonSnapshot,
		},
		{
			name:       "an idle instance beats a snapshot",
			req:        req,
			cands:      []Candidate{withSnapshot(ready("a", 8192, 0, 0)), ready("b", 1024, 0, 1)},
			wantAgent:  "b",
			wantReason: ReasonIdleInstance,
		},
		{
			name:       "a snapshot holder without the memory is passed over",
			req:        req,
			cands:      []Candidate{withSnapshot(ready("a", 512, 400, 0)), ready("b", 1024, 0, 0)},
			wantAgent:  "b",
			wantReason: ReasonFreeMemory,
		},
		{
			name:       "two snapshot holders: more free memory",
			req:        req,
			cands:      []Candidate{withSnapshot(ready("a", 1024, 0, 0)), withSnapshot(ready("b", 4096, 0, 0)), ready("c", 8192, 0, 0)},
			wantAgent:  "b",
			wantReason: ReasonSnapshot,
		},
		{
			name:       "reserved memory counts",
			req:        req,
			cands:      []Candidate{ready("a", 4096, 4000, 0), ready("b", 512, 0, 0)},
			wantAgent:  "b",
			wantReason: ReasonFreeMemory,
		},
		{
			name:      "exactly enough free",
			req:       req,
			cands:     []Candidate{ready("a", 512, 256, 0)},
			wantAgent: "a", wantReason: ReasonFreeMemory,
		},
		{
			name:    "not enough free anywhere",
			req:     req,
			cands:   []Candidate{ready("a", 512, 300, 0), ready("b", 128, 0, 0)},
			wantErr: true,
		},
		{
			name: "suspect and gone agents skipped, even with idle instances",
			req:  req,
			cands: []Candidate{
				{Name: "a", State: api.AgentSuspect, CapacityMB: 8192, IdleInstances: 2},
				{Name: "b", State: api.AgentGone, CapacityMB: 8192, IdleInstances: 2},
				ready("c", 512, 0, 0),
			},
			wantAgent:  "c",
			wantReason: ReasonFreeMemory,
		},
		{
			name: "only suspect and gone agents",
			req:  req,
			cands: []Candidate{
				{Name: "a", State: api.AgentSuspect, CapacityMB: 8192},
				{Name: "b", State: api.AgentGone, CapacityMB: 8192},
			},
			wantErr: true,
		},
		{
			name:    "no agents",
			req:     req,
			wantErr: true,
		},
		{
			name:       "excluded agent skipped",
			req:        Request{Function: "hello", Version: 3, MemoryMB: 256, Exclude: map[string]bool{"a": true}},
			cands:      []Candidate{ready("a", 8192, 0, 1), ready("b", 1024, 0, 0)},
			wantAgent:  "b",
			wantReason: ReasonFreeMemory,
		},
		{
			name:       "tie goes to the home agent",
			req:        req,
			cands:      []Candidate{ready("a", 1024, 0, 0), ready("b", 1024, 0, 0), ready("c", 1024, 0, 0)},
			wantAgent:  Home("hello", "a", "b", "c"),
			wantReason: ReasonFreeMemory,
		},
		{
			name:       "idle tie goes to the home agent",
			req:        req,
			cands:      []Candidate{ready("a", 1024, 0, 1), ready("b", 1024, 0, 1), ready("c", 1024, 0, 1)},
			wantAgent:  Home("hello", "a", "b", "c"),
			wantReason: ReasonIdleInstance,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Place(tt.req, tt.cands)
			if tt.wantErr {
				if !errors.Is(err, api.ErrUnavailable) {
					t.Fatalf("Place = %+v, %v; want ErrUnavailable", p, err)
				}
				want := fmt.Sprintf("no ready agent with %d MB free for function %s", tt.req.MemoryMB, tt.req.Function)
				if got := err.Error(); len(got) < len(want) || got[:len(want)] != want {
					t.Errorf("error %q; want it to start with %q", got, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Place: %v", err)
			}
			if p.Agent != tt.wantAgent || p.Reason != tt.wantReason {
				t.Errorf("Place = %+v; want agent %s reason %s", p, tt.wantAgent, tt.wantReason)
			}
		})
	}
}

// TestPlaceHomeStable: the home agent does not depend on candidate order,
// spreads functions over agents, and keeps a function's home when another
// agent leaves.
func TestPlaceHomeStable(t *testing.T) {
	agents := []string{"n1", "n2", "n3", "n4"}
	homes := map[string]int{}
	for i := range 200 {
		fn := fmt.Sprintf("fn-%d", i)
		var fwd, rev []Candidate
		for _, a := range agents {
			fwd = append(fwd, ready(a, 1024, 0, 0))
		}
		for j := len(agents) - 1; j >= 0; j-- {
			rev = append(rev, ready(agents[j], 1024, 0, 0))
		}
		p1, err1 := Place(Request{Function: fn, MemoryMB: 128}, fwd)
		p2, err2 := Place(Request{Function: fn, MemoryMB: 128}, rev)
		if err1 != nil || err2 != nil || p1.Agent != p2.Agent {
			t.Fatalf("%s: %v/%v, %v/%v: home depends on order", fn, p1, err1, p2, err2)
		}
		homes[p1.Agent]++
		// Remove an agent that is not the home: the home stays.
		var without []Candidate
		dropped := false
		for _, c := range fwd {
			if c.Name != p1.Agent && !dropped {
				dropped = true // drop the first non-home agent
				continue
			}
			without = append(without, c)
		}
		if p3, _ := Place(Request{Function: fn, MemoryMB: 128}, without); p3.Agent != p1.Agent {
			t.Fatalf("%s: home moved from %s to %s when another agent left", fn, p1.Agent, p3.Agent)
		}
	}
	for _, a := range agents {
		if homes[a] < 20 {
			t.Errorf("agent %s is home to %d of 200 functions; want a fair spread (%v)", a, homes[a], homes)
		}
	}
}

// TestPlaceAtCap: an agent at its share of max_instances takes an
// invocation only on an idle instance.
func TestPlaceAtCap(t *testing.T) {
	req := Request{Function: "hello", Version: 1, MemoryMB: 128}
	atCap := func(c Candidate) Candidate { c.AtCap = true; return c }
	tests := []struct {
		name       string
		cands      []Candidate
		wantAgent  string
		wantReason string
	}{
		{"at cap skipped for memory", []Candidate{atCap(ready("a", 8192, 0, 0)), ready("b", 512, 0, 0)}, "b", ReasonFreeMemory},
		{"at cap with an idle instance", []Candidate{atCap(ready("a", 8192, 8192, 1)), ready("b", 8192, 0, 0)}, "a", ReasonIdleInstance},
		{"all at cap", []Candidate{atCap(ready("a", 8192, 0, 0)), atCap(ready("b", 8192, 0, 0))}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Place(req, tt.cands)
			if tt.wantAgent == "" {
				if !errors.Is(err, api.ErrUnavailable) {
					t.Fatalf("placed %+v, %v; want ErrUnavailable", p, err)
				}
				return
			}
			if err != nil || p.Agent != tt.wantAgent || p.Reason != tt.wantReason {
				t.Fatalf("placed %+v, %v; want %s/%s", p, err, tt.wantAgent, tt.wantReason)
			}
		})
	}
}
