package tui

import (
	"math"
	"slices"
	"sort"
	"time"

	"github.com/amberfn/amber/api"
)

// This file is the console's memory: it keeps a short history of the
// cluster states the stream delivered, so that the views can show rates
// (from successive cumulative counters), sparklines and latency over a
// window (by subtracting cumulative histograms). Pure data, no Bubble Tea.

const (
	sparkLen   = 30               // samples kept per agent for the sparklines
	rateWindow = 10 * time.Second // invocations per second are averaged over this
	rateKeep   = 32               // counter samples kept (the stream sends one a second)
	latStep    = 10 * time.Second // a latency snapshot at most this often
	latKeep    = 16 * time.Minute // snapshots kept: enough for the 15 minute window
	coldWindow = 5 * time.Minute  // cold starts per minute are averaged over this
)

// counters are one function's cumulative counters in one state.
type counters struct {
	inv, cold, warm, errs int64
}

// fnIndex maps function names to their place in a list of counters;
// successive samples of the same functions share one.
type fnIndex struct {
	names []string
	pos   map[string]int
}

func newFnIndex(names []string) *fnIndex {
	ix := &fnIndex{names: names, pos: make(map[string]int, len(names))}
	for i, n := range names {
		ix.pos[n] = i
	}
	return ix
}

// sameNames says whether ix lists the functions of st, in order.
func (ix *fnIndex) sameNames(st *api.ClusterState) bool {
	if ix == nil || len(ix.names) != len(st.Functions) {
		return false
	}
	for i := range st.Functions {
		if ix.names[i] != st.Functions[i].Name {
			return false
		}
	}
	return true
}

// countSet is every function's counters at one time.
type countSet struct {
	ix *fnIndex
	c  []counters
}

func (s countSet) get(name string) (counters, bool) {
	if s.ix == nil {
		return counters{}, false
	}
	i, ok := s.ix.pos[name]
	if !ok {
		return counters{}, false
	}
	return s.c[i], true
}

// peer is o's counters of s's i-th function (zero when o lacks it).
func (s countSet) peer(i int, o countSet) counters {
	if o.ix == s.ix {
		return o.c[i]
	}
	c, _ := o.get(s.ix.names[i])
	return c
}

func countsOf(st *api.ClusterState, prev *fnIndex) countSet {
	ix := prev
	if !ix.sameNames(st) {
		names := make([]string, len(st.Functions))
		for i := range st.Functions {
			names[i] = st.Functions[i].Name
		}
		ix = newFnIndex(names)
	}
	cs := countSet{ix: ix, c: make([]counters, len(st.Functions))}
	for i := range st.Functions {
		f := &st.Functions[i]
		cs.c[i] = counters{inv: f.Stats.Invocations, cold: f.Stats.ColdStarts, warm: f.Stats.WarmStarts, errs: f.Stats.Errors}
	}
	return cs
}

// sample is the counters of every function at one time.
type sample struct {
	t time.Time
	countSet
}

// latSnap is the cumulative latency histograms at one time, per function
// and start kind, plus their sum over all functions, and the cumulative
// counters. A function whose histogram did not change shares the previous
// snapshot's pointer, so an idle cluster costs almost nothing to remember.
// Snapshots come from the stream's states and, for the time before the
// console opened, from the scheduler's per-minute history (seed).
type latSnap struct {
	t   time.Time
	fns map[string]map[api.StartKind]*api.Histogram
	all map[api.StartKind]*api.Histogram
	cnt countSet
}

// series is a bounded list of float samples (oldest first).
type series []float64

func (s series) push(v float64, n int) series {
	if len(s) >= n && n > 0 {
		// Full: shift in place (a series belongs to the history alone).
		s = s[len(s)-n:]
		copy(s, s[1:])
		s[n-1] = v
		return s
	}
	return append(s, v)
}

// history is what the console remembers of past states.
type history struct {
	samples []sample
	old     int // the sample the rate window starts at (see base); -1 for none
	lat     []latSnap
	cpu     map[string]series // per agent, percent
	mem     map[string]series // per agent, percent of total
	rate    series            // cluster invocations per second, per state
	// ratePre is how many values at the front of rate are per-minute
	// averages from the scheduler's history rather than live samples.
	ratePre int
}

func newHistory() *history {
	return &history{cpu: map[string]series{}, mem: map[string]series{}, old: -1}
}

// stateTime is when a state was taken: its own stamp, else now.
func stateTime(st *api.ClusterState, now time.Time) time.Time {
	if st != nil && !st.Time.IsZero() {
		return st.Time
	}
	return now
}

