package tui

import (
	"math"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/amberfn/amber/api"
)

func sameRowsContent(a, b []row) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.key != y.key || len(x.cells) != len(y.cells) || len(x.num) != len(y.num) || len(x.tones) != len(y.tones) {
			return false
		}
		for j := range x.cells {
			if x.cells[j] != y.cells[j] || x.tones[j] != y.tones[j] {
				return false
			}
		}
		for j := range x.num {
			if math.Float64bits(x.num[j]) != math.Float64bits(y.num[j]) && !(math.IsNaN(x.num[j]) && math.IsNaN(y.num[j])) {
				return false
			}
		}
	}
	return true
}

// changed returns a copy of the fixture's state i changed by f.
func changed(i int, f func(st *api.ClusterState)) streamDataMsg {
	st := testStateAt(i)
	st.Time = st.Time.Add(time.Second)
	f(st)
	return streamDataMsg{msg: api.StreamMessage{State: st}}
}

// TestIncrementalIntakeMatchesFull drives one console that reuses the
// rows of what did not change and one that builds every table anew with
// the same messages, and compares their tables after every message and
// every view at the end.
func TestIncrementalIntakeMatchesFull(t *testing.T) {
	quiet := func() []tea.Msg {
		var msgs []tea.Msg
		for _, st := range quietStates(24) {
			msgs = append(msgs, streamDataMsg{msg: api.StreamMessage{State: st}})
		}
		return msgs
	}
	tests := []struct {
		name    string
		patched int // states at least that the incremental console patches
		msgs    func() []tea.Msg
	}{
		{"fixture", 3, allStates},
		{"quiet 1000 functions", 20, quiet},
		{"one thing at a time", 10, func() []tea.Msg {
			msgs := allStates()
			return append(msgs,
				changed(6, func(st *api.ClusterState) { st.Functions[1].Instances[0].State = api.StateBusy }),
				changed(6, func(st *api.ClusterState) { st.Functions[0].Pool.EffectiveMinWarm = 3 }),
				changed(6, func(st *api.ClusterState) { st.Agents[0].State = api.AgentGone }),
				changed(6, func(st *api.ClusterState) { st.Functions[2].Stats.Invocations += 50 }),
				press("2"), press("s"), press("s"), press("s"), press("s"), press("s"), press("s"), press("s"),
				changed(6, func(st *api.ClusterState) { st.Functions[0].Stats.Invocations += 5000 }),
				press("/"), press("h"), press("enter"),
				changed(6, func(st *api.ClusterState) { st.Functions[1].Latency[api.StartWarm].Observe(5) }),
				press("esc"), press("enter"),
				changed(6, func(st *api.ClusterState) { st.Functions[1].Instances = st.Functions[1].Instances[1:] }),
				changed(6, func(st *api.ClusterState) { st.Functions = st.Functions[:2] }), // a function goes
				changed(6, func(st *api.ClusterState) { st.Agents = st.Agents[:1] }),       // an agent goes
				billMsg{period: 1, bill: testBill()},
				changed(6, func(st *api.ClusterState) { st.Functions[0].Pool.EffectiveMinWarm = 4 }),
				poolSetMsg{name: "hello", want: api.PoolChange{}, status: &api.PoolStatus{Function: "hello", PoolSettings: api.PoolSettings{MinWarm: 5}, EffectiveMinWarm: 5}},
				changed(6, func(st *api.ClusterState) { st.Functions[1].Stats.Errors++ }),
				press("p"), changed(6, func(*api.ClusterState) {}), press("p"),
			)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			full, _ := send(t, newTestModel(nil), size(120, 40))
			full.fullRebuild = true
			inc, _ := send(t, newTestModel(nil), size(120, 40))
			for n, msg := range tc.msgs() {
				full, _ = send(t, full, msg)
				inc, _ = send(t, inc, msg)
				for _, tb := range []int{tblAgents, tblTop, tblFunctions, tblPools, tblBill, tblInstances} {
					if !sameRowsContent(full.rows[tb], inc.rows[tb]) {
						t.Fatalf("message %d (%T): table %d differs\nfull: %v\nincremental: %v", n, msg, tb, full.rows[tb], inc.rows[tb])
					}
					if full.tables[tb] != inc.tables[tb] {
						t.Fatalf("message %d (%T): table %d's cursor: full %+v, incremental %+v", n, msg, tb, full.tables[tb], inc.tables[tb])
					}
				}
			}
			if inc.in.patched < tc.patched || full.in.patched != 0 {
				t.Errorf("states patched: incremental %d (want at least %d), full %d (want 0)", inc.in.patched, tc.patched, full.in.patched)
			}
			for _, v := range []string{"1", "2", "3", "4", "5", "6"} {
				full, _ = send(t, full, press(v), renderMsg{})
				inc, _ = send(t, inc, press(v), renderMsg{})
				if a, b := full.View(), inc.View(); a != b {
					t.Errorf("view %s differs\nfull:\n%s\nincremental:\n%s", v, a, b)
				}
			}
		})
	}
}
