package scheduler

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/amberfn/amber/api"
)

// The auto mode sizes min_warm from a function's recent arrivals, in the
// spirit of "Serverless in the Wild" (ATC'20): keep warm what the arrival
// pattern says will be needed, and show what it costs and saves.
const (
	autoWindow    = 30 * time.Minute
	maxAutoEvents = 4096 // per function
)

// arrival is one invocation as the auto mode remembers it.
type arrival struct {
	at         time.Time
	concurrent int  // invocations in flight when it arrived, itself included
	cold       bool // it needed a new instance
}

// arrivals keeps the recent arrivals of each function, bounded.
type arrivals struct {
	mu  sync.Mutex
	fns map[string][]arrival
}

func newArrivals() *arrivals { return &arrivals{fns: map[string][]arrival{}} }

func (a *arrivals) add(fn string, ev arrival) {
	a.mu.Lock()
	defer a.mu.Unlock()
	// Arrivals are added when their invocation ends, so out of arrival
	// order; keep them sorted by arrival time, as recent's search needs.
	evs := a.fns[fn]
	i := len(evs)
	for i > 0 && evs[i-1].at.After(ev.at) {
		i--
	}
	evs = slices.Insert(evs, i, ev)
	if len(evs) > maxAutoEvents {
		evs = slices.Clone(evs[len(evs)-maxAutoEvents*3/4:])
	}
	a.fns[fn] = evs
}

func (a *arrivals) recent(fn string, since time.Time) []arrival {
	a.mu.Lock()
	defer a.mu.Unlock()
	evs := a.fns[fn]
	i, _ := slices.BinarySearchFunc(evs, since, func(e arrival, t time.Time) int { return e.at.Compare(t) })
	return slices.Clone(evs[i:])
}

func (a *arrivals) drop(fn string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.fns, fn)
}

// recommendFrom is the auto mode's rule, pure so it is tested alone:
//
//   - min_warm is the 95th percentile of the concurrency seen at arrival
//     over the window, so that 19 of 20 arrivals of the recent pattern
//     find a warm instance even after every idle one has expired;
//   - a function idle for the whole window gets 0;
//   - the cost is min_warm instances idle for an hour (an upper bound:
//     busy time is billed as invocations, not warmth);
//   - the saving is the cold starts of the window that arrived at a
//     concurrency min_warm would have covered, per hour.
func recommendFrom(evs []arrival, window time.Duration, memoryMB, capN int) api.PoolRecommendation {
	if len(evs) == 0 {
		return api.PoolRecommendation{Reason: fmt.Sprintf("no invocations in the last %s: keep nothing warm", window)}
	}
	conc := make([]int, len(evs))
	for i, e := range evs {
		conc[i] = max(1, e.concurrent)
	}
	slices.Sort(conc)
	n := conc[(len(conc)*95-1)/100]
	reason := fmt.Sprintf("p95 concurrency over %d invocations in the last %s", len(evs), window)
	if capN > 0 && n > capN {
		n = capN
		reason += fmt.Sprintf(", capped at %d", capN)
	}
	avoided := 0
	for _, e := range evs {
		if e.cold && max(1, e.concurrent) <= n {
			avoided++
		}
	}
	hours := window.Hours()
	return api.PoolRecommendation{
		MinWarm:                  n,
		WarmthGBsPerHour:         float64(n) * float64(memoryMB) / 1024 * 3600,
		ColdStartsAvoidedPerHour: float64(avoided) / hours,
		Reason:                   reason,
	}
}

// Arrival is one invocation as the auto mode sees it, for Recommend.
type Arrival struct {
	At         time.Time
	Concurrent int  // invocations in flight when it arrived, itself included
	Cold       bool // it needed a new instance
}

// Recommend is the auto mode's rule (recommendFrom) over evs, exported for
// the simulator (scheduler/sim) so it replays the very rule the scheduler runs.
func Recommend(evs []Arrival, window time.Duration, memoryMB, capN int) api.PoolRecommendation {
	in := make([]arrival, len(evs))
	for i, e := range evs {
		in[i] = arrival{at: e.At, concurrent: e.Concurrent, cold: e.Cold}
	}
	return recommendFrom(in, window, memoryMB, capN)
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
	return recommendFrom(s.arrivals.recent(name, s.now().Add(-autoWindow)), autoWindow, mem, capN)
}