// add records a state taken at t. States older than the newest sample
// (a late or replayed one) are ignored.
func (h *history) add(st *api.ClusterState, t time.Time) {
	if st == nil {
		return
	}
	if n := len(h.samples); n > 0 && !t.After(h.samples[n-1].t) {
		return
	}
	var prev *fnIndex
	if n := len(h.samples); n > 0 {
		prev = h.samples[n-1].ix
	}
	h.samples = append(h.samples, sample{t: t, countSet: countsOf(st, prev)})
	if n := len(h.samples); n > rateKeep {
		copy(h.samples, h.samples[n-rateKeep:])
		clear(h.samples[rateKeep:])
		h.samples = h.samples[:rateKeep]
	}
	h.old = h.findBase()
	r, _ := h.clusterRate()
	if len(h.rate) >= sparkLen && h.ratePre > 0 {
		h.ratePre-- // the oldest history value leaves the sparkline
	}
	h.rate = h.rate.push(r, sparkLen)

	seen := map[string]bool{}
	for _, a := range st.Agents {
		seen[a.Name] = true
		h.cpu[a.Name] = h.cpu[a.Name].push(clampPct(a.Stats.CPUPercent), sparkLen)
		mp := 0.0
		if a.Stats.MemTotalBytes > 0 {
			mp = 100 * float64(a.Stats.MemUsedBytes) / float64(a.Stats.MemTotalBytes)
		}
		h.mem[a.Name] = h.mem[a.Name].push(mp, sparkLen)
	}
	for name := range h.cpu {
		if !seen[name] {
			delete(h.cpu, name)
			delete(h.mem, name)
		}
	}

	if n := len(h.lat); n == 0 || t.Sub(h.lat[n-1].t) >= latStep {
		h.lat = append(h.lat, h.snapshot(st, t))
		cut := 0
		for cut < len(h.lat)-1 && t.Sub(h.lat[cut].t) > latKeep {
			cut++
		}
		if cut > 0 {
			h.lat = append([]latSnap(nil), h.lat[cut:]...)
		}
	}
}

func (h *history) snapshot(st *api.ClusterState, t time.Time) latSnap {
	var prev map[string]map[api.StartKind]*api.Histogram
	if n := len(h.lat); n > 0 {
		prev = h.lat[n-1].fns
	}
	s := latSnap{t: t, fns: make(map[string]map[api.StartKind]*api.Histogram, len(st.Functions)), all: map[api.StartKind]*api.Histogram{}}
	if n := len(h.samples); n > 0 && h.samples[n-1].t.Equal(t) {
		s.cnt = h.samples[n-1].countSet // the counters of this very state
	} else {
		s.cnt = countsOf(st, nil)
	}
	for _, f := range st.Functions {
		if p := prev[f.Name]; p != nil && sameCounts(p, f.Latency) {
			s.fns[f.Name] = p // nothing changed: share the whole map
			for k, hg := range f.Latency {
				if hg != nil {
					addTo(s.all, k, hg)
				}
			}
			continue
		}
		m := make(map[api.StartKind]*api.Histogram, len(f.Latency))
		for k, hg := range f.Latency {
			if hg == nil {
				continue
			}
			if p := prev[f.Name][k]; p != nil && p.Count == hg.Count {
				m[k] = p // unchanged: share
			} else {
				m[k] = hg.Clone()
			}
			all := s.all[k]
			if all == nil {
				all = &api.Histogram{}
				s.all[k] = all
			}
			all.Merge(hg)
		}
		s.fns[f.Name] = m
	}
	return s
}

// sameCounts says whether a snapshot's histograms p hold the counts of cur
// for every start kind (nil entries of cur left out).
func sameCounts(p, cur map[api.StartKind]*api.Histogram) bool {
	n := 0
	for k, hg := range cur {
		if hg == nil {
			continue
		}
		n++
		if q := p[k]; q == nil || q.Count != hg.Count {
			return false
		}
	}
	return n == len(p)
}

// delta is the change of a cumulative counter; a counter that went down
// was reset (a scheduler restart) and counts from zero.
func delta(cur, old int64) int64 {
	if cur < old {
		return cur
	}
	return cur - old
}

// findBase is the index of the oldest sample within rateWindow of the
// newest one (not the newest itself), or -1 when there is only one sample.
func (h *history) findBase() int {
	n := len(h.samples)
	if n < 2 {
		return -1
	}
	cur := h.samples[n-1]
	for i := 0; i < n-1; i++ {
		if cur.t.Sub(h.samples[i].t) <= rateWindow {
			return i
		}
	}
	return n - 2
}

