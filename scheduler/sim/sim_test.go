package sim

import (
	"reflect"
	"testing"
	"time"
)

const (
	testSeed   = 42
	testLength = 6 * time.Hour
)

// TestReport logs the comparison table:
//
//	go test ./scheduler/sim -run TestReport -v
func TestReport(t *testing.T) {
	rep := Simulate(testSeed, testLength)
	t.Logf("\n%s", rep.Table())

	base, _ := rep.Result("fixed min_warm 0", "burst")
	auto, _ := rep.Result("auto", "burst")
	if auto.Cold >= base.Cold {
		t.Errorf("bursty function: auto %d cold starts, baseline %d; want fewer", auto.Cold, base.Cold)
	}
	if auto.WarmthGBs <= base.WarmthGBs {
		t.Errorf("bursty function: auto's warmth %.0f GB-s not above the baseline's %.0f", auto.WarmthGBs, base.WarmthGBs)
	}
	// A job every 15 minutes outlives a 10-minute keep-alive: the baseline
	// starts it cold almost every time, one warm instance does not.
	cb, _ := rep.Result("fixed min_warm 0", "cron")
	c1, _ := rep.Result("fixed min_warm 1", "cron")
	ca, _ := rep.Result("auto", "cron")
	if cb.Cold < cb.Invocations*3/4 || c1.Cold >= cb.Cold/2 || ca.Cold >= cb.Cold/2 {
		t.Errorf("periodic function: cold starts baseline %d/%d, min_warm 1 %d, auto %d", cb.Cold, cb.Invocations, c1.Cold, ca.Cold)
	}
	for _, pr := range rep.Results {
		for i, st := range pr.Functions {
			fn := DefaultFunctions()[i]
			if st.Warm+st.Cold != st.Invocations {
				t.Errorf("%s/%s: warm %d + cold %d != %d", pr.Policy.Name, st.Function, st.Warm, st.Cold, st.Invocations)
			}
			if fn.MaxInstances > 0 && st.PeakInstances > fn.MaxInstances {
				t.Errorf("%s/%s: %d instances over the cap of %d", pr.Policy.Name, st.Function, st.PeakInstances, fn.MaxInstances)
			}
			if st.WarmthGBs < 0 || st.IdleSeconds < 0 {
				t.Errorf("%s/%s: negative warmth %+v", pr.Policy.Name, st.Function, st)
			}
		}
	}
}

func TestDeterministic(t *testing.T) {
	a, b := Simulate(7, 2*time.Hour), Simulate(7, 2*time.Hour)
	if !reflect.DeepEqual(a, b) || a.Table() != b.Table() {
		t.Fatalf("same seed, different reports:\n%s\n%s", a.Table(), b.Table())
	}
	w1, w2 := Generate(7, time.Hour, DefaultFunctions()), Generate(8, time.Hour, DefaultFunctions())
	if reflect.DeepEqual(w1.Invocations, w2.Invocations) {
		t.Error("seeds 7 and 8 made the same workload")
	}
	// A function's arrivals do not depend on the functions after it.
	w3 := Generate(7, time.Hour, DefaultFunctions()[:2])
	if !reflect.DeepEqual(w1.Invocations[:2], w3.Invocations) {
		t.Error("dropping functions changed the others' arrivals")
	}
}

func TestWorkloadPatterns(t *testing.T) {
	w := Generate(testSeed, testLength, DefaultFunctions())
	count := map[string]int{}
	for i, fn := range w.Functions {
		invs := w.Invocations[i]
		count[fn.Name] = len(invs)
		for j, inv := range invs {
			if inv.At.Before(w.Start) || !inv.At.Before(w.Start.Add(w.Length)) || inv.Duration <= 0 {
				t.Fatalf("%s: invocation %d out of range: %+v", fn.Name, j, inv)
			}
			if j > 0 && inv.At.Before(invs[j-1].At) {
				t.Fatalf("%s: not sorted at %d", fn.Name, j)
			}
		}
	}
	t.Logf("invocations: %v", count)
	// 6 hours: ~20/min steady, 24 cron runs (+20% doubles), ~9 rare.
	if c := count["api"]; c < 6000 || c > 8400 {
		t.Errorf("steady: %d invocations", c)
	}
	if c := count["cron"]; c < 24 || c > 48 {
		t.Errorf("periodic: %d invocations", c)
	}
	if c := count["rare"]; c < 1 || c > 30 {
		t.Errorf("rare: %d invocations", c)
	}
	if count["burst"] < 20 || count["waves"] < 200 {
		t.Errorf("bursty %d, waves %d", count["burst"], count["waves"])
	}
}

