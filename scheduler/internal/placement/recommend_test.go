package placement

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// evs builds arrivals one second apart: n of them at concurrency conc,
// the first cold of them cold.
type evSpec struct{ n, conc, cold int }

func makeArrivals(specs ...evSpec) []Arrival {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var out []Arrival
	for _, s := range specs {
		for i := range s.n {
			out = append(out, Arrival{At: t0.Add(time.Duration(len(out)) * time.Second), Concurrent: s.conc, Cold: i < s.cold})
		}
	}
	return out
}

func TestRecommend(t *testing.T) {
	const window = 30 * time.Minute
	tests := []struct {
		name        string
		evs         []Arrival
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
			got := Recommend(tt.evs, window, tt.memMB, tt.capN)
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
		got := Recommend(makeArrivals(evSpec{10, 2, 0}), window, 1536, 100)
		if got.WarmthGBsPerHour != 10800 {
			t.Errorf("warmth %v, want 10800 GB-s/hour", got.WarmthGBsPerHour)
		}
	})
	t.Run("order does not matter", func(t *testing.T) {
		evs := makeArrivals(evSpec{50, 1, 5}, evSpec{8, 3, 4}, evSpec{2, 6, 2})
		want := Recommend(evs, window, 256, 100)
		r := rand.New(rand.NewPCG(1, 2))
		for range 5 {
			r.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
			if got := Recommend(evs, window, 256, 100); got != want {
				t.Fatalf("shuffled: %+v, want %+v", got, want)
			}
		}
	})
	t.Run("does not reorder its input", func(t *testing.T) {
		evs := makeArrivals(evSpec{3, 5, 0}, evSpec{3, 1, 0})
		Recommend(evs, window, 128, 100)
		if evs[0].Concurrent != 5 || evs[5].Concurrent != 1 {
			t.Errorf("input changed: %+v", evs)
		}
	})
}
