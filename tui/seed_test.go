package tui

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// historySource is a fake scheduler that served hello before the console
// opened: 40 warm calls at 11:57 and 2 cold ones at 11:59.
type historySource struct {
	fakeSource
	hist  *api.History
	calls int
}

func (h *historySource) History(ctx context.Context, since time.Time, function string) (*api.History, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	return h.hist, nil
}

func servedHistory() (*api.History, *api.Histogram, *api.Histogram) {
	warm, cold := observe(40, 1, 3), observe(2, 80, 120)
	return &api.History{
		Time:  fixedNow,
		Since: fixedNow.Add(-latKeep).Truncate(time.Minute).Add(time.Minute),
		Functions: []api.FunctionHistory{{
			Function: "hello",
			Minutes: []api.MinuteStats{
				{Minute: time.Date(2026, 5, 4, 11, 57, 0, 0, time.UTC), Counts: api.Counts{Invocations: 40, WarmStarts: 40},
					Latency: map[api.StartKind]*api.Histogram{api.StartWarm: warm}},
				{Minute: time.Date(2026, 5, 4, 11, 59, 0, 0, time.UTC), Counts: api.Counts{Invocations: 2, ColdStarts: 2},
					Latency: map[api.StartKind]*api.Histogram{api.StartCold: cold}},
			},
			Totals:  api.Counts{Invocations: 42, WarmStarts: 40, ColdStarts: 2},
			Latency: map[api.StartKind]*api.Histogram{api.StartWarm: warm, api.StartCold: cold},
		}},
	}, warm, cold
}

// helloState is the stream's state at fixedNow+1s: hello's cumulative
// figures, the history's plus one more warm call.
func helloState(warm, cold *api.Histogram) *api.ClusterState {
	w := warm.Clone()
	w.Observe(2)
	return &api.ClusterState{
		Time: fixedNow.Add(time.Second),
		Functions: []api.FunctionStatus{{
			Function: api.Function{FunctionSpec: api.FunctionSpec{Name: "hello", MemoryMB: 128}, Version: 1},
			Stats:    api.FunctionStats{Invocations: 43, WarmStarts: 41, ColdStarts: 2},
			Latency:  map[api.StartKind]*api.Histogram{api.StartWarm: w, api.StartCold: cold.Clone()},
		}},
	}
}

