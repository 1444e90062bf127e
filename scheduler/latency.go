package scheduler

import (
	"sync"
	"time"

	"github.com/amberfn/amber/api"
)

// latencies keeps, per function and start kind, a histogram of the
// latency the scheduler saw: from admission to the agent's answer.
type latencies struct {
	mu  sync.Mutex
	fns map[string]map[api.StartKind]*api.Histogram
}

func newLatencies() *latencies {
	return &latencies{fns: map[string]map[api.StartKind]*api.Histogram{}}
}

func (l *latencies) observe(fn string, kind api.StartKind, d time.Duration) {
	if kind == "" {
		return // the agent never answered: not a start
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	byKind := l.fns[fn]
	if byKind == nil {
		byKind = map[api.StartKind]*api.Histogram{}
		l.fns[fn] = byKind
	}
	h := byKind[kind]
	if h == nil {
		h = &api.Histogram{}
		byKind[kind] = h
	}
	h.Observe(float64(d.Microseconds()) / 1000)
}

// of returns copies of a function's histograms.
func (l *latencies) of(fn string) map[api.StartKind]*api.Histogram {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[api.StartKind]*api.Histogram{}
	for k, h := range l.fns[fn] {
		out[k] = h.Clone()
	}
	return out
}

func (l *latencies) drop(fn string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.fns, fn)
}
