package sim

// Placement simulation: the same deterministic workload replayed over N
// agents of equal memory under several placement policies, amber's own
// (the real placement.Place) among them.
//
// The model: an instance holds its function's memory while it exists, busy
// or idle; an idle instance expires keep-alive after its last use. An
// invocation on an agent with an idle instance of its function is warm
// (the most recently used instance is taken); otherwise it starts a new
// instance there (cold), which needs free memory on the agent: the agent
// evicts idle instances of other functions, least recently used first,
// until the new one fits. A policy only ever picks an agent where the
// invocation is warm or fits after evicting idle instances; when no agent
// qualifies the invocation is dropped, and counted. Busy instances are
// never evicted, so the memory in flight bounds every policy alike.

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/scheduler/internal/placement"
)

// Placement policies the simulator knows.
const (
	// PlaceAmber is placement.Place over candidates whose ReservedMB is all
	// memory held on the agent (busy and idle instances), so "free memory"
	// means free without evicting anything; when no agent has that much, a
	// second Place call with ReservedMB = memory in flight (what the real
	// scheduler reserves) picks the agent whose idle instances are evicted.
	PlaceAmber = "amber"
	// PlaceAmberInFlight is placement.Place exactly as the scheduler feeds
	// it: ReservedMB is the memory of invocations in flight only, so idle
	// instances look like free memory.
	PlaceAmberInFlight = "amber (in-flight reserved)"
	// PlaceOpenWhisk is OpenWhisk's ShardingContainerPoolBalancer idea: a
	// home invoker hash(function) mod N, then stepping through the
	// invokers by a step size co-prime with N (also chosen by the hash);
	// the first invoker in that order with a warm instance or room (after
	// evicting idle ones) takes it.
	PlaceOpenWhisk = "openwhisk"
	// PlaceRandom is a seeded random agent among those with a warm
	// instance or room (after evicting idle ones).
	PlaceRandom = "random"
)

// DefaultPlacementPolicies are the policies the report compares.
func DefaultPlacementPolicies() []string {
	return []string{PlaceAmber, PlaceAmberInFlight, PlaceOpenWhisk, PlaceRandom}
}

// PlacementConfig is the cluster the workload is replayed over.
type PlacementConfig struct {
	Agents     int
	CapacityMB int // per agent
	KeepAlive  time.Duration
	Seed       uint64 // for the random policy
}

// DefaultPlacementConfig is 8 agents of 4 GB with the default keep-alive.
func DefaultPlacementConfig() PlacementConfig {
	return PlacementConfig{Agents: 8, CapacityMB: 4096, KeepAlive: api.DefaultKeepAlive, Seed: 1}
}

// PlacementFunctions is a multi-function mix: n functions cycling through
// the patterns of DefaultFunctions, with memory cycling 128–1024 MB.
func PlacementFunctions(n int) []Function {
	base := DefaultFunctions()
	mems := []int{128, 256, 512, 1024, 256, 512, 128}
	fns := make([]Function, n)
	for i := range fns {
		f := base[i%len(base)]
		f.Name = fmt.Sprintf("%s-%02d", f.Pattern, i)
		f.MemoryMB = mems[i%len(mems)]
		f.MaxInstances = 0 // caps are per function, not what placement compares
		fns[i] = f
	}
	return fns
}

// PlacementStats are one policy's figures.
type PlacementStats struct {
	Policy      string
	Invocations int // arrivals: Warm + Cold + Dropped
	Warm        int
	Cold        int
	Evictions   int // idle instances removed to make room
	Expired     int // idle instances removed after keep-alive
	Dropped     int // no agent had a warm instance or room
	// PeakHeldMB is the most memory held across the cluster at an arrival.
	PeakHeldMB int
	// ByPattern splits Invocations and Warm by the function's pattern.
	ByPattern map[Pattern][2]int
}