// base returns the sample the rate window starts at and the newest one,
// or false when there is only one sample.
func (h *history) base() (old, cur *sample, ok bool) {
	if h.old < 0 || h.old >= len(h.samples)-1 {
		return nil, nil, false
	}
	return &h.samples[h.old], &h.samples[len(h.samples)-1], true
}

// fnRate is a function's invocations per second and cold starts per
// minute over the rate window; ok is false until two states are known.
func (h *history) fnRate(name string) (invPerSec, coldPerMin float64, ok bool) {
	old, cur, ok := h.base()
	if !ok {
		return 0, 0, false
	}
	i, in := cur.ix.pos[name]
	if !in {
		return 0, 0, false
	}
	c, o := cur.c[i], cur.peer(i, old.countSet) // a new function counts from zero
	dt := cur.t.Sub(old.t).Seconds()
	return float64(delta(c.inv, o.inv)) / dt, float64(delta(c.cold, o.cold)) / dt * 60, true
}

// clusterRate sums invocations per second over every function.
func (h *history) clusterRate() (float64, bool) {
	old, cur, ok := h.base()
	if !ok {
		return 0, false
	}
	var d int64
	for i, c := range cur.c {
		d += delta(c.inv, cur.peer(i, old.countSet).inv)
	}
	return float64(d) / cur.t.Sub(old.t).Seconds(), true
}

// clusterCold is cluster cold starts per minute and the share of starts
// that were cold (NaN if none), over the last coldWindow (or what of it is
// known: the snapshots, seeded from the scheduler's history).
func (h *history) clusterCold() (perMin, share float64, ok bool) {
	n := len(h.samples)
	if n == 0 {
		return 0, math.NaN(), false
	}
	cur := h.samples[n-1]
	old := h.baseSnap(cur.t, coldWindow)
	if old == nil || !cur.t.After(old.t) {
		return 0, math.NaN(), false
	}
	var cold, starts int64
	for i, c := range cur.c {
		o := cur.peer(i, old.cnt)
		dc, dw := delta(c.cold, o.cold), delta(c.warm, o.warm)
		cold += dc
		starts += dc + dw
	}
	share = math.NaN()
	if starts > 0 {
		share = 100 * float64(cold) / float64(starts)
	}
	return float64(cold) / cur.t.Sub(old.t).Seconds() * 60, share, true
}

// Latency windows.
var latWindows = []struct {
	label string
	d     time.Duration // 0: since the scheduler started
}{{"1m", time.Minute}, {"5m", 5 * time.Minute}, {"15m", 15 * time.Minute}, {"all", 0}}

// baseSnap picks the snapshot to subtract for a window ending at now: the
// newest one at least d old, else the oldest kept (a shorter window). It
// returns nil for "all" or when nothing is kept yet.
func (h *history) baseSnap(now time.Time, d time.Duration) *latSnap {
	if d <= 0 || len(h.lat) == 0 {
		return nil
	}
	for i := len(h.lat) - 1; i >= 0; i-- {
		if now.Sub(h.lat[i].t) >= d {
			return &h.lat[i]
		}
	}
	return &h.lat[0]
}

// subHist returns cur − base, bucket by bucket. If the counter went down
// (a restart) cur is returned whole. MaxMs becomes the upper bound of the
// highest non-empty bucket (capped by cur's max), since the true maximum
// of a window is not known.
func subHist(cur, base *api.Histogram) *api.Histogram {
	if cur == nil {
		return nil
	}
	if base == nil || base.Count > cur.Count || (base.Count == 0 && !slices.ContainsFunc(base.Counts, func(c int64) bool { return c != 0 })) {
		return cur.Clone()
	}
	n := max(len(cur.Counts), len(base.Counts))
	out := &api.Histogram{Counts: make([]int64, n)}
	top, neg := -1, false
	for i := range n {
		var c int64
		if i < len(cur.Counts) {
			c = cur.Counts[i]
		}
		if i < len(base.Counts) {
			c -= base.Counts[i]
			neg = neg || base.Counts[i] < 0
		}
		if c < 0 {
			return cur.Clone() // histograms of different runs
		}
		out.Counts[i] = c
		out.Count += c
		if c > 0 {
			top = i
		}
	}
	out.SumMs = max(cur.SumMs-base.SumMs, 0)
	if top >= 0 {
		out.MaxMs = api.BucketBound(top)
		if !neg {
			// A base from history before a scheduler restart counts
			// below zero, and then cur's maximum is not the window's.
			out.MaxMs = min(out.MaxMs, cur.MaxMs)
		}
	}
	return out
}

