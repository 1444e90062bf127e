package sim

import (
	"reflect"
	"testing"
	"time"
)

// TestPlacementSchedulers logs what one, two and three independent
// schedulers do to the warm-hit ratio on the placement workload:
//
//	go test ./scheduler/sim -run TestPlacementSchedulers -v
//
// It checks the bookkeeping only; the figures are for the record.
func TestPlacementSchedulers(t *testing.T) {
	cfg := DefaultPlacementConfig()
	w := Generate(testSeed, testLength, PlacementFunctions(placementFunctions))
	rep := RunSchedulers(w, cfg, DefaultSchedulerSetups())
	t.Logf("\n%s", rep.Table())
	for _, mb := range []int{2048, 8192} {
		c := cfg
		c.CapacityMB = mb
		t.Logf("\n%s", RunSchedulers(w, c, DefaultSchedulerSetups()).Table())
	}
	checkSchedulerCounts(t, w, rep)

	// One scheduler with a perfect view is the single-scheduler simulation.
	single, _ := RunPlacement(w, cfg, []string{PlaceAmber}).Result(PlaceAmber)
	if got := rep.Results[0]; !reflect.DeepEqual(got.PlacementStats, single) {
		t.Errorf("1 scheduler, perfect view: %+v\nsingle-scheduler simulation: %+v", got.PlacementStats, single)
	}
}

func checkSchedulerCounts(t *testing.T, w *Workload, rep *SchedulersReport) {
	t.Helper()
	want := 0
	for _, invs := range w.Invocations {
		want += len(invs)
	}
	for _, st := range rep.Results {
		name := st.Setup.Front
		if st.Setup.Heartbeat == 0 {
			name += ", perfect view"
		}
		if st.Invocations != want || st.Warm+st.Cold+st.Dropped != want {
			t.Errorf("%d schedulers (%s): warm %d + cold %d + throttled %d, %d arrivals; the workload has %d",
				st.Setup.Schedulers, name, st.Warm, st.Cold, st.Dropped, st.Invocations, want)
		}
		if st.StaleWarm > st.Cold || st.Retried > st.Refusals || st.Evictions+st.Expired > st.Cold {
			t.Errorf("%d schedulers (%s): stale warm %d, cold %d, retried %d, refusals %d, evicted %d, expired %d",
				st.Setup.Schedulers, name, st.StaleWarm, st.Cold, st.Retried, st.Refusals, st.Evictions, st.Expired)
		}
		if st.Setup.Heartbeat == 0 && (st.Refusals != 0 || st.StaleWarm != 0) {
			t.Errorf("%d schedulers, perfect view: %d refusals, %d stale warm; want none", st.Setup.Schedulers, st.Refusals, st.StaleWarm)
		}
	}
}

// TestSchedulersModel checks the model on hand-made arrivals: two agents,
// one function, two schedulers behind a round-robin front door.
func TestSchedulersModel(t *testing.T) {
	fn := Function{Name: "f", MemoryMB: 1024, Init: time.Second}
	at := func(d, run time.Duration) Invocation { return Invocation{At: Epoch.Add(d), Duration: run} }
	cfg := PlacementConfig{Agents: 2, CapacityMB: 1024, KeepAlive: time.Minute}
	two := SchedulersConfig{Schedulers: 2, Front: FrontRoundRobin, Heartbeat: Heartbeat}
	one := SchedulersConfig{Schedulers: 1, Front: FrontRoundRobin, Heartbeat: Heartbeat}
	perfect := SchedulersConfig{Schedulers: 1, Front: FrontRoundRobin}
	tests := []struct {
		name  string
		setup SchedulersConfig
		invs  []Invocation
		want  SchedulersStats // the counts compared
	}{
		{
			// Both schedulers see both agents empty: each places on the
			// same home agent, which refuses the second; it goes to the other.
			name: "two at once", setup: two,
			invs: []Invocation{at(1500*time.Millisecond, time.Second), at(1600*time.Millisecond, time.Second)},
			want: SchedulersStats{PlacementStats: PlacementStats{Cold: 2}, Refusals: 1, Retried: 1},
		},
		{
			// The first instance is idle at the 5 s heartbeat; both
			// schedulers place for it, the second finds it taken and the
			// agent full: refused, then cold on the other agent.
			name: "one idle instance, two claims", setup: two,
			invs: []Invocation{at(0, time.Second), at(5500*time.Millisecond, 10*time.Second), at(5600*time.Millisecond, time.Second)},
			want: SchedulersStats{PlacementStats: PlacementStats{Cold: 2, Warm: 1}, Refusals: 1, Retried: 1},
		},
		{
			// One scheduler knows it claimed the idle instance: no refusal.
			name: "one idle instance, one scheduler", setup: one,
			invs: []Invocation{at(0, time.Second), at(5500*time.Millisecond, 10*time.Second), at(5600*time.Millisecond, time.Second)},
			want: SchedulersStats{PlacementStats: PlacementStats{Cold: 2, Warm: 1}},
		},
		{
			// Both agents full and busy: the last is refused by both, throttled.
			name: "all full", setup: two,
			invs: []Invocation{at(1500*time.Millisecond, 10*time.Second), at(1600*time.Millisecond, 10*time.Second), at(1700*time.Millisecond, time.Second)},
			want: SchedulersStats{PlacementStats: PlacementStats{Cold: 2, Dropped: 1}, Refusals: 2, Retried: 2},
		},
		{
			// Idle from 2.5 s, the instance expires at 62.5 s, after the
			// 62 s heartbeat that showed it idle: placed for it, started cold.
			name: "expired since the heartbeat", setup: one,
			invs: []Invocation{at(0, 1500*time.Millisecond), at(time.Minute+2700*time.Millisecond, time.Second)},
			want: SchedulersStats{PlacementStats: PlacementStats{Cold: 2, Expired: 1}, StaleWarm: 1},
		},
		{
			name: "expired, perfect view", setup: perfect,
			invs: []Invocation{at(0, 1500*time.Millisecond), at(time.Minute+2700*time.Millisecond, time.Second)},
			want: SchedulersStats{PlacementStats: PlacementStats{Cold: 2, Expired: 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &Workload{Start: Epoch, Length: time.Hour, Functions: []Function{fn}, Invocations: [][]Invocation{tt.invs}}
			st := RunSchedulers(w, cfg, []SchedulersConfig{tt.setup}).Results[0]
			got := [...]int{st.Warm, st.Cold, st.Dropped, st.Expired, st.Refusals, st.Retried, st.StaleWarm}
			want := [...]int{tt.want.Warm, tt.want.Cold, tt.want.Dropped, tt.want.Expired, tt.want.Refusals, tt.want.Retried, tt.want.StaleWarm}
			if got != want {
				t.Errorf("warm, cold, throttled, expired, refusals, retried, stale warm = %v, want %v", got, want)
			}
		})
	}
}

func TestSchedulersDeterministic(t *testing.T) {
	w := Generate(7, 2*time.Hour, PlacementFunctions(20))
	a := RunSchedulers(w, DefaultPlacementConfig(), DefaultSchedulerSetups())
	b := RunSchedulers(w, DefaultPlacementConfig(), DefaultSchedulerSetups())
	if !reflect.DeepEqual(a, b) || a.Table() != b.Table() {
		t.Fatalf("same seed, different reports:\n%s\n%s", a.Table(), b.Table())
	}
	checkSchedulerCounts(t, w, a)
}