// WarmHitRatio is warm invocations over all arrivals (a drop is a miss).
func (s PlacementStats) WarmHitRatio() float64 {
	if s.Invocations == 0 {
		return 0
	}
	return float64(s.Warm) / float64(s.Invocations)
}

// PlacementReport is a workload replayed under each placement policy.
type PlacementReport struct {
	Seed      uint64
	Length    time.Duration
	Functions int
	Config    PlacementConfig
	Results   []PlacementStats
}

// Result finds a policy's figures.
func (r *PlacementReport) Result(policy string) (PlacementStats, bool) {
	for _, st := range r.Results {
		if st.Policy == policy {
			return st, true
		}
	}
	return PlacementStats{}, false
}

// Table formats the report.
func (r *PlacementReport) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d, %s simulated, %d functions, %d agents × %d MB, keep-alive %s\n",
		r.Seed, r.Length, r.Functions, r.Config.Agents, r.Config.CapacityMB, r.Config.KeepAlive)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "policy\tinvocations\twarm-hit\tcold starts\tevictions\texpired\tdropped\tpeak held MB\t")
	for p := Steady; p <= Waves; p++ {
		fmt.Fprintf(tw, "warm %s\t", p)
	}
	fmt.Fprintln(tw)
	for _, st := range r.Results {
		fmt.Fprintf(tw, "%s\t%d\t%.4f\t%d\t%d\t%d\t%d\t%d\t", st.Policy, st.Invocations, st.WarmHitRatio(),
			st.Cold, st.Evictions, st.Expired, st.Dropped, st.PeakHeldMB)
		fmt.Fprintln(tw, patternRatios(st.ByPattern))
	}
	tw.Flush()
	return b.String()
}

// patternRatios are the warm-hit ratios by pattern, as tab-terminated cells.
func patternRatios(by map[Pattern][2]int) string {
	var b strings.Builder
	for p := Steady; p <= Waves; p++ {
		v := by[p]
		if v[0] == 0 {
			b.WriteString("-\t")
			continue
		}
		fmt.Fprintf(&b, "%.3f\t", float64(v[1])/float64(v[0]))
	}
	return b.String()
}

// SimulatePlacement generates nfn functions' workload from seed and
// replays it over cfg under the default placement policies.
func SimulatePlacement(seed uint64, length time.Duration, nfn int, cfg PlacementConfig) *PlacementReport {
	return RunPlacement(Generate(seed, length, PlacementFunctions(nfn)), cfg, DefaultPlacementPolicies())
}

// RunPlacement replays w over cfg under each policy.
func RunPlacement(w *Workload, cfg PlacementConfig, policies []string) *PlacementReport {
	rep := &PlacementReport{Seed: w.Seed, Length: w.Length, Functions: len(w.Functions), Config: cfg}
	arr := mergeArrivals(w)
	for _, p := range policies {
		rep.Results = append(rep.Results, replayPlacement(w, arr, cfg, p))
	}
	return rep
}

type arrival struct {
	fn  int
	inv Invocation
}

// mergeArrivals lists every function's invocations by time; ties keep the
// function order, so the merge is deterministic.
func mergeArrivals(w *Workload) []arrival {
	var out []arrival
	idx := make([]int, len(w.Functions))
	for {
		best := -1
		for f := range w.Functions {
			if idx[f] < len(w.Invocations[f]) && (best < 0 || w.Invocations[f][idx[f]].At.Before(w.Invocations[best][idx[best]].At)) {
				best = f
			}
		}
		if best < 0 {
			return out
		}
		out = append(out, arrival{fn: best, inv: w.Invocations[best][idx[best]]})
		idx[best]++
	}
}

// pinst is one instance on an agent: busy until freeAt, idle from then on.
type pinst struct {
	fn     int
	freeAt time.Time
}

type pagent struct {
	name  string
	cap   int
	insts []pinst
}

type cluster struct {
	fns     []Function
	agents  []*pagent
	ka      time.Duration
	now     time.Time
	st      *PlacementStats
	rng     *rand.Rand
	steps   []int
	request placement.Request
}

