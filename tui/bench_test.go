package tui

import (
	"fmt"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/amberfn/amber/api"
)

// bigState is 1,000 functions on 50 agents, each function with
// histograms for every start kind.
func bigState(step int) *api.ClusterState {
	st := &api.ClusterState{Time: fixedNow.Add(time.Duration(step) * 10 * time.Second)}
	for a := range 50 {
		st.Agents = append(st.Agents, api.AgentStatus{
			Heartbeat: api.Heartbeat{Name: fmt.Sprintf("node-%02d", a), CapacityMB: 65536,
				Stats: api.NodeStats{CPUPercent: float64((a*7 + step) % 100), MemUsedBytes: 8 * gib, MemTotalBytes: 64 * gib}},
			State: api.AgentReady,
		})
	}
	for f := range 1000 {
		name := fmt.Sprintf("fn-%04d", f)
		var ins []api.Instance
		for i := range 3 {
			ins = append(ins, api.Instance{ID: fmt.Sprintf("%s-%d", name, i), Function: name, Agent: fmt.Sprintf("node-%02d", (f+i)%50), State: api.StateIdle, MemoryMB: 256})
		}
		st.Functions = append(st.Functions, api.FunctionStatus{
			Function:  api.Function{FunctionSpec: api.FunctionSpec{Name: name, MemoryMB: 256}, Version: 1},
			Instances: ins,
			Stats:     api.FunctionStats{Invocations: int64(f*100 + step*f), ColdStarts: int64(f), WarmStarts: int64(f * 99), GBSeconds: float64(f)},
			Pool:      api.PoolStatus{PoolSettings: api.PoolSettings{MinWarm: f % 3}, EffectiveMinWarm: f % 3},
			Latency: map[api.StartKind]*api.Histogram{
				api.StartWarm: observe(200+step, 0.5, 20), api.StartCold: observe(5, 80, 300), api.StartRestore: observe(5, 30, 90),
			},
		})
	}
	return st
}

// benchView measures one frame of a view with 1,000 functions and 50
// agents (goal: at most 10 ms a frame).
func benchView(b *testing.B, keys ...string) {
	m, _ := send(b, newTestModel(nil), size(160, 50))
	for i := range 8 {
		m, _ = send(b, m, streamDataMsg{msg: api.StreamMessage{State: bigState(i)}})
	}
	var msgs []tea.Msg
	for _, k := range keys {
		msgs = append(msgs, press(k))
	}
	m, _ = send(b, m, msgs...)
	b.ResetTimer()
	for b.Loop() {
		m.touch()
		_ = m.View()
	}
}

func BenchmarkRenderFunctions(b *testing.B) { benchView(b, "2", "s", "s", "s", "s", "s", "s", "s") }
func BenchmarkRenderLatency(b *testing.B)   { benchView(b, "4") }
func BenchmarkRenderOverview(b *testing.B)  { benchView(b, "1") }

// BenchmarkApplyState is the cost of taking one stream state in.
func BenchmarkApplyState(b *testing.B) {
	m, _ := send(b, newTestModel(nil), size(160, 50))
	states := []*api.ClusterState{bigState(0), bigState(1)}
	i := 0
	for b.Loop() {
		st := *states[i%2]
		st.Time = fixedNow.Add(time.Duration(i) * time.Second)
		m, _ = send(b, m, streamDataMsg{msg: api.StreamMessage{State: &st}})
		i++
	}
}

// quietStates are n successive states of 1,000 functions on 50 agents in
// which little changes from one to the next: 10 busy functions take
// invocations (counters and warm histograms move) and 5 agents' CPU moves;
// the rest stays as it was. Each state is built on its own, as decoding
// the stream builds it.
func quietStates(n int) []*api.ClusterState {
	out := make([]*api.ClusterState, n)
	for s := range n {
		st := bigState(0)
		st.Time = fixedNow.Add(time.Duration(s) * time.Second)
		for a := range 5 {
			st.Agents[a].Stats.CPUPercent = float64((a*7 + s) % 100)
		}
		for f := range 10 {
			fs := &st.Functions[f*97]
			fs.Stats.Invocations += int64(s * 20)
			fs.Stats.WarmStarts += int64(s * 20)
			fs.Latency[api.StartWarm] = observe(200+s*20, 0.5, 20)
		}
		out[s] = st
	}
	return out
}

// BenchmarkApplyStateQuiet is the cost of taking in one stream state in
// which little changed, with the console building every table anew
// (full: the old path) and reusing the rows of what did not change
// (incremental). The sub-benchmarks give each path's time and
// allocations; interleaved takes one state into each console in turn, so
// that a busy machine slows both alike, and reports both times and their
// ratio.
func BenchmarkApplyStateQuiet(b *testing.B) {
	states := quietStates(64)
	start := func(b *testing.B, full bool) Model {
		m, _ := send(b, newTestModel(nil), size(160, 50))
		m.fullRebuild = full
		for i := range 20 { // past the first states: sparklines filled, rates known
			m, _ = send(b, m, streamDataMsg{msg: api.StreamMessage{State: states[i]}})
		}
		return m
	}
	next := func(i int) tea.Msg {
		st := *states[i%len(states)]
		st.Time = fixedNow.Add(time.Duration(i) * time.Second)
		return streamDataMsg{msg: api.StreamMessage{State: &st}}
	}
	for _, full := range []bool{true, false} {
		name := "incremental"
		if full {
			name = "full"
		}
		b.Run(name, func(b *testing.B) {
			m := start(b, full)
			i := 20
			b.ReportAllocs()
			c0 := cpuTime()
			for b.Loop() {
				m, _ = send(b, m, next(i))
				i++
			}
			b.ReportMetric(float64((cpuTime()-c0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
	b.Run("interleaved", func(b *testing.B) {
		full, inc := start(b, true), start(b, false)
		var tFull, tInc time.Duration
		i := 20
		for b.Loop() {
			msg := next(i)
			t0 := time.Now()
			full, _ = send(b, full, msg)
			t1 := time.Now()
			inc, _ = send(b, inc, msg)
			tInc += time.Since(t1)
			tFull += t1.Sub(t0)
			i++
		}
		n := float64(b.N)
		b.ReportMetric(float64(tFull.Nanoseconds())/n, "full-ns/state")
		b.ReportMetric(float64(tInc.Nanoseconds())/n, "incremental-ns/state")
		b.ReportMetric(float64(tFull)/float64(tInc), "full/incremental")
	})
}
