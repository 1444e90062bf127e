package sim

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/scheduler/internal/placement"
)

// Model constants, the scheduler's and the agent's.
const (
	// AutoWindow is the scheduler's auto-mode window (autoWindow).
	AutoWindow = 30 * time.Minute
	// MaxQueueWait is how long an invocation over max_instances waits
	// before a 429 (the scheduler's maxQueueWait).
	MaxQueueWait = 5 * time.Second
	// Tick is how often auto mode is re-evaluated.
	Tick = time.Minute
)

// Policy is how every function's pool is set.
type Policy struct {
	Name      string
	MinWarm   int // fixed min_warm (ignored with Auto)
	KeepAlive time.Duration
	Auto      bool
	AutoMax   int // 0: the scheduler's default cap (api.MaxMinWarm)
}

// DefaultPolicies are the three the report compares; the first is the baseline.
func DefaultPolicies() []Policy {
	return []Policy{
		{Name: "fixed min_warm 0", KeepAlive: api.DefaultKeepAlive},
		{Name: "fixed min_warm 1", MinWarm: 1, KeepAlive: api.DefaultKeepAlive},
		{Name: "auto", Auto: true, KeepAlive: api.DefaultKeepAlive},
	}
}

// Stats are one function's figures under one policy.
type Stats struct {
	Function    string
	Invocations int // served (throttled ones are not)
	Warm        int
	Cold        int
	Throttled   int
	QueueWait   time.Duration
	// IdleSeconds is instance time spent idle: warmth.
	IdleSeconds float64
	// WarmthGBs is IdleSeconds × memory in GB.
	WarmthGBs     float64
	PeakInstances int
	// MeanMinWarm is the average min_warm target over the ticks.
	MeanMinWarm float64
}

// WarmHitRatio is the share of served invocations that found a warm instance.
func (s Stats) WarmHitRatio() float64 {
	if s.Invocations == 0 {
		return 0
	}
	return float64(s.Warm) / float64(s.Invocations)
}

func (s *Stats) add(o Stats) {
	s.Invocations += o.Invocations
	s.Warm += o.Warm
	s.Cold += o.Cold
	s.Throttled += o.Throttled
	s.QueueWait += o.QueueWait
	s.IdleSeconds += o.IdleSeconds
	s.WarmthGBs += o.WarmthGBs
	s.PeakInstances += o.PeakInstances
	s.MeanMinWarm += o.MeanMinWarm
}

// PolicyResult is a policy's figures per function and in total.
type PolicyResult struct {
	Policy    Policy
	Functions []Stats
	Total     Stats
}

// Report is a workload replayed under each policy; Results[0] is the baseline.
type Report struct {
	Seed    uint64
	Length  time.Duration
	Results []PolicyResult
}

// Run replays w under each policy.
func Run(w *Workload, policies []Policy) *Report {
	rep := &Report{Seed: w.Seed, Length: w.Length}
	for _, p := range policies {
		pr := PolicyResult{Policy: p, Total: Stats{Function: "all"}}
		for i, fn := range w.Functions {
			st := replay(fn, w.Invocations[i], p, w.Start, w.Start.Add(w.Length))
			pr.Functions = append(pr.Functions, st)
			pr.Total.add(st)
		}
		rep.Results = append(rep.Results, pr)
	}
	return rep
}

// Simulate generates the default workload from seed and replays it under
// the default policies.
func Simulate(seed uint64, length time.Duration) *Report {
	return Run(Generate(seed, length, DefaultFunctions()), DefaultPolicies())
}

// Result finds a function's figures under a policy.
func (r *Report) Result(policy, function string) (Stats, bool) {
	for _, pr := range r.Results {
		if pr.Policy.Name != policy {
			continue
		}
		if function == "all" {
			return pr.Total, true
		}
		for _, st := range pr.Functions {
			if st.Function == function {
				return st, true
			}
		}
	}
	return Stats{}, false
}

// WarmthPerAvoided is the extra warmth (GB-s) a policy spent per cold
// start it avoided against the baseline; ok is false when it avoided none.
func WarmthPerAvoided(st, base Stats) (float64, bool) {
	avoided := base.Cold - st.Cold
	if avoided <= 0 {
		return 0, false
	}
	return (st.WarmthGBs - base.WarmthGBs) / float64(avoided), true
}