func (c *cluster) idle(in pinst) bool { return !in.freeAt.After(c.now) }

func (c *cluster) held(a *pagent) (all, busy int) {
	for _, in := range a.insts {
		m := c.fns[in.fn].MemoryMB
		all += m
		if !c.idle(in) {
			busy += m
		}
	}
	return all, busy
}

func (c *cluster) idleOf(a *pagent, fn int) int {
	n := 0
	for _, in := range a.insts {
		if in.fn == fn && c.idle(in) {
			n++
		}
	}
	return n
}

// fits says whether a new instance of fn fits on a after evicting idle
// instances of other functions.
func (c *cluster) fits(a *pagent, fn int) bool {
	_, busy := c.held(a)
	return a.cap-busy >= c.fns[fn].MemoryMB
}

// usable says whether an invocation of fn can run on a: warm or fits.
func (c *cluster) usable(a *pagent, fn int) bool { return c.idleOf(a, fn) > 0 || c.fits(a, fn) }

// expire removes the instances idle for keep-alive by now.
func (c *cluster) expire() {
	for _, a := range c.agents {
		kept := a.insts[:0]
		for _, in := range a.insts {
			if c.idle(in) && !in.freeAt.Add(c.ka).After(c.now) {
				c.st.Expired++
				continue
			}
			kept = append(kept, in)
		}
		a.insts = kept
	}
}

// run serves an invocation of fn on a: warm on its most recently used idle
// instance, else cold after evicting idle instances of other functions,
// least recently used first. It reports false if it does not fit.
func (c *cluster) run(a *pagent, fn int, inv Invocation) bool {
	mru := -1
	for i, in := range a.insts {
		if in.fn == fn && c.idle(in) && (mru < 0 || in.freeAt.After(a.insts[mru].freeAt)) {
			mru = i
		}
	}
	if mru >= 0 {
		a.insts[mru].freeAt = c.now.Add(inv.Duration)
		c.st.Warm++
		return true
	}
	if !c.fits(a, fn) {
		return false
	}
	need := c.fns[fn].MemoryMB
	for {
		all, _ := c.held(a)
		if a.cap-all >= need {
			break
		}
		lru := -1
		for i, in := range a.insts {
			if c.idle(in) && in.fn != fn && (lru < 0 || in.freeAt.Before(a.insts[lru].freeAt)) {
				lru = i
			}
		}
		a.insts = append(a.insts[:lru], a.insts[lru+1:]...)
		c.st.Evictions++
	}
	a.insts = append(a.insts, pinst{fn: fn, freeAt: c.now.Add(c.fns[fn].Init + inv.Duration)})
	c.st.Cold++
	return true
}

// choose picks an agent for fn under policy, or nil.
func (c *cluster) choose(policy string, fn int) *pagent {
	switch policy {
	case PlaceAmber, PlaceAmberInFlight:
		a, _ := c.placeAmber(policy, fn, c.truth, nil)
		return a
	case PlaceOpenWhisk:
		n := len(c.agents)
		h := fnv.New32a()
		h.Write([]byte(c.fns[fn].Name))
		hash := int(h.Sum32() & 0x7fffffff)
		home, step := hash%n, c.steps[hash%len(c.steps)]
		for k := range n {
			if a := c.agents[(home+k*step)%n]; c.usable(a, fn) {
				return a
			}
		}
		return nil
	case PlaceRandom:
		var ok []*pagent
		for _, a := range c.agents {
			if c.usable(a, fn) {
				ok = append(ok, a)
			}
		}
		if len(ok) == 0 {
			return nil
		}
		return ok[c.rng.IntN(len(ok))]
	}
	panic("unknown placement policy " + policy)
}

// agentView is what placement sees of an agent for one function: the
// memory held by all its instances and by its busy ones, and its idle
// instances of the function.
type agentView struct{ all, busy, idle int }

