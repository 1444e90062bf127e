// Package sim replays a synthetic multi-function workload against a model
// of amber's warm pools, deterministically from a seed, to compare pool
// policies: fixed min_warm and keep-alive, and the scheduler's auto mode
// (the very rule it runs, through placement.Recommend).
//
// It is pure Go: no agents, no HTTP, no wall clock. The model follows the
// agent: an invocation takes the most recently used idle instance (warm)
// or starts a new one (cold); idle instances above min_warm are retired
// after keep-alive, least recently used first; instances are started
// ahead to keep min_warm idle or warming; lowering min_warm retires idle
// instances above it at once; max_instances caps the instances, and an
// invocation over it waits for the first one free, up to the scheduler's
// 5 s, else it is throttled (429).
package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// Pattern is the shape of a function's arrivals.
type Pattern int

const (
	Steady   Pattern = iota // Poisson at a steady rate
	Bursty                  // sparse background, and bursts of concurrent arrivals at random gaps
	Periodic                // a cron job: every 15 minutes, sometimes twice at once
	Rare                    // a few an hour, at random
	Waves                   // busy 20 minutes of each hour, quiet the rest
)

func (p Pattern) String() string {
	switch p {
	case Steady:
		return "steady"
	case Bursty:
		return "bursty"
	case Periodic:
		return "periodic"
	case Rare:
		return "rare"
	case Waves:
		return "waves"
	}
	return fmt.Sprintf("pattern(%d)", int(p))
}

// Function is one simulated function.
type Function struct {
	Name         string
	Pattern      Pattern
	MemoryMB     int
	MaxInstances int           // 0: no cap
	Init         time.Duration // a cold start's initialisation
	Duration     time.Duration // median invocation duration (log-normal around it)
}

// Invocation is one arrival and how long it runs.
type Invocation struct {
	At       time.Time
	Duration time.Duration
}

// Workload is what Generate makes: each function's invocations, by time.
type Workload struct {
	Seed        uint64
	Start       time.Time
	Length      time.Duration
	Functions   []Function
	Invocations [][]Invocation // [function][i], sorted by At
}

// DefaultFunctions is a mix of the patterns, one function each.
func DefaultFunctions() []Function {
	return []Function{
		{Name: "api", Pattern: Steady, MemoryMB: 256, MaxInstances: 50, Init: 300 * time.Millisecond, Duration: 120 * time.Millisecond},
		{Name: "burst", Pattern: Bursty, MemoryMB: 512, MaxInstances: 10, Init: 800 * time.Millisecond, Duration: 2 * time.Second},
		{Name: "cron", Pattern: Periodic, MemoryMB: 1024, Init: time.Second, Duration: 5 * time.Second},
		{Name: "rare", Pattern: Rare, MemoryMB: 128, Init: 2 * time.Second, Duration: 300 * time.Millisecond},
		{Name: "waves", Pattern: Waves, MemoryMB: 256, MaxInstances: 20, Init: 500 * time.Millisecond, Duration: 800 * time.Millisecond},
	}
}

// Epoch is where simulated time starts.
var Epoch = time.Date(2025, 1, 6, 0, 0, 0, 0, time.UTC)

// Generate makes a workload of length from seed. Each function draws from
// its own stream (seed, index), so the same seed gives the same workload,
// and adding a function leaves the others' arrivals as they were.
func Generate(seed uint64, length time.Duration, fns []Function) *Workload {
	w := &Workload{Seed: seed, Start: Epoch, Length: length, Functions: slices.Clone(fns), Invocations: make([][]Invocation, len(fns))}
	for i, fn := range fns {
		r := rand.New(rand.NewPCG(seed, uint64(i+1)*0x9e3779b97f4a7c15))
		g := gen{r: r, start: Epoch, end: Epoch.Add(length), fn: fn}
		w.Invocations[i] = g.run()
	}
	return w
}

type gen struct {
	r          *rand.Rand
	start, end time.Time
	fn         Function
	out        []Invocation
}

// exp draws an exponential gap of the given mean.
func (g *gen) exp(mean time.Duration) time.Duration {
	return time.Duration(g.r.ExpFloat64() * float64(mean))
}

// duration draws a log-normal invocation duration around the median.
func (g *gen) duration() time.Duration {
	d := time.Duration(float64(g.fn.Duration) * math.Exp(0.5*g.r.NormFloat64()))
	return min(max(d, time.Millisecond), time.Minute)
}

func (g *gen) add(at time.Time) {
	if !at.Before(g.start) && at.Before(g.end) {
		g.out = append(g.out, Invocation{At: at, Duration: g.duration()})
	}
}

// poisson adds arrivals at rate perMinute over [from, to).
func (g *gen) poisson(from, to time.Time, perMinute float64) {
	mean := time.Duration(float64(time.Minute) / perMinute)
	for t := from.Add(g.exp(mean)); t.Before(to); t = t.Add(g.exp(mean)) {
		g.add(t)
	}
}

func (g *gen) run() []Invocation {
	switch g.fn.Pattern {
	case Steady:
		g.poisson(g.start, g.end, 20)
	case Bursty:
		g.poisson(g.start, g.end, 0.1)
		for t := g.start.Add(g.exp(25 * time.Minute)); t.Before(g.end); t = t.Add(3*time.Minute + g.exp(22*time.Minute)) {
			n := 4 + g.r.IntN(9) // 4–12 at once
			for range n {
				g.add(t.Add(time.Duration(g.r.Int64N(int64(2 * time.Second)))))
			}
		}
	case Periodic:
		for t := g.start; t.Before(g.end); t = t.Add(15 * time.Minute) {
			at := t.Add(time.Duration(g.r.Int64N(int64(3 * time.Second))))
			g.add(at)
			if g.r.Float64() < 0.2 {
				g.add(at.Add(time.Duration(g.r.Int64N(int64(time.Second)))))
			}
		}
	case Rare:
		g.poisson(g.start, g.end, 1.5/60)
	case Waves:
		for h := g.start; h.Before(g.end); h = h.Add(time.Hour) {
			from := h.Add(time.Duration(g.r.IntN(40)) * time.Minute)
			g.poisson(from, from.Add(20*time.Minute), 6)
		}
	}
	slices.SortStableFunc(g.out, func(a, b Invocation) int { return a.At.Compare(b.At) })
	return g.out
}
