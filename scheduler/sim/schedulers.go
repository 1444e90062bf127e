package sim

// Several schedulers placing on the same agents, each on its own view.
//
// A load balancer spreads the arrivals over the schedulers. Every agent
// reports its instances and memory to every scheduler at each heartbeat;
// between heartbeats a scheduler sees the last report plus its own
// placements since (as amber's claims and reservations do: an invocation
// placed for an idle instance claims it until it ends, and holds its
// memory until it ends), and nothing of the other schedulers' placements.
// It places with amber's policy on that view. The agent is the authority
// on its own capacity: it serves warm on an idle instance of the function
// if it has one, else starts a new instance if it fits after evicting idle
// ones, else refuses, and the scheduler places again without that agent.
// A placement for an idle instance that another scheduler took meanwhile
// (or that expired since the report) starts cold: a stale warm placement.

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/amberfn/amber/scheduler/internal/placement"
)

// Front doors: how the load balancer spreads arrivals over schedulers.
const (
	FrontRoundRobin = "round-robin"
	FrontRandom     = "random"
)

// SchedulersConfig is the control plane in front of the agents.
type SchedulersConfig struct {
	Schedulers int
	Front      string
	// Heartbeat is how often the agents report to every scheduler; 0
	// gives every scheduler a perfect view of the agents.
	Heartbeat time.Duration
}

// Heartbeat is amber's agent heartbeat interval.
const Heartbeat = time.Second

// DefaultSchedulerSetups are what the report compares: one scheduler with
// a perfect view (the single-scheduler simulation), then one, two and
// three on the agents' heartbeats behind a round-robin front door, and two
// and three behind a random one.
func DefaultSchedulerSetups() []SchedulersConfig {
	return []SchedulersConfig{
		{Schedulers: 1, Front: FrontRoundRobin},
		{Schedulers: 1, Front: FrontRoundRobin, Heartbeat: Heartbeat},
		{Schedulers: 2, Front: FrontRoundRobin, Heartbeat: Heartbeat},
		{Schedulers: 3, Front: FrontRoundRobin, Heartbeat: Heartbeat},
		{Schedulers: 2, Front: FrontRandom, Heartbeat: Heartbeat},
		{Schedulers: 3, Front: FrontRandom, Heartbeat: Heartbeat},
	}
}

// SchedulersStats are one setup's figures; Dropped counts the invocations
// throttled because no agent in the scheduler's view would take them, or
// every agent it tried refused.
type SchedulersStats struct {
	Setup SchedulersConfig
	PlacementStats
	Refusals  int // placements an agent refused: no idle instance, no room
	Retried   int // invocations refused at least once (placed again or throttled)
	StaleWarm int // placed for an idle instance that was gone: started cold
}

// SchedulersReport is one workload replayed under each setup.
type SchedulersReport struct {
	Seed      uint64
	Length    time.Duration
	Functions int
	Config    PlacementConfig
	Results   []SchedulersStats
}

// SimulateSchedulers generates nfn functions' workload from seed and
// replays it over cfg under the default setups, with amber's placement.
func SimulateSchedulers(seed uint64, length time.Duration, nfn int, cfg PlacementConfig) *SchedulersReport {
	return RunSchedulers(Generate(seed, length, PlacementFunctions(nfn)), cfg, DefaultSchedulerSetups())
}

// RunSchedulers replays w over cfg under each setup, with amber's placement.
func RunSchedulers(w *Workload, cfg PlacementConfig, setups []SchedulersConfig) *SchedulersReport {
	rep := &SchedulersReport{Seed: w.Seed, Length: w.Length, Functions: len(w.Functions), Config: cfg}
	arr := mergeArrivals(w)
	for _, sc := range setups {
		rep.Results = append(rep.Results, replaySchedulers(w, arr, cfg, sc))
	}
	return rep
}

// Table formats the report.
func (r *SchedulersReport) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d, %s simulated, %d functions, %d agents × %d MB, keep-alive %s, placement %s\n",
		r.Seed, r.Length, r.Functions, r.Config.Agents, r.Config.CapacityMB, r.Config.KeepAlive, PlaceAmber)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "schedulers\tfront door\tview\tinvocations\twarm-hit\tcold starts\tstale warm\trefusals\tretried\tthrottled\tevictions\t")
	for p := Steady; p <= Waves; p++ {
		fmt.Fprintf(tw, "warm %s\t", p)
	}
	fmt.Fprintln(tw)
	for _, st := range r.Results {
		view := "perfect"
		if st.Setup.Heartbeat > 0 {
			view = "heartbeat " + st.Setup.Heartbeat.String()
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%.4f\t%d\t%d\t%d\t%d\t%d\t%d\t", st.Setup.Schedulers, st.Setup.Front, view,
			st.Invocations, st.WarmHitRatio(), st.Cold, st.StaleWarm, st.Refusals, st.Retried, st.Dropped, st.Evictions)
		fmt.Fprintln(tw, patternRatios(st.ByPattern))
	}
	tw.Flush()
	return b.String()
}

