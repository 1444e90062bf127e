package scheduler

import (
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// evs builds arrivals one second apart: n of them at concurrency conc,
// the first cold of them cold.
type evSpec struct{ n, conc, cold int }

func makeArrivals(specs ...evSpec) []arrival {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var out []arrival
	for _, s := range specs {
		for i := range s.n {
			out = append(out, arrival{at: t0.Add(time.Duration(len(out)) * time.Second), concurrent: s.conc, cold: i < s.cold})
		}
	}
	return out
}

func TestRecommendFrom(t *testing.T) {
	const window = 30 * time.Minute
	tests := []struct {
		name        string
		evs         []arrival
		memMB, capN int
		want        int
		wantAvoided float64 // per hour
		wantReason  string
	}{
		{name: "no arrivals", memMB: 128, capN: 100, want: 0, wantReason: "no invocations in the last 30m0s"},
		{name: "a single arrival", evs: makeArrivals(evSpec{1, 1, 1}), memMB: 128, capN: 100, want: 1, wantAvoided: 2, wantReason: "p95 concurrency over 1 invocations"},
		{name: "steady single concurrency", evs: makeArrivals(evSpec{60, 1, 3}), memMB: 128, capN: 100, want: 1, wantAvoided: 6},
		{name: "concurrency 0 counts as 1", evs: makeArrivals(evSpec{10, 0, 1}), memMB: 128, capN: 100, want: 1, wantAvoided: 2},
		{name: "bursts over 5% set the p95", evs: makeArrivals(evSpec{90, 1, 0}, evSpec{10, 5, 4}), memMB: 128, capN: 100, want: 5, wantAvoided: 8},
		{name: "bursts under 5% do not", evs: makeArrivals(evSpec{96, 1, 1}, evSpec{4, 5, 4}), memMB: 128, capN: 100, want: 1, wantAvoided: 2},
		{name: "p95 of 20", evs: makeArrivals(evSpec{18, 1, 0}, evSpec{1, 4, 0}, evSpec{1, 7, 0}), memMB: 128, capN: 100, want: 4},
		{name: "cap applied", evs: makeArrivals(evSpec{100, 8, 2}), memMB: 128, capN: 3, want: 3, wantReason: ", capped at 3"},
		{name: "no cap", evs: makeArrivals(evSpec{100, 8, 2}), memMB: 128, capN: 0, want: 8, wantAvoided: 4},
		{name: "at the cap is not capped", evs: makeArrivals(evSpec{10, 3, 0}), memMB: 128, capN: 3, want: 3},
		{
			// p95 is 2: the colds at 1 and 2 would have been avoided, the one at 9 not.
			name:  "avoided counts only colds within min_warm",
			evs:   makeArrivals(evSpec{37, 1, 3}, evSpec{3, 2, 2}, evSpec{1, 9, 1}),
			memMB: 1536, capN: 100, want: 2, wantAvoided: 10,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := recommendFrom(tt.evs, window, tt.memMB, tt.capN)
			if got.MinWarm != tt.want {
				t.Errorf("min_warm %d, want %d (%s)", got.MinWarm, tt.want, got.Reason)
			}
			if want := float64(tt.want) * float64(tt.memMB) / 1024 * 3600; got.WarmthGBsPerHour != want {
				t.Errorf("warmth %v GB-s/hour, want %v", got.WarmthGBsPerHour, want)
			}
			if got.ColdStartsAvoidedPerHour != tt.wantAvoided {
				t.Errorf("cold starts avoided %v/hour, want %v", got.ColdStartsAvoidedPerHour, tt.wantAvoided)
			}
			if !strings.Contains(got.Reason, tt.wantReason) || got.Reason == "" {
				t.Errorf("reason %q, want it to contain %q", got.Reason, tt.wantReason)
			}
			if len(tt.evs) > 0 && (tt.capN == 0 || tt.want < tt.capN) && strings.Contains(got.Reason, "capped") {
				t.Errorf("reason %q says capped", got.Reason)
			}
		})
	}
	t.Run("warmth of 2 × 1.5 GB", func(t *testing.T) {
		got := recommendFrom(makeArrivals(evSpec{10, 2, 0}), window, 1536, 100)
		if got.WarmthGBsPerHour != 10800 {
			t.Errorf("warmth %v, want 10800 GB-s/hour", got.WarmthGBsPerHour)
		}
	})
	t.Run("order does not matter", func(t *testing.T) {
		evs := makeArrivals(evSpec{50, 1, 5}, evSpec{8, 3, 4}, evSpec{2, 6, 2})
		want := recommendFrom(evs, window, 256, 100)
		r := rand.New(rand.NewPCG(1, 2))
		for range 5 {
			r.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
			if got := recommendFrom(evs, window, 256, 100); got != want {
				t.Fatalf("shuffled: %+v, want %+v", got, want)
			}
		}
	})
	t.Run("does not reorder its input", func(t *testing.T) {
		evs := makeArrivals(evSpec{3, 5, 0}, evSpec{3, 1, 0})
		recommendFrom(evs, window, 128, 100)
		if evs[0].concurrent != 5 || evs[5].concurrent != 1 {
			t.Errorf("input changed: %+v", evs)
		}
	})
	t.Run("exported wrapper", func(t *testing.T) {
		evs := makeArrivals(evSpec{37, 1, 3}, evSpec{3, 2, 2}, evSpec{1, 9, 1})
		ex := make([]Arrival, len(evs))
		for i, e := range evs {
			ex[i] = Arrival{At: e.at, Concurrent: e.concurrent, Cold: e.cold}
		}
		if got, want := Recommend(ex, window, 512, 100), recommendFrom(evs, window, 512, 100); got != want {
			t.Errorf("Recommend %+v, recommendFrom %+v", got, want)
		}
	})
}

