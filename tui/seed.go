package tui

import (
	"sort"
	"time"

	"github.com/amberfn/amber/api"
)

// seed joins the scheduler's per-minute history to what the stream
// delivered, so that the latency windows, cold starts per minute and the
// rate sparkline show the time before the console opened (or before a
// reconnect).
//
// The history carries, read at one instant T, each function's cumulative
// counters and histograms (the figures states carry) and its minutes.
// The cumulative figures at the start of a minute m are then the ones at T
// minus every minute from m on: seed turns them into snapshots at T and at
// each minute start before it. Windows subtract one snapshot from the
// current state, as they always did, so nothing is counted twice. A
// snapshot of the stream taken before T is replaced (it may come from a
// scheduler that restarted since); those after T are kept.
func (h *history) seed(hs *api.History) {
	if hs == nil || hs.Time.IsZero() {
		return
	}
	at := hs.Time
	top := at.Truncate(time.Minute)
	oldest := at.Add(-latKeep)

	// The snapshot at T: the cumulative figures. cnts holds each
	// snapshot's counters by name until they are indexed at the end.
	type snap struct {
		latSnap
		cnt map[string]counters
	}
	cur := snap{latSnap{t: at, fns: map[string]map[api.StartKind]*api.Histogram{}, all: map[api.StartKind]*api.Histogram{}}, map[string]counters{}}
	// minutes[start] lists what each function did in that minute.
	type fnMinute struct {
		fn string
		m  *api.MinuteStats
	}
	minutes := map[time.Time][]fnMinute{}
	for i := range hs.Functions {
		f := &hs.Functions[i]
		c := f.Totals
		cur.cnt[f.Function] = counters{inv: c.Invocations, cold: c.ColdStarts, warm: c.WarmStarts, errs: c.Errors}
		m := make(map[api.StartKind]*api.Histogram, len(f.Latency))
		for k, hg := range f.Latency {
			if hg == nil {
				continue
			}
			m[k] = hg
			addTo(cur.all, k, hg)
		}
		cur.fns[f.Function] = m
		for j := range f.Minutes {
			mm := &f.Minutes[j]
			minutes[mm.Minute.UTC()] = append(minutes[mm.Minute.UTC()], fnMinute{f.Function, mm})
		}
	}

	// Walk back a minute at a time, subtracting each minute's figures;
	// functions idle in a minute share the newer snapshot's maps.
	snaps := []snap{cur}
	prev := cur
	var rates []float64 // complete minutes, newest first
	for b := top; !b.Before(oldest) && !b.Before(hs.Since); b = b.Add(-time.Minute) {
		s := snap{latSnap{t: b, fns: make(map[string]map[api.StartKind]*api.Histogram, len(prev.fns)), all: prev.all}, prev.cnt}
		for fn, m := range prev.fns {
			s.fns[fn] = m
		}
		var inv int64
		if ms := minutes[b]; len(ms) > 0 {
			s.cnt = make(map[string]counters, len(prev.cnt))
			for fn, c := range prev.cnt {
				s.cnt[fn] = c
			}
			s.all = cloneKinds(prev.all)
			for _, x := range ms {
				c := s.cnt[x.fn]
				c.inv -= x.m.Invocations
				c.cold -= x.m.ColdStarts
				c.warm -= x.m.WarmStarts
				c.errs -= x.m.Errors
				s.cnt[x.fn] = c
				inv += x.m.Invocations
				if len(x.m.Latency) == 0 {
					continue
				}
				m := cloneKinds(s.fns[x.fn])
				for k, hg := range x.m.Latency {
					m[k] = minusHist(m[k], hg)
					s.all[k] = minusHist(s.all[k], hg)
				}
				s.fns[x.fn] = m
			}
		}
		if !b.Add(time.Minute).After(at) { // a complete minute
			rates = append(rates, float64(inv)/60)
		}
		if b.Equal(at) {
			prev = s
			continue // the same instant as the snapshot at T
		}
		snaps = append(snaps, s)
		prev = s
	}
	// Oldest first, and the stream's snapshots after T.
	names := make([]string, 0, len(cur.cnt))
	for n := range cur.cnt {
		names = append(names, n)
	}
	sort.Strings(names)
	ix := newFnIndex(names)
	lat := make([]latSnap, 0, len(snaps)+len(h.lat))
	for i := len(snaps) - 1; i >= 0; i-- {
		s := snaps[i]
		s.latSnap.cnt = countSet{ix: ix, c: make([]counters, len(names))}
		for j, n := range names {
			s.latSnap.cnt.c[j] = s.cnt[n]
		}
		lat = append(lat, s.latSnap)
	}
	for _, s := range h.lat {
		if s.t.After(at) {
			lat = append(lat, s)
		}
	}
	h.lat = lat

	// The rate sparkline starts with the minutes' averages until live
	// samples push them out.
	live := h.rate[min(h.ratePre, len(h.rate)):]
	pre := make(series, 0, len(rates))
	for i := len(rates) - 1; i >= 0; i-- {
		pre = append(pre, rates[i])
	}
	if n := sparkLen - len(live); len(pre) > n {
		pre = pre[len(pre)-max(n, 0):]
	}
	h.rate = append(pre, live...)
	h.ratePre = len(pre)
}

func addTo(m map[api.StartKind]*api.Histogram, k api.StartKind, hg *api.Histogram) {
	a := m[k]
	if a == nil {
		a = &api.Histogram{}
		m[k] = a
	}
	a.Merge(hg)
}

func cloneKinds(m map[api.StartKind]*api.Histogram) map[api.StartKind]*api.Histogram {
	out := make(map[api.StartKind]*api.Histogram, len(m))
	for k, h := range m {
		out[k] = h
	}
	return out
}

// minusHist is a − b, bucket by bucket, as a new histogram; counts may go
// below zero when a comes from a scheduler that restarted since b was
// counted (the window's subtraction then adds them back). MaxMs stays a's.
func minusHist(a, b *api.Histogram) *api.Histogram {
	out := &api.Histogram{Counts: make([]int64, api.HistBuckets)}
	if a != nil {
		copy(out.Counts, a.Counts)
		out.Count, out.SumMs, out.MaxMs = a.Count, a.SumMs, a.MaxMs
	}
	if b != nil {
		for i, c := range b.Counts {
			if i < len(out.Counts) {
				out.Counts[i] -= c
			}
		}
		out.Count -= b.Count
		out.SumMs -= b.SumMs
	}
	return out
}