// windowLatency returns the latency per start kind of one function ("" for
// every function) over the window d ending at the state st, and the span
// the window really covers (0 for "all").
func (h *history) windowLatency(st *api.ClusterState, fn string, now time.Time, d time.Duration) (map[api.StartKind]*api.Histogram, time.Duration) {
	cur := currentLatency(st, fn)
	b := h.baseSnap(now, d)
	if b == nil {
		return cur, 0
	}
	var base map[api.StartKind]*api.Histogram
	if fn == "" {
		base = b.all
	} else {
		base = b.fns[fn]
	}
	out := make(map[api.StartKind]*api.Histogram, len(cur))
	for k, hg := range cur {
		out[k] = subHist(hg, base[k])
	}
	for k, hg := range base {
		if _, ok := cur[k]; !ok && hg != nil && hg.Count < 0 {
			// Seen before a scheduler restart, not since.
			out[k] = subHist(&api.Histogram{}, hg)
		}
	}
	return out, now.Sub(b.t)
}

// currentLatency merges the cumulative histograms of one function, or of
// every function when fn is "".
func currentLatency(st *api.ClusterState, fn string) map[api.StartKind]*api.Histogram {
	out := map[api.StartKind]*api.Histogram{}
	if st == nil {
		return out
	}
	for _, f := range st.Functions {
		if fn != "" && f.Name != fn {
			continue
		}
		for k, hg := range f.Latency {
			if hg == nil {
				continue
			}
			m := out[k]
			if m == nil {
				m = &api.Histogram{}
				out[k] = m
			}
			m.Merge(hg)
		}
	}
	return out
}

// mergeKinds sums the histograms of every start kind.
func mergeKinds(m map[api.StartKind]*api.Histogram) *api.Histogram {
	out := &api.Histogram{}
	mergeKindsInto(out, m)
	return out
}

// mergeKindsInto adds the histograms of every start kind to out, in the
// order of the kinds (so the sums come out the same whatever the map's).
func mergeKindsInto(out *api.Histogram, m map[api.StartKind]*api.Histogram) {
	var buf [8]api.StartKind
	ks := buf[:0]
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	for _, k := range ks {
		out.Merge(m[k])
	}
}

func sortedKinds(m map[api.StartKind]*api.Histogram) []api.StartKind {
	ks := make([]api.StartKind, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i] < ks[j] })
	return ks
}

// p99Trend is the p99 of each step between successive snapshots (and the
// current state) for one function ("" for all) and start kind ("" for all
// kinds), oldest first; steps without invocations are NaN.
func (h *history) p99Trend(st *api.ClusterState, fn string, kind api.StartKind, max int) []float64 {
	pick := func(fns map[string]map[api.StartKind]*api.Histogram, all map[api.StartKind]*api.Histogram) *api.Histogram {
		m := all
		if fn != "" {
			m = fns[fn]
		}
		if kind == "" {
			return mergeKinds(m)
		}
		return m[kind]
	}
	var hs []*api.Histogram
	for _, s := range h.lat {
		hs = append(hs, pick(s.fns, s.all))
	}
	if st != nil {
		cur := currentLatency(st, fn)
		var c *api.Histogram
		if kind == "" {
			c = mergeKinds(cur)
		} else {
			c = cur[kind]
		}
		if n := len(h.lat); n == 0 || !stateTime(st, time.Time{}).Equal(h.lat[n-1].t) {
			hs = append(hs, c)
		}
	}
	var out []float64
	for i := 1; i < len(hs); i++ {
		d := subHist(hs[i], hs[i-1])
		if d == nil || d.Count == 0 {
			out = append(out, math.NaN())
			continue
		}
		out = append(out, d.Quantile(0.99))
	}
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return out
}

// quantileBucket is the index of the bucket holding quantile q, or -1.
func quantileBucket(h *api.Histogram, q float64) int {
	if h == nil || h.Count == 0 {
		return -1
	}
	rank := int64(math.Ceil(q * float64(h.Count)))
	var seen int64
	for i, c := range h.Counts {
		seen += c
		if seen >= rank {
			return i
		}
	}
	return len(h.Counts) - 1
}

func clampPct(p float64) float64 {
	if math.IsNaN(p) || p < 0 {
		return 0
	}
	return min(p, 100)
}
