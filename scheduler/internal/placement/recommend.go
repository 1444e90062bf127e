package placement

import (
	"fmt"
	"slices"
	"time"

	"github.com/amberfn/amber/api"
)

// Recommend is the auto mode's rule, pure so it is tested alone:
//
//   - min_warm is the 95th percentile of the concurrency seen at arrival
//     over the window, so that 19 of 20 arrivals of the recent pattern
//     find a warm instance even after every idle one has expired;
//   - a function idle for the whole window gets 0;
//   - the cost is min_warm instances idle for an hour (an upper bound:
//     busy time is billed as invocations, not warmth);
//   - the saving is the cold starts of the window that arrived at a
//     concurrency min_warm would have covered, per hour.
func Recommend(evs []Arrival, window time.Duration, memoryMB, capN int) api.PoolRecommendation {
	if len(evs) == 0 {
		return api.PoolRecommendation{Reason: fmt.Sprintf("no invocations in the last %s: keep nothing warm", window)}
	}
	conc := make([]int, len(evs))
	for i, e := range evs {
		conc[i] = max(1, e.Concurrent)
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
		if e.Cold && max(1, e.Concurrent) <= n {
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

// Arrival is one invocation as the auto mode remembers it.
type Arrival struct {
	At         time.Time
	Concurrent int  // invocations in flight when it arrived, itself included
	Cold       bool // it needed a new instance
}
