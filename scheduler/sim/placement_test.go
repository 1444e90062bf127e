package sim

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

const placementFunctions = 40

// TestPlacementReport logs the placement comparison:
//
//	go test ./scheduler/sim -run TestPlacementReport -v
//
// It asserts the model's bookkeeping, and whether amber's warm-hit ratio
// is at least both OpenWhisk-style hashing's and random's at the same
// memory (the goal in the design), at the default configuration.
func TestPlacementReport(t *testing.T) {
	cfg := DefaultPlacementConfig()
	rep := SimulatePlacement(testSeed, testLength, placementFunctions, cfg)
	t.Logf("\n%s", rep.Table())
	// The same workload at tighter and looser memory, for the record.
	for _, mb := range []int{2048, 8192} {
		c := cfg
		c.CapacityMB = mb
		t.Logf("\n%s", SimulatePlacement(testSeed, testLength, placementFunctions, c).Table())
	}

	checkPlacementCounts(t, rep)
	// Other seeds, logged only: warm-hit ratios per policy.
	for seed := uint64(1); seed <= 5; seed++ {
		r := SimulatePlacement(seed, testLength, placementFunctions, cfg)
		line := ""
		for _, st := range r.Results {
			line += fmt.Sprintf("  %s %.4f (cold %d)", st.Policy, st.WarmHitRatio(), st.Cold)
		}
		t.Logf("seed %d:%s", seed, line)
	}
	amber, _ := rep.Result(PlaceAmber)
	for _, other := range []string{PlaceOpenWhisk, PlaceRandom} {
		o, _ := rep.Result(other)
		if amber.WarmHitRatio() < o.WarmHitRatio() {
			t.Errorf("amber's warm-hit ratio %.4f is below %s's %.4f", amber.WarmHitRatio(), other, o.WarmHitRatio())
		}
	}
}

func checkPlacementCounts(t *testing.T, rep *PlacementReport) {
	t.Helper()
	want := 0
	w := Generate(rep.Seed, rep.Length, PlacementFunctions(rep.Functions))
	for _, invs := range w.Invocations {
		want += len(invs)
	}
	for _, st := range rep.Results {
		if st.Invocations != want {
			t.Errorf("%s: %d invocations, the workload has %d", st.Policy, st.Invocations, want)
		}
		if st.Warm+st.Cold+st.Dropped != st.Invocations {
			t.Errorf("%s: warm %d + cold %d + dropped %d != %d", st.Policy, st.Warm, st.Cold, st.Dropped, st.Invocations)
		}
		n, warm := 0, 0
		for _, v := range st.ByPattern {
			n += v[0]
			warm += v[1]
		}
		if n != st.Invocations || warm != st.Warm {
			t.Errorf("%s: per pattern %d invocations, %d warm; totals %d, %d", st.Policy, n, warm, st.Invocations, st.Warm)
		}
		// Every instance ever started was a cold start; each is evicted,
		// expires or is still there at the end, never more.
		if st.Evictions+st.Expired > st.Cold {
			t.Errorf("%s: %d evicted + %d expired > %d started", st.Policy, st.Evictions, st.Expired, st.Cold)
		}
		if st.PeakHeldMB > rep.Config.Agents*rep.Config.CapacityMB {
			t.Errorf("%s: %d MB held, over the cluster's %d", st.Policy, st.PeakHeldMB, rep.Config.Agents*rep.Config.CapacityMB)
		}
	}
}

func TestPlacementDeterministic(t *testing.T) {
	cfg := DefaultPlacementConfig()
	a := SimulatePlacement(7, 2*time.Hour, 20, cfg)
	b := SimulatePlacement(7, 2*time.Hour, 20, cfg)
	if !reflect.DeepEqual(a, b) || a.Table() != b.Table() {
		t.Fatalf("same seed, different reports:\n%s\n%s", a.Table(), b.Table())
	}
	checkPlacementCounts(t, a)
	cfg.Seed = 2 // only the random policy draws from it
	c := SimulatePlacement(7, 2*time.Hour, 20, cfg)
	for i, st := range c.Results {
		if st.Policy != PlaceRandom && !reflect.DeepEqual(st, a.Results[i]) {
			t.Errorf("%s changed with the random policy's seed", st.Policy)
		}
	}
}

func TestCoprimeSteps(t *testing.T) {
	for n, want := range map[int][]int{1: {1}, 8: {1, 3, 5, 7}, 10: {1, 3, 7}, 12: {1, 5, 7, 11}, 9: {1, 2, 5, 7}} {
		if got := coprimeSteps(n); !reflect.DeepEqual(got, want) {
			t.Errorf("coprimeSteps(%d) = %v, want %v", n, got, want)
		}
	}
}

// BenchmarkPlacementSim replays the default placement workload and reports
// each policy's warm-hit ratio.
func BenchmarkPlacementSim(b *testing.B) {
	w := Generate(testSeed, testLength, PlacementFunctions(placementFunctions))
	cfg := DefaultPlacementConfig()
	var rep *PlacementReport
	for b.Loop() {
		rep = RunPlacement(w, cfg, DefaultPlacementPolicies())
	}
	for _, st := range rep.Results {
		b.ReportMetric(st.WarmHitRatio(), "warm-hit/"+metricName(st.Policy))
	}
}

func metricName(s string) string {
	return strings.NewReplacer(" (", "_", ")", "", " ", "_").Replace(s)
}
