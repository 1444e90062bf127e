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
	// minutes, when set, gets every observation too, under mu, so that
	// a cut of both is consistent (see Scheduler.history).
	minutes *minuteLog
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
	ms := float64(d.Microseconds()) / 1000
	h.Observe(ms)
	if l.minutes != nil {
		l.minutes.observe(fn, kind, ms)
	}
}

// cut returns copies of every function's histograms (or fn's) and, read
// at the same instant, the in-memory minutes from since on.
func (l *latencies) cut(since int64, fn string) (map[string]map[api.StartKind]*api.Histogram, memCut) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]map[api.StartKind]*api.Histogram{}
	for name, byKind := range l.fns {
		if fn != "" && name != fn {
			continue
		}
		m := make(map[api.StartKind]*api.Histogram, len(byKind))
		for k, h := range byKind {
			m[k] = h.Clone()
		}
		out[name] = m
	}
	var c memCut
	if l.minutes != nil {
		c = l.minutes.cut(since, fn, true)
	}
	return out, c
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