// TestPoolModel checks the model on hand-made arrivals.
func TestPoolModel(t *testing.T) {
	fn := Function{Name: "f", MemoryMB: 2048, Init: time.Second}
	at := func(d time.Duration, run time.Duration) Invocation {
		return Invocation{At: Epoch.Add(d), Duration: run}
	}
	base := Policy{Name: "base", KeepAlive: 10 * time.Minute}
	warm1 := Policy{Name: "warm1", MinWarm: 1, KeepAlive: 10 * time.Minute}
	auto := Policy{Name: "auto", Auto: true, KeepAlive: time.Minute}
	run := func(fn Function, p Policy, length time.Duration, invs ...Invocation) Stats {
		w := &Workload{Start: Epoch, Length: length, Functions: []Function{fn}, Invocations: [][]Invocation{invs}}
		return Run(w, []Policy{p}).Results[0].Functions[0]
	}

	// One invocation: cold, then idle for the keep-alive, then gone.
	st := run(fn, base, time.Hour, at(0, time.Second))
	if st.Cold != 1 || st.Warm != 0 || st.IdleSeconds != 600 || st.WarmthGBs != 1200 {
		t.Errorf("one invocation: %+v; want 1 cold, 600 idle seconds, 1200 GB-s", st)
	}
	// A second within the keep-alive is warm; after it, cold again.
	st = run(fn, base, time.Hour, at(0, time.Second), at(5*time.Minute, time.Second), at(20*time.Minute, time.Second))
	if st.Cold != 2 || st.Warm != 1 {
		t.Errorf("keep-alive: %+v; want 2 cold, 1 warm", st)
	}
	// min_warm 1: a prewarmed instance waits from the start; it is
	// replaced as soon as it is taken, and never expires.
	st = run(fn, warm1, time.Hour, at(time.Minute, time.Second), at(30*time.Minute, time.Second))
	if st.Cold != 0 || st.Warm != 2 {
		t.Errorf("min_warm 1: %+v; want 2 warm", st)
	}
	// No traffic with min_warm 0 holds nothing; with min_warm 1, one
	// instance all along but its initialisation.
	if st := run(fn, base, time.Hour); st.IdleSeconds != 0 || st.PeakInstances != 0 {
		t.Errorf("idle function, min_warm 0: %+v", st)
	}
	if st := run(fn, warm1, time.Hour); st.IdleSeconds != 3599 || st.PeakInstances != 1 {
		t.Errorf("idle function, min_warm 1: %+v; want 3599 idle seconds", st)
	}
	// Concurrent arrivals each need an instance; the cap makes them wait.
	capped := fn
	capped.MaxInstances = 2
	st = run(capped, base, time.Hour, at(0, 2*time.Second), at(0, 2*time.Second), at(0, 10*time.Second), at(0, 10*time.Second), at(time.Second, time.Second))
	// Both instances are free at 3 s: the third and fourth wait 3 s each
	// and hold them to 13 s; the fifth would wait 12 s: throttled.
	if st.Cold != 2 || st.Warm != 2 || st.PeakInstances != 2 || st.Throttled != 1 || st.QueueWait != 6*time.Second {
		t.Errorf("capped burst: %+v; want 2 cold, 2 warm after 3 s each in the queue, 1 throttled", st)
	}
	// Auto: every 2 minutes with a 1-minute keep-alive is always cold
	// without a pool; auto learns to keep one.
	var invs []Invocation
	for i := range 30 {
		invs = append(invs, at(time.Duration(i)*2*time.Minute+30*time.Second, time.Second))
	}
	b := run(fn, Policy{Name: "b", KeepAlive: time.Minute}, time.Hour, invs...)
	a := run(fn, auto, time.Hour, invs...)
	if b.Cold != 30 || a.Cold > 2 || a.MeanMinWarm <= 0.9 {
		t.Errorf("auto: %+v; baseline %+v; want 30 cold without, at most 2 with", a, b)
	}
	// Auto goes back to zero when the traffic stops (after the window).
	a = run(fn, auto, 4*time.Hour, invs...)
	if a.MeanMinWarm > 0.5 {
		t.Errorf("auto after the traffic stopped: mean min_warm %.2f", a.MeanMinWarm)
	}
}

// BenchmarkReplay replays the 6-hour default workload under the three
// policies and reports the outcome (deterministic for the seed).
func BenchmarkReplay(b *testing.B) {
	w := Generate(testSeed, testLength, DefaultFunctions())
	var rep *Report
	for b.Loop() {
		rep = Run(w, DefaultPolicies())
	}
	base := rep.Results[0].Total
	for _, pr := range rep.Results {
		tag := map[string]string{"fixed min_warm 0": "min0", "fixed min_warm 1": "min1", "auto": "auto"}[pr.Policy.Name]
		st := pr.Total
		b.ReportMetric(st.WarmHitRatio(), "warm-hit-"+tag)
		b.ReportMetric(float64(st.Cold), "cold-"+tag)
		b.ReportMetric(st.WarmthGBs, "warmth-GB-s-"+tag)
		if v, ok := WarmthPerAvoided(st, base); ok {
			b.ReportMetric(v, "GB-s/avoided-"+tag)
		}
	}
}
