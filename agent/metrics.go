package agent

import (
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/amberfn/amber/api"
)

// handleMetrics serves the agent's figures in the Prometheus text format:
// node CPU, memory and load, and per function its instances by state,
// the invocations they served and their peak memory.
func (a *Agent) handleMetrics(w http.ResponseWriter, _ *http.Request) {
	type fnFig struct {
		states      map[api.InstanceState]int
		invocations int64
		peakMB      int
	}
	figs := map[string]*fnFig{}
	for _, in := range a.Instances() {
		f := figs[in.Function]
		if f == nil {
			f = &fnFig{states: map[api.InstanceState]int{}}
			figs[in.Function] = f
		}
		f.states[in.State]++
		f.invocations += in.Invocations
		f.peakMB = max(f.peakMB, in.MaxMemoryMB)
	}
	names := make([]string, 0, len(figs))
	for n := range figs {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	metric := func(name, typ, help string) { fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ) }
	st := a.stats()
	agent := fmt.Sprintf("agent=%q", a.name)
	metric("amber_agent_cpu_percent", "gauge", "Host CPU busy share since the previous reading.")
	fmt.Fprintf(&b, "amber_agent_cpu_percent{%s} %g\n", agent, st.CPUPercent)
	metric("amber_agent_memory_used_bytes", "gauge", "Host memory in use.")
	fmt.Fprintf(&b, "amber_agent_memory_used_bytes{%s} %d\n", agent, st.MemUsedBytes)
	metric("amber_agent_load1", "gauge", "Host load average over one minute.")
	fmt.Fprintf(&b, "amber_agent_load1{%s} %g\n", agent, st.Load1)
	metric("amber_agent_capacity_mb", "gauge", "Memory this agent offers to instances.")
	fmt.Fprintf(&b, "amber_agent_capacity_mb{%s} %d\n", agent, a.capacityMB)
	metric("amber_agent_function_instances", "gauge", "Instances of a function by state.")
	for _, n := range names {
		states := make([]string, 0, len(figs[n].states))
		for s := range figs[n].states {
			states = append(states, string(s))
		}
		sort.Strings(states)
		for _, s := range states {
			fmt.Fprintf(&b, "amber_agent_function_instances{%s,function=%q,state=%q} %d\n", agent, n, s, figs[n].states[api.InstanceState(s)])
		}
	}
	metric("amber_agent_function_invocations", "gauge", "Invocations served by the function's live instances.")
	for _, n := range names {
		fmt.Fprintf(&b, "amber_agent_function_invocations{%s,function=%q} %d\n", agent, n, figs[n].invocations)
	}
	metric("amber_agent_function_peak_memory_mb", "gauge", "Highest peak memory among the function's live instances.")
	for _, n := range names {
		fmt.Fprintf(&b, "amber_agent_function_peak_memory_mb{%s,function=%q} %d\n", agent, n, figs[n].peakMB)
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write([]byte(b.String()))
}
