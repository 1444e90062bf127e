package scheduler

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// minutesOf sums a function's history into counts per minute offset from
// base (in whole minutes) and the histogram counts per kind.
func minutesOf(t *testing.T, h *api.History, fn string, base time.Time) (map[int]api.Counts, map[api.StartKind]int64) {
	t.Helper()
	counts, lat := map[int]api.Counts{}, map[api.StartKind]int64{}
	for _, f := range h.Functions {
		if f.Function != fn {
			continue
		}
		for _, m := range f.Minutes {
			counts[int(m.Minute.Sub(base)/time.Minute)] = m.Counts
			for k, hg := range m.Latency {
				lat[k] += hg.Count
			}
		}
	}
	return counts, lat
}

func TestMinuteLog(t *testing.T) {
	clock := newFakeClock() // 03:04:05
	base := time.Unix(minuteOf(clock.Now()), 0).UTC()
	path := filepath.Join(t.TempDir(), "history.db")
	open := func() *minuteLog {
		t.Helper()
		l, err := openMinuteLog(path, withMinuteClock(clock.Now))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	read := func(l *minuteLog, since time.Time, fn string) map[minuteKey]*minuteEntry {
		t.Helper()
		from := minuteOf(since)
		c := l.cut(from, fn, true)
		out, err := l.read(from, c.floor, fn, maxHistoryMinutes)
		if err != nil {
			t.Fatal(err)
		}
		for k, e := range c.mins {
			out[k] = e
		}
		return out
	}

	l := open()
	// Minute 0: two warm calls of a, one cold failure of b; minute 3: one
	// warm call of a; minute 10: one throttle of a.
	l.count("a", api.StartWarm, false)
	l.observe("a", api.StartWarm, 1.5)
	l.count("a", api.StartWarm, false)
	l.observe("a", api.StartWarm, 2.5)
	l.count("b", api.StartCold, true)
	l.observe("b", api.StartCold, 90)
	clock.Advance(3 * time.Minute)
	l.count("a", api.StartWarm, false)
	l.observe("a", api.StartWarm, 1)
	if err := l.flush(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(7 * time.Minute)
	l.throttle("a")
	if err := l.flush(); err != nil { // minute 0 and 3 now only in the file
		t.Fatal(err)
	}

	key := func(min int, fn string) minuteKey { return minuteKey{base.Unix() + int64(min)*60, fn} }
	tests := []struct {
		name  string
		since time.Duration // back from now (minute 10)
		fn    string
		want  map[minuteKey]api.Counts
	}{
		{"1m", time.Minute, "", map[minuteKey]api.Counts{key(10, "a"): {Throttles: 1}}},
		{"8m", 8 * time.Minute, "", map[minuteKey]api.Counts{key(3, "a"): {Invocations: 1, WarmStarts: 1}, key(10, "a"): {Throttles: 1}}},
		{"15m", 15 * time.Minute, "", map[minuteKey]api.Counts{
			key(0, "a"): {Invocations: 2, WarmStarts: 2}, key(0, "b"): {Invocations: 1, Errors: 1, ColdStarts: 1},
			key(3, "a"): {Invocations: 1, WarmStarts: 1}, key(10, "a"): {Throttles: 1}}},
		{"15m of b", 15 * time.Minute, "b", map[minuteKey]api.Counts{key(0, "b"): {Invocations: 1, Errors: 1, ColdStarts: 1}}},
	}
	check := func(l *minuteLog, when string) {
		t.Helper()
		for _, tc := range tests {
			got := read(l, clock.Now().Add(-tc.since), tc.fn)
			if len(got) != len(tc.want) {
				t.Errorf("%s, %s: %d minutes, want %d", when, tc.name, len(got), len(tc.want))
			}
			for k, w := range tc.want {
				if e := got[k]; e == nil || e.counts != w {
					t.Errorf("%s, %s: minute %+v = %+v, want %+v", when, tc.name, k, e, w)
				}
			}
		}
		all := read(l, base, "a")
		if h := all[key(0, "a")].lat[api.StartWarm]; h == nil || h.Count != 2 || h.SumMs != 4 || h.MaxMs != 2.5 {
			t.Errorf("%s: a's warm histogram of minute 0 = %+v; want 2 values, sum 4, max 2.5", when, h)
		}
	}
	check(l, "before reopen")
	if _, err := l.read(minuteOf(base), minuteOf(clock.Now()), "", 2); !errors.Is(err, errHistoryTooBig) {
		t.Errorf("3 minutes in the file, at most 2 asked: %v; want errHistoryTooBig", err)
	}
	if err := l.close(); err != nil {
		t.Fatal(err)
	}

	l = open()
	check(l, "after reopen")
	// More in the same minute after a restart adds to what was kept.
	l.throttle("a")
	if e := read(l, clock.Now(), "a")[key(10, "a")]; e == nil || e.counts.Throttles != 2 {
		t.Errorf("after reopen, a second throttle in minute 10: %+v; want 2 throttles", e)
	}
	if err := l.close(); err != nil {
		t.Fatal(err)
	}

	// A day later the old minutes are gone, from memory and from the file.
	clock.Advance(24*time.Hour - 5*time.Minute) // minute 10 + 24h - 5m: minutes 0 and 3 are past 24h
	l = open()
	defer l.close()
	got := read(l, base, "")
	if len(got) != 1 || got[key(10, "a")] == nil {
		t.Errorf("after 24h: minutes %v; want only minute 10 of a", got)
	}
	clock.Advance(10 * time.Minute)
	if err := l.flush(); err != nil {
		t.Fatal(err)
	}
	if got := read(l, base, ""); len(got) != 0 {
		t.Errorf("after 24h10m: %d minutes left; want none", len(got))
	}
}

func TestHistoryEndpoint(t *testing.T) {
	ts := newTestScheduler(t, WithToken("tok"))
	base := time.Unix(minuteOf(ts.clock.Now()), 0).UTC()
	invoke := func(fn string, kind api.StartKind, d time.Duration) {
		ts.record(fn, kind, false, nil)
		ts.latency.observe(fn, kind, d)
	}
	invoke("hello", api.StartCold, 80*time.Millisecond)
	invoke("hello", api.StartWarm, time.Millisecond)
	ts.clock.Advance(2 * time.Minute)
	invoke("hello", api.StartWarm, 2*time.Millisecond)
	invoke("other", api.StartWarm, 2*time.Millisecond)

	ts.token = ""
	if resp := ts.do(t, "GET", "/v1/history", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without a token: %d; want 401", resp.StatusCode)
	}
	ts.token = "tok"
	h := decode[api.History](t, ts.do(t, "GET", "/v1/history?since=5m&function=hello", nil), 200)
	if len(h.Functions) != 1 || h.Functions[0].Function != "hello" {
		t.Fatalf("functions %+v; want hello alone", h.Functions)
	}
	f := h.Functions[0]
	if f.Totals.Invocations != 3 || f.Totals.ColdStarts != 1 || f.Latency[api.StartWarm].Count != 2 {
		t.Errorf("totals %+v, latency %v; want 3 invocations, 1 cold, 2 warm latencies", f.Totals, f.Latency)
	}
	counts, lat := minutesOf(t, &h, "hello", base)
	if counts[0].Invocations != 2 || counts[2].Invocations != 1 || len(counts) != 2 {
		t.Errorf("minutes %v; want 2 in minute 0 and 1 in minute 2", counts)
	}
	if lat[api.StartWarm] != 2 || lat[api.StartCold] != 1 {
		t.Errorf("latencies by kind %v; want warm 2, cold 1", lat)
	}

	// A window of one minute holds only the last one; the totals stay.
	h = decode[api.History](t, ts.do(t, "GET", "/v1/history?since=1m", nil), 200)
	if len(h.Functions) != 2 {
		t.Fatalf("functions %+v; want hello and other", h.Functions)
	}
	if counts, _ := minutesOf(t, &h, "hello", base); len(counts) != 1 || counts[2].Invocations != 1 {
		t.Errorf("last minute: %v; want 1 invocation in minute 2", counts)
	}

	// The client asks the same.
	ch, err := api.NewClient(ts.srv.URL, api.WithToken("tok")).History(context.Background(), ts.clock.Now().Add(-5*time.Minute), "hello")
	if err != nil {
		t.Fatal(err)
	}
	if counts, _ := minutesOf(t, ch, "hello", base); len(ch.Functions) != 1 || counts[0].Invocations != 2 || counts[2].Invocations != 1 {
		t.Errorf("client: %+v; want hello's two minutes", ch.Functions)
	}

	resp := ts.do(t, "GET", "/v1/history?since=yesterday", nil)
	if d := errorBody(t, resp, 400); d.Field != "since" {
		t.Errorf("bad since: field %q; want since", d.Field)
	}
}

func TestHistorySurvivesSchedulerRestart(t *testing.T) {
	dir, clock := t.TempDir(), newFakeClock()
	open := func() *Scheduler {
		t.Helper()
		s, err := New(WithDataDir(dir), WithClock(clock.Now), WithLogger(testLogger(t)), WithStartGrace(0))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	s.record("hello", api.StartWarm, false, nil)
	s.latency.observe("hello", api.StartWarm, 3*time.Millisecond)
	if err := s.Close(); err != nil { // flushes the current minute
		t.Fatal(err)
	}
	clock.Advance(time.Minute)

	s = open()
	defer s.Close()
	h, err := s.history(clock.Now().Add(-5*time.Minute), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Functions) != 1 {
		t.Fatalf("functions %+v; want hello's minute from before the restart", h.Functions)
	}
	f := h.Functions[0]
	if len(f.Minutes) != 1 || f.Minutes[0].Invocations != 1 || f.Minutes[0].Latency[api.StartWarm].Count != 1 {
		t.Errorf("minutes %+v; want the one warm call", f.Minutes)
	}
	if f.Totals != (api.Counts{}) || len(f.Latency) != 0 {
		t.Errorf("totals %+v, latency %v; want none since the restart", f.Totals, f.Latency)
	}
}
