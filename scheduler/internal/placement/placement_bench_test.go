package placement

import (
	"fmt"
	"testing"

	"github.com/amberfn/amber/api"
)

// BenchmarkPlace measures placement decisions over 100 agents for 1,000
// functions, a tenth of the agents holding an idle instance of the
// function placed: go test -run '^$' -bench Place ./scheduler/internal/placement
func BenchmarkPlace(b *testing.B) {
	const agents, functions = 100, 1000
	cands := make([]Candidate, agents)
	for i := range cands {
		cands[i] = Candidate{Name: fmt.Sprintf("agent-%03d", i), State: api.AgentReady, CapacityMB: 16384, ReservedMB: (i * 37) % 8192}
	}
	names := make([]string, functions)
	for i := range names {
		names[i] = fmt.Sprintf("fn-%04d", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fn := names[i%functions]
		c := cands[i%agents]
		c.IdleInstances = i % 10 / 9 // one call in ten finds an idle instance on this agent
		cands[i%agents] = c
		if _, err := Place(Request{Function: fn, Version: 1, MemoryMB: 128}, cands); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}