// Table formats the report, per function then totals, each policy
// against the first (the baseline).
func (r *Report) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d, %s simulated; baseline: %s\n", r.Seed, r.Length, r.Results[0].Policy.Name)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "function\tpolicy\tinvocations\twarm-hit\tcold starts\tavoided\tthrottled\tmean min_warm\twarmth GB-s\tΔwarmth GB-s / avoided\t")
	row := func(name string, st, base Stats, p Policy) {
		per := "-"
		if v, ok := WarmthPerAvoided(st, base); ok {
			per = fmt.Sprintf("%.1f", v)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.3f\t%d\t%d\t%d\t%.2f\t%.0f\t%s\t\n", name, p.Name, st.Invocations, st.WarmHitRatio(),
			st.Cold, base.Cold-st.Cold, st.Throttled, st.MeanMinWarm, st.WarmthGBs, per)
	}
	base := r.Results[0]
	for i, fst := range base.Functions {
		for _, pr := range r.Results {
			row(fst.Function, pr.Functions[i], fst, pr.Policy)
		}
	}
	for _, pr := range r.Results {
		row("all", pr.Total, base.Total, pr.Policy)
	}
	tw.Flush()
	return b.String()
}

// instance is one simulated instance. It is idle from freeAt on; before
// that it is busy (busy set) or initialising ahead of demand.
type instance struct {
	freeAt time.Time
	busy   bool
}

// pool is one function's instances under one policy.
type pool struct {
	fn       Function
	policy   Policy
	now      time.Time
	minWarm  int
	insts    []*instance
	arrivals []placement.Arrival
	st       Stats
}

func replay(fn Function, invs []Invocation, p Policy, start, end time.Time) Stats {
	pl := &pool{fn: fn, policy: p, now: start, st: Stats{Function: fn.Name}}
	if !p.Auto {
		pl.minWarm = p.MinWarm
		if fn.MaxInstances > 0 {
			pl.minWarm = min(pl.minWarm, fn.MaxInstances)
		}
	}
	ticks := 0
	tick := start
	for i := 0; i < len(invs) || !tick.After(end); {
		if i < len(invs) && (invs[i].At.Before(tick) || tick.After(end)) {
			pl.invoke(invs[i])
			i++
			continue
		}
		pl.tick(tick)
		ticks++
		pl.st.MeanMinWarm += float64(pl.minWarm)
		tick = tick.Add(Tick)
	}
	pl.advance(end)
	for _, in := range pl.insts {
		if in.freeAt.Before(end) {
			pl.st.IdleSeconds += end.Sub(in.freeAt).Seconds()
		}
	}
	pl.st.MeanMinWarm /= float64(ticks)
	pl.st.WarmthGBs = pl.st.IdleSeconds * float64(fn.MemoryMB) / 1024
	return pl.st
}

// idleSorted lists the idle instances, least recently used first.
func (p *pool) idleSorted() []*instance {
	var idle []*instance
	for _, in := range p.insts {
		if !in.freeAt.After(p.now) {
			idle = append(idle, in)
		}
	}
	// Insertion sort: pools are small, and it is stable.
	for i := 1; i < len(idle); i++ {
		for j := i; j > 0 && idle[j].freeAt.Before(idle[j-1].freeAt); j-- {
			idle[j], idle[j-1] = idle[j-1], idle[j]
		}
	}
	return idle
}

func (p *pool) remove(in *instance) {
	for i, x := range p.insts {
		if x == in {
			p.insts = append(p.insts[:i], p.insts[i+1:]...)
			return
		}
	}
}

// retire ends an idle instance at t, counting its idle time.
func (p *pool) retire(in *instance, t time.Time) {
	p.st.IdleSeconds += t.Sub(in.freeAt).Seconds()
	p.remove(in)
}