// report is one agent's heartbeat: memory held by all its instances and by
// the busy ones, and its idle instances per function.
type report struct {
	all, busy int
	idle      []int
}

// heartbeat is every agent's report now.
func (c *cluster) heartbeat() []report {
	out := make([]report, len(c.agents))
	for i, a := range c.agents {
		r := report{idle: make([]int, len(c.fns))}
		r.all, r.busy = c.held(a)
		for _, in := range a.insts {
			if c.idle(in) {
				r.idle[in.fn]++
			}
		}
		out[i] = r
	}
	return out
}

// placed is one of a scheduler's placements since the last heartbeat.
type placed struct {
	agent   *pagent
	fn      int
	mem     int
	claimed bool // placed for an idle instance
	cold    bool // the agent started a new instance for it
	endAt   time.Time
}

// sched is one scheduler: its placements since the last heartbeat.
type sched struct{ own []placed }

// view is agent i as scheduler s sees it for fn: the last report, plus
// its own new instances, and its own invocations in flight holding memory
// and the idle instances they claimed.
func (s *sched) view(c *cluster, hb []report, i, fn int) agentView {
	r := hb[i]
	v := agentView{all: r.all, busy: r.busy, idle: r.idle[fn]}
	for _, p := range s.own {
		if p.agent != c.agents[i] {
			continue
		}
		if p.cold {
			v.all += p.mem
		}
		if p.endAt.After(c.now) {
			v.busy += p.mem
			if p.claimed && p.fn == fn {
				v.idle--
			}
		}
	}
	v.idle = max(0, v.idle)
	return v
}

func replaySchedulers(w *Workload, arr []arrival, cfg PlacementConfig, sc SchedulersConfig) SchedulersStats {
	out := SchedulersStats{Setup: sc}
	out.Policy = PlaceAmber
	c := newCluster(w, cfg, &out.PlacementStats)
	scheds := make([]sched, sc.Schedulers)
	front := rand.New(rand.NewPCG(cfg.Seed, 0xf0)) // the load balancer's own draws
	var hb []report
	var hbAt time.Time
	for k, ar := range arr {
		if sc.Heartbeat > 0 {
			// The last heartbeat at or before this arrival reaches every
			// scheduler and replaces what each knew of its own placements.
			at := w.Start.Add(ar.inv.At.Sub(w.Start) / sc.Heartbeat * sc.Heartbeat)
			if hb == nil || at.After(hbAt) {
				c.now = at
				c.expire()
				hb, hbAt = c.heartbeat(), at
				for i := range scheds {
					scheds[i].own = scheds[i].own[:0]
				}
			}
		}
		c.now = ar.inv.At
		c.expire()
		s := &scheds[k%len(scheds)]
		if sc.Front == FrontRandom {
			s = &scheds[front.IntN(len(scheds))]
		}
		view := c.truth
		if sc.Heartbeat > 0 {
			view = func(i, fn int) agentView { return s.view(c, hb, i, fn) }
		}
		c.serve(ar, func() { out.place(c, s, ar, view) })
	}
	return out
}

// place has scheduler s place ar on its view, and the chosen agents take
// it or refuse, until one takes it or none is left in the view.
func (out *SchedulersStats) place(c *cluster, s *sched, ar arrival, view func(agent, fn int) agentView) {
	var exclude map[string]bool
	for {
		a, reason := c.placeAmber(PlaceAmber, ar.fn, view, exclude)
		if a == nil {
			out.Dropped++
			return
		}
		warm := c.idleOf(a, ar.fn) > 0
		if !c.run(a, ar.fn, ar.inv) {
			out.Refusals++
			if exclude == nil {
				out.Retried++
				exclude = map[string]bool{}
			}
			exclude[a.name] = true
			continue
		}
		claimed := reason == placement.ReasonIdleInstance
		if claimed && !warm {
			out.StaleWarm++
		}
		end := c.now.Add(ar.inv.Duration)
		if !warm {
			end = end.Add(c.fns[ar.fn].Init)
		}
		s.own = append(s.own, placed{agent: a, fn: ar.fn, mem: c.fns[ar.fn].MemoryMB, claimed: claimed, cold: !warm, endAt: end})
		return
	}
}