// truth is the agents as they are: a perfect view.
func (c *cluster) truth(i, fn int) agentView {
	all, busy := c.held(c.agents[i])
	return agentView{all: all, busy: busy, idle: c.idleOf(c.agents[i], fn)}
}

// placeAmber runs placement.Place over view for an invocation of fn, as
// PlaceAmber or PlaceAmberInFlight describe, leaving out the agents in
// exclude. It returns the agent and the placement's reason, or nil.
func (c *cluster) placeAmber(policy string, fn int, view func(agent, fn int) agentView, exclude map[string]bool) (*pagent, string) {
	req := placement.Request{Function: c.fns[fn].Name, Version: 1, MemoryMB: c.fns[fn].MemoryMB, Exclude: exclude}
	cands := make([]placement.Candidate, len(c.agents))
	for pass := 0; pass < 2; pass++ {
		inFlight := policy == PlaceAmberInFlight || pass == 1
		for i, a := range c.agents {
			v := view(i, fn)
			reserved := v.all
			if inFlight {
				reserved = v.busy
			}
			cands[i] = placement.Candidate{Name: a.name, State: api.AgentReady, CapacityMB: a.cap,
				ReservedMB: reserved, IdleInstances: v.idle}
		}
		p, err := placement.Place(req, cands)
		if err == nil {
			for _, a := range c.agents {
				if a.name == p.Agent {
					return a, p.Reason
				}
			}
			panic("placement chose an unknown agent " + p.Agent)
		}
		if !errors.Is(err, api.ErrUnavailable) {
			panic(err)
		}
		if inFlight {
			break
		}
	}
	return nil, ""
}

// coprimeSteps are OpenWhisk's step sizes for n invokers: the numbers up
// to n that are co-prime with n and with each other
// (pairwiseCoprimeNumbersUntil).
func coprimeSteps(n int) []int {
	gcd := func(a, b int) int {
		for b != 0 {
			a, b = b, a%b
		}
		return a
	}
	var out []int
	for i := 1; i <= n; i++ {
		if gcd(i, n) != 1 {
			continue
		}
		ok := true
		for _, s := range out {
			if gcd(i, s) != 1 {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, i)
		}
	}
	return out
}

func replayPlacement(w *Workload, arr []arrival, cfg PlacementConfig, policy string) PlacementStats {
	st := PlacementStats{Policy: policy}
	c := newCluster(w, cfg, &st)
	for _, ar := range arr {
		c.now = ar.inv.At
		c.expire()
		c.serve(ar, func() {
			if a := c.choose(policy, ar.fn); a == nil || !c.run(a, ar.fn, ar.inv) {
				st.Dropped++
			}
		})
	}
	return st
}

func newCluster(w *Workload, cfg PlacementConfig, st *PlacementStats) *cluster {
	st.ByPattern = map[Pattern][2]int{}
	c := &cluster{fns: w.Functions, ka: cfg.KeepAlive, now: w.Start, st: st,
		rng: rand.New(rand.NewPCG(cfg.Seed, 0x5eed)), steps: coprimeSteps(cfg.Agents)}
	for i := range cfg.Agents {
		c.agents = append(c.agents, &pagent{name: fmt.Sprintf("agent-%02d", i), cap: cfg.CapacityMB})
	}
	return c
}

// serve counts an arrival around place, which serves or drops it: the
// arrival, its pattern, whether it was warm, and the memory held after.
func (c *cluster) serve(ar arrival, place func()) {
	st := c.st
	st.Invocations++
	pat := c.fns[ar.fn].Pattern
	bp := st.ByPattern[pat]
	bp[0]++
	warm := st.Warm
	place()
	if st.Warm > warm {
		bp[1]++
	}
	st.ByPattern[pat] = bp
	held := 0
	for _, a := range c.agents {
		all, _ := c.held(a)
		held += all
	}
	st.PeakHeldMB = max(st.PeakHeldMB, held)
}
