package scheduler

import (
	"slices"
	"sync"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/scheduler/internal/placement"
)

// The auto mode sizes min_warm from a function's recent arrivals, in the
// spirit of "Serverless in the Wild" (ATC'20): keep warm what the placement.Arrival
// pattern says will be needed, and show what it costs and saves.
const (
	autoWindow    = 30 * time.Minute
	maxAutoEvents = 4096 // per function
)

// arrivals keeps the recent arrivals of each function, bounded.
type arrivals struct {
	mu  sync.Mutex
	fns map[string][]placement.Arrival
}

func newArrivals() *arrivals { return &arrivals{fns: map[string][]placement.Arrival{}} }

func (a *arrivals) add(fn string, ev placement.Arrival) {
	a.mu.Lock()
	defer a.mu.Unlock()
	// Arrivals are added when their invocation ends, so out of placement.Arrival
	// order; keep them sorted by placement.Arrival time, as recent's search needs.
	evs := a.fns[fn]
	i := len(evs)
	for i > 0 && evs[i-1].At.After(ev.At) {
		i--
	}
	evs = slices.Insert(evs, i, ev)
	if len(evs) > maxAutoEvents {
		evs = slices.Clone(evs[len(evs)-maxAutoEvents*3/4:])
	}
	a.fns[fn] = evs
}

func (a *arrivals) recent(fn string, since time.Time) []placement.Arrival {
	a.mu.Lock()
	defer a.mu.Unlock()
	evs := a.fns[fn]
	i, _ := slices.BinarySearchFunc(evs, since, func(e placement.Arrival, t time.Time) int { return e.At.Compare(t) })
	return slices.Clone(evs[i:])
}

func (a *arrivals) drop(fn string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.fns, fn)
}

// recommend is the auto mode's recommendation for a function now.
func (s *Scheduler) recommend(name string, p api.PoolSettings) api.PoolRecommendation {
	mem := api.DefaultMemory
	if fn, err := s.reg.latest(name); err == nil {
		mem = fn.MemoryMB
	}
	capN := p.AutoMax
	if capN == 0 {
		capN = api.MaxMinWarm
	}
	return placement.Recommend(s.arrivals.recent(name, s.now().Add(-autoWindow)), autoWindow, mem, capN)
}