func TestConsoleOpenedAfterInvocations(t *testing.T) {
	hist, warm, cold := servedHistory()
	tests := []struct {
		name       string
		withHist   bool
		windowKeys []string // w presses from the default 5m window
		want       []string
		dontWant   []string
	}{
		{name: "5m without history", want: []string{"cold    no invocations in this window", "warm    no invocations in this window"}},
		{name: "5m", withHist: true, want: []string{"window 5m", "cold    n=2 ", "warm    n=41 "}, dontWant: []string{"cold    no invocations", "warm    no invocations"}},
		{name: "15m", withHist: true, windowKeys: []string{"w"}, want: []string{"window 15m", "cold    n=2 ", "warm    n=41 "}},
		{name: "1m", withHist: true, windowKeys: []string{"w", "w", "w"}, want: []string{"window 1m", "cold    n=2 ", "warm    n=1 "}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ch := make(chan api.StreamMessage, 1)
			ch <- api.StreamMessage{State: helloState(warm, cold)}
			var src Source = &fakeSource{stream: ch}
			hs := &historySource{fakeSource: fakeSource{stream: ch}, hist: hist}
			if tc.withHist {
				src = hs
			}
			m, _ := send(t, newTestModel(src, WithClock(func() time.Time { return fixedNow.Add(time.Second) })), size(100, 30))
			m, cmd := send(t, m, m.openStream()())
			m = execCmd(t, m, cmd) // the state, then the history
			if tc.withHist && hs.calls != 1 {
				t.Fatalf("history fetched %d times on open; want 1", hs.calls)
			}
			m, _ = send(t, m, press("4"))
			for _, k := range tc.windowKeys {
				m, _ = send(t, m, press(k))
			}
			m, _ = send(t, m, renderMsg{})
			v := m.View()
			for _, w := range tc.want {
				if !strings.Contains(v, w) {
					t.Errorf("screen lacks %q:\n%s", w, v)
				}
			}
			for _, w := range tc.dontWant {
				if strings.Contains(v, w) {
					t.Errorf("screen has %q:\n%s", w, v)
				}
			}
		})
	}

	t.Run("scheduler restarted", func(t *testing.T) {
		// The same minutes, kept on disk, but the restarted scheduler's
		// counters and histograms start from zero, and so does the state.
		h := *hist
		h.Functions = []api.FunctionHistory{hist.Functions[0]}
		h.Functions[0].Totals, h.Functions[0].Latency = api.Counts{}, nil
		hs := &historySource{hist: &h}
		m, _ := send(t, newTestModel(hs, WithClock(func() time.Time { return fixedNow.Add(time.Second) })), size(100, 30))
		st := helloState(warm, cold)
		st.Functions[0].Stats, st.Functions[0].Latency = api.FunctionStats{}, nil
		m, _ = send(t, m, streamDataMsg{msg: api.StreamMessage{State: st}}, historyMsg{hist: &h}, press("4"), renderMsg{})
		v := m.View()
		for _, w := range []string{"cold    n=2 ", "warm    n=40 ", "max 3.20 ms"} {
			if !strings.Contains(v, w) {
				t.Errorf("after a scheduler restart the 5m window lacks %q:\n%s", w, v)
			}
		}
	})

	t.Run("reconnect and overview", func(t *testing.T) {
		hs := &historySource{hist: hist}
		m, _ := send(t, newTestModel(hs, WithClock(func() time.Time { return fixedNow.Add(time.Second) })), size(100, 30))
		st := helloState(warm, cold)
		m, _ = send(t, m, streamDataMsg{msg: api.StreamMessage{State: st}}, historyMsg{hist: hist})
		// The connection breaks and comes back: the same history arrives
		// again and must not count twice.
		m, _ = send(t, m, streamClosedMsg{gen: 0, err: errRefused}, reconnectMsg{gen: 1})
		m, _ = send(t, m, streamDataMsg{gen: 1, msg: api.StreamMessage{State: st}}, historyMsg{gen: 1, hist: hist}, press("4"), renderMsg{})
		v := m.View()
		for _, w := range []string{"cold    n=2 ", "warm    n=41 "} {
			if !strings.Contains(v, w) {
				t.Errorf("after a reconnect the 5m window lacks %q:\n%s", w, v)
			}
		}
		// Cold starts per minute over the last 5 minutes: 2 in 5m06s.
		m, _ = send(t, m, press("1"), renderMsg{})
		if v := m.View(); !strings.Contains(v, "cold starts 0.4/min") {
			t.Errorf("overview lacks the cold starts from history:\n%s", v)
		}
		// A history of a later generation is ignored.
		if mm, _ := send(t, m, historyMsg{gen: 0, hist: &api.History{Time: fixedNow}}); len(mm.hist.lat) != len(m.hist.lat) {
			t.Errorf("a stale connection's history changed the snapshots")
		}
	})
}

// TestSeedRateSparkline: the sparkline starts with the minutes' averages,
// live samples push them out, and a second seed (a reconnect) replaces
// them instead of adding more.
func TestSeedRateSparkline(t *testing.T) {
	hist, warm, cold := servedHistory()
	h := newHistory()
	h.seed(hist)
	// 11:45 … 11:59 are the whole minutes before 12:00:05.
	if len(h.rate) != 15 || h.ratePre != 15 {
		t.Fatalf("after seeding: %d values, %d from history; want 15 and 15", len(h.rate), h.ratePre)
	}
	if got := h.rate[12]; math.Abs(got-40.0/60) > 1e-9 {
		t.Errorf("11:57's rate %v; want 40/60", got)
	}
	st := helloState(warm, cold)
	for i := range 20 {
		s := *st
		s.Time = fixedNow.Add(time.Duration(i+1) * time.Second)
		h.add(&s, s.Time)
	}
	steps := []struct {
		name           string
		reseed         bool
		wantN, wantPre int
	}{
		{"20 live samples later", false, sparkLen, 10},
		{"seeded again", true, sparkLen, 10},
	}
	for _, s := range steps {
		if s.reseed {
			h.seed(hist)
		}
		if len(h.rate) != s.wantN || h.ratePre != s.wantPre {
			t.Errorf("%s: %d values, %d from history; want %d and %d", s.name, len(h.rate), h.ratePre, s.wantN, s.wantPre)
		}
	}
}