func TestArrivals(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	a := newArrivals()
	// Added as invocations end: a long one that arrived first ends last.
	for _, sec := range []int{5, 1, 7, 3, 9, 2, 0} {
		a.add("f", arrival{at: t0.Add(time.Duration(sec) * time.Second), concurrent: sec})
	}
	got := a.recent("f", t0.Add(3*time.Second))
	var secs []int
	for _, e := range got {
		secs = append(secs, e.concurrent)
	}
	if want := []int{3, 5, 7, 9}; !equalInts(secs, want) {
		t.Errorf("recent since 3s: %v, want %v", secs, want)
	}
	if n := len(a.recent("g", t0)); n != 0 {
		t.Errorf("another function: %d arrivals", n)
	}
	a.drop("f")
	if n := len(a.recent("f", t0)); n != 0 {
		t.Errorf("after drop: %d arrivals", n)
	}
	// Bounded: the oldest go first.
	for i := range maxAutoEvents + 10 {
		a.add("f", arrival{at: t0.Add(time.Duration(i) * time.Millisecond), concurrent: i})
	}
	all := a.recent("f", t0)
	if len(all) > maxAutoEvents || all[len(all)-1].concurrent != maxAutoEvents+9 {
		t.Errorf("bounded: %d arrivals, last %+v", len(all), all[len(all)-1])
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestAutoMode: in auto mode min_warm follows the arrivals, within
// auto_max and max_instances, and the agents get it as their targets.
func TestAutoMode(t *testing.T) {
	ts := newTestScheduler(t)
	ts.deploy(t, "hello", 1024)
	ts.heartbeat(t, agentHB("a", "http://a:1", 4096))
	st := ts.putPool(t, "hello", api.PoolChange{Auto: new(true), MinWarm: intp(1)})
	if st.EffectiveMinWarm != 0 {
		t.Fatalf("auto with no traffic: effective %d, want 0 (%+v)", st.EffectiveMinWarm, st.Recommendation)
	}
	now := ts.clock.Now()
	for i := range 20 {
		ts.arrivals.add("hello", arrival{at: now.Add(-time.Duration(20-i) * time.Second), concurrent: 3, cold: i < 3})
	}
	st = decode[api.PoolStatus](t, ts.do(t, "GET", "/v1/functions/hello/pool", nil), http.StatusOK)
	if st.EffectiveMinWarm != 3 || st.Recommendation.MinWarm != 3 || st.Recommendation.WarmthGBsPerHour != 3*3600 ||
		st.Recommendation.ColdStartsAvoidedPerHour != 6 {
		t.Fatalf("auto after traffic at concurrency 3: %+v", st)
	}
	if tg := ts.heartbeatReply(t, agentHB("a", "http://a:1", 4096))["hello"]; tg.MinWarm != 3 {
		t.Errorf("target in auto mode: %+v, want min_warm 3", tg)
	}
	st = ts.putPool(t, "hello", api.PoolChange{AutoMax: intp(2)})
	if st.EffectiveMinWarm != 2 {
		t.Errorf("auto_max 2: effective %d", st.EffectiveMinWarm)
	}
	st = ts.putPool(t, "hello", api.PoolChange{MaxInstances: intp(1)})
	if st.EffectiveMinWarm != 1 {
		t.Errorf("max_instances 1: effective %d", st.EffectiveMinWarm)
	}
	// The window passes: back to zero.
	ts.clock.Advance(31 * time.Minute)
	if st := decode[api.PoolStatus](t, ts.do(t, "GET", "/v1/functions/hello/pool", nil), http.StatusOK); st.EffectiveMinWarm != 0 {
		t.Errorf("after the window: effective %d, want 0", st.EffectiveMinWarm)
	}
	// Off again: the fixed min_warm.
	if st := ts.putPool(t, "hello", api.PoolChange{Auto: new(false)}); st.EffectiveMinWarm != 1 {
		t.Errorf("auto off: effective %d, want 1", st.EffectiveMinWarm)
	}
}