// advance moves the pool to t: instances finish and go idle, and idle
// ones above min_warm expire after keep-alive, oldest first.
func (p *pool) advance(t time.Time) {
	for {
		var next time.Time // the next instance to go idle
		for _, in := range p.insts {
			if in.freeAt.After(p.now) && !in.freeAt.After(t) && (next.IsZero() || in.freeAt.Before(next)) {
				next = in.freeAt
			}
		}
		var exp time.Time
		idle := p.idleSorted()
		if len(idle) > p.minWarm {
			exp = idle[0].freeAt.Add(p.policy.KeepAlive)
			if exp.Before(p.now) {
				exp = p.now
			}
			if exp.After(t) {
				exp = time.Time{}
			}
		}
		switch {
		case !exp.IsZero() && (next.IsZero() || exp.Before(next)):
			p.now = exp
			p.retire(idle[0], exp)
		case !next.IsZero():
			p.now = next
		default:
			p.now = t
			return
		}
	}
}

// invoke serves one arrival.
func (p *pool) invoke(inv Invocation) {
	t := inv.At
	p.advance(t)
	cold := false
	if idle := p.idleSorted(); len(idle) > 0 {
		in := idle[len(idle)-1] // most recently used
		p.st.IdleSeconds += t.Sub(in.freeAt).Seconds()
		in.freeAt, in.busy = t.Add(inv.Duration), true
		p.st.Warm++
	} else if p.fn.MaxInstances == 0 || len(p.insts) < p.fn.MaxInstances {
		p.insts = append(p.insts, &instance{freeAt: t.Add(p.fn.Init + inv.Duration), busy: true})
		p.st.Cold++
		cold = true
	} else {
		// At the cap: wait for the first instance free, within the bound.
		first := p.insts[0]
		for _, in := range p.insts[1:] {
			if in.freeAt.Before(first.freeAt) {
				first = in
			}
		}
		wait := first.freeAt.Sub(t)
		if wait > MaxQueueWait {
			p.st.Throttled++
			return
		}
		p.st.QueueWait += wait
		first.freeAt, first.busy = first.freeAt.Add(inv.Duration), true
		p.st.Warm++
	}
	p.st.Invocations++
	p.st.PeakInstances = max(p.st.PeakInstances, len(p.insts))
	concurrent := 0
	for _, in := range p.insts {
		if in.busy && in.freeAt.After(t) {
			concurrent++
		}
	}
	p.arrivals = append(p.arrivals, placement.Arrival{At: t, Concurrent: concurrent, Cold: cold})
	p.reconcile()
}

// tick re-evaluates auto mode and reconciles.
func (p *pool) tick(t time.Time) {
	p.advance(t)
	if p.policy.Auto {
		capN := p.policy.AutoMax
		if capN == 0 {
			capN = api.MaxMinWarm
		}
		from := t.Add(-AutoWindow)
		i := len(p.arrivals)
		for i > 0 && !p.arrivals[i-1].At.Before(from) {
			i--
		}
		n := placement.Recommend(p.arrivals[i:], AutoWindow, p.fn.MemoryMB, capN).MinWarm
		if p.fn.MaxInstances > 0 {
			n = min(n, p.fn.MaxInstances)
		}
		p.setMinWarm(n)
		// Only the window is ever needed again.
		if i > 0 {
			p.arrivals = append(p.arrivals[:0], p.arrivals[i:]...)
		}
	}
	p.reconcile()
}

// setMinWarm changes the target; shrinking retires idle instances above
// it at once, least recently used first, as the agent does.
func (p *pool) setMinWarm(n int) {
	if n < p.minWarm {
		idle := p.idleSorted()
		for extra := len(idle) - n; extra > 0; extra-- {
			p.retire(idle[0], p.now)
			idle = idle[1:]
		}
	}
	p.minWarm = n
}

// reconcile starts instances until min_warm are idle or warming, within
// the cap.
func (p *pool) reconcile() {
	if p.minWarm <= 0 {
		return
	}
	ready := 0
	for _, in := range p.insts {
		if !in.freeAt.After(p.now) || !in.busy {
			ready++
		}
	}
	need := p.minWarm - ready
	if p.fn.MaxInstances > 0 {
		need = min(need, max(0, p.fn.MaxInstances-len(p.insts)))
	}
	for range need {
		p.insts = append(p.insts, &instance{freeAt: p.now.Add(p.fn.Init)})
	}
	p.st.PeakInstances = max(p.st.PeakInstances, len(p.insts))
}
