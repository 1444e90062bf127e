package testenv_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/amberfn/amber/testenv"
	"github.com/amberfn/amber/testenv/bench"
)

// The suite's sizes: they keep the whole run (cluster, builds and the
// package benchmarks included) within 10 minutes on a 2-core machine.
const (
	suiteHelloRounds = 20   // cold + ctr run + restore, ~0.8 s a round
	suiteHeavyRounds = 10   // cold + snapshot + ctr run + restore, ~6 s a round
	suiteWarmPerRnd  = 25   // warm invocations per start round
	suiteWarmPaths   = 1000 // interleaved scheduler / agent / Runtime API / HTTP
	suiteClients     = 16
	suiteTputDur     = 10 * time.Second
	suiteAgentBench  = "2000x" // BenchmarkWarmInvokeAgent iterations
	suiteFreezeBlks  = 20      // measureFreeze blocks, ~0.6 s each
	suiteCPUBench    = "1s"    // placement and console render benchmarks
)

// TestBenchSuite runs the benchmark suite against one local cluster and
// writes its markdown table to $AMBER_BENCH_OUT (relative to the module
// root): `go tool task bench` writes BENCH.md. The cluster measurements
// are the measure* functions the Benchmark* functions in bench_test.go
// report; the agent, placement and console benchmarks run through
// `go test -bench` in their packages and their output is parsed.
// No timing assertions: figures on a busy machine are noisy, which is why
// every comparison is made in the same run and given as a ratio.
func TestBenchSuite(t *testing.T) {
	out := os.Getenv("AMBER_BENCH_OUT")
	if out == "" {
		t.Skip("benchmark suite: set AMBER_BENCH_OUT=FILE to run it and write its table there (go tool task bench writes BENCH.md)")
	}
	start := time.Now()
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(out) {
		out = filepath.Join(root, out)
	}
	m := bench.Describe(root)
	criuErr := testenv.CheckCRIU()
	if criuErr != nil && testenv.InCI() && testenv.CRIUExpected() {
		t.Fatalf("benchmark suite under CI=true: CRIU missing: %v", criuErr)
	}
	ctx := t.Context()

	t.Log("package benchmarks: placement and console render")
	cpu, cpuCmd, err := bench.RunGoBench(ctx, root, "^Benchmark(Place|Render.*|ApplyState|ApplyStateQuiet)$", suiteCPUBench, "./scheduler/internal/placement", "./tui")
	if err != nil {
		t.Fatal(err)
	}
	t.Log("package benchmark: warm invoke through the agent alone")
	ag, agCmd, err := bench.RunGoBench(ctx, root, "^BenchmarkWarmInvokeAgent$", suiteAgentBench, "./agent")
	if err != nil {
		t.Fatal(err)
	}

	f := clusterB(t)
	starts := map[string]*startResult{}
	for _, ex := range []struct {
		name   string
		rounds int
	}{{"hello", suiteHelloRounds}, {"heavy-init", suiteHeavyRounds}} {
		t.Logf("start latency: %s, %d rounds", ex.name, ex.rounds)
		starts[ex.name] = measureStarts(t, f, startOpts{Example: ex.name, Rounds: ex.rounds, Ctr: true, Restore: criuErr == nil, Warm: suiteWarmPerRnd})
	}
	t.Logf("warm invoke paths: %d interleaved", suiteWarmPaths)
	wp := measureWarmPaths(t, f, "bench-paths", suiteWarmPaths)
	t.Logf("freezing idle instances: %d blocks", suiteFreezeBlks)
	fr := measureFreeze(t, f, suiteFreezeBlks)
	t.Logf("throughput: %d clients for %s", suiteClients, suiteTputDur)
	tp := measureThroughput(t, f, suiteClients, suiteTputDur)

	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# amber benchmarks\n\n")
	w("Written by `go tool task bench` (testenv/suite_test.go); every comparison below was made in the same run.\n\n")
	w("- date: %s\n", start.UTC().Format("2006-01-02 15:04 MST"))
	w("- machine: %d cores (%s), %s, kernel %s; load average %s at the start, %s at the end\n", m.Cores, m.CPU, m.OS, m.Kernel, m.Load, bench.LoadAvg())
	w("- containerd %s, runc %s, CRIU %s, %s\n", m.Containerd, m.Runc, m.CRIU, m.Go)
	w("- git commit: %s\n", m.Commit)
	cmd := os.Getenv("AMBER_BENCH_CMD")
	suiteCmd := "AMBER_BENCH_OUT=" + os.Getenv("AMBER_BENCH_OUT") + " go test -run '^TestBenchSuite$' -count=1 -timeout 15m -v ./testenv"
	if cmd != "" {
		w("- command: `%s`, which runs `%s`\n", cmd, suiteCmd)
	} else {
		w("- command: `%s`\n", suiteCmd)
	}
	w("- the suite took %s (cluster start and image builds included)\n\n", time.Since(start).Round(time.Second))

	// Start latency.
	w("## Start latency\n\n")
	w("A local cluster (private containerd, scheduler, two agents on loopback). Each round deploys a new version of the function "+
		"(no warm instance or snapshot anywhere), starts it cold, waits for the agent's background snapshot, invokes the instance warm %d times, "+
		"runs the same image with `ctr run --rm` on the same containerd (container start, the bootstrap's own init, exit: outside Lambda it stops at `lambda.Start`), "+
		"retires the idle instances and restores from the snapshot. Cold, restore and warm are timed by the client to the first reply, sent straight to one agent; "+
		"what the scheduler adds is in the next table.\n\n", suiteWarmPerRnd)
	st := bench.Table{Header: []string{"function", "start", "n", "p50", "p99", "p50 ÷ `ctr run --rm` p50", "p99 ÷ `ctr run --rm` p99", "p50 ÷ cold p50"}}
	for _, ex := range []string{"hello", "heavy-init"} {
		r := starts[ex]
		ctr, cold := bench.Summarize(r.Ctr), bench.Summarize(r.Cold)
		row := func(kind string, s bench.Stats, vsCold bool) {
			rc := "–"
			if vsCold {
				rc = bench.X(bench.Ratio(s.P50, cold.P50))
			}
			st.Add(ex, kind, fmt.Sprint(s.N), bench.Dur(s.P50), bench.Dur(s.P99), bench.X(bench.Ratio(s.P50, ctr.P50)), bench.X(bench.Ratio(s.P99, ctr.P99)), rc)
		}
		row("cold", cold, false)
		if criuErr != nil {
			st.Add(ex, "restore", "n/a (no CRIU)", "n/a (no CRIU)", "n/a (no CRIU)", "n/a (no CRIU)", "n/a (no CRIU)", "n/a (no CRIU)")
		} else {
			row("restore", bench.Summarize(r.Restore), true)
		}
		row("warm", bench.Summarize(r.Warm), true)
		st.Add(ex, "`ctr run --rm`", fmt.Sprint(ctr.N), bench.Dur(ctr.P50), bench.Dur(ctr.P99), "1", "1", bench.X(bench.Ratio(ctr.P50, cold.P50)))
	}
	w("%s\n", st.String())
	for _, ex := range []string{"hello", "heavy-init"} {
		r := starts[ex]
		w("- %s: init p50 %s (reported by the agent)", ex, bench.Dur(percentile(r.Init, 50)))
		if criuErr == nil {
			w("; the agent's restore p50 %s; snapshot %.1f MB, taken in p50 %s; the agent's decision after the last round: %s",
				bench.Dur(percentile(r.RestoreAgent, 50)), float64(r.SnapshotBytes)/(1<<20), bench.Dur(percentile(r.Take, 50)), r.Decision)
		}
		w("\n")
	}
	if criuErr != nil {
		w("- no snapshots: %v\n", criuErr)
	}

	// Warm invoke paths.
	w("\n## Warm invoke: where the time goes\n\n")
	w("examples/hello, one warm instance on %s, %d rounds, each round the four calls below one after the other. "+
		"The Runtime API call is amber-init's Runtime API served in the test process to an echoing runtime loop: "+
		"no agent, no pipes, no container (bench.DirectRuntime, the baseline of the agent benchmark).\n\n", wp.Agent, suiteWarmPaths)
	via, str, rt, bare := bench.Summarize(wp.Via), bench.Summarize(wp.Straight), bench.Summarize(wp.Runtime), bench.Summarize(wp.Bare)
	pt := bench.Table{Header: []string{"path", "n", "p50", "p99", "p50 ÷ straight to the agent", "p50 ÷ Runtime API call"}}
	prow := func(name string, s bench.Stats) {
		pt.Add(name, fmt.Sprint(s.N), bench.Dur(s.P50), bench.Dur(s.P99), bench.X(bench.Ratio(s.P50, str.P50)), bench.X(bench.Ratio(s.P50, rt.P50)))
	}
	prow("client → scheduler → agent → instance", via)
	prow("client → agent → instance", str)
	prow("direct Runtime API call, in process", rt)
	prow("bare HTTP round trip to the scheduler (`/healthz`)", bare)
	w("%s\n", pt.String())
	w("The scheduler adds %s at p50 (%s at p99); the agent and the instance add %s at p50 over the Runtime API call.\n\n",
		signed(via.P50-str.P50), signed(via.P99-str.P99), signed(str.P50-rt.P50))
	if r, ok := bench.Find(ag, "BenchmarkWarmInvokeAgent"); ok {
		w("The agent alone, in process (`(*Agent).Invoke` → frames over pipes → real amber-init → a no-op runtime process), "+
			"interleaved with the same Runtime API call, %d rounds (`%s`):\n\n", r.N, agCmd)
		at := bench.Table{Header: []string{"path", "p50", "p99", "p50 ÷ Runtime API call"}}
		us := func(v float64) time.Duration { return time.Duration(v * 1e3) }
		a50, a99, d50, d99 := us(r.Metrics["agent-p50-µs"]), us(r.Metrics["agent-p99-µs"]), us(r.Metrics["direct-p50-µs"]), us(r.Metrics["direct-p99-µs"])
		at.Add("agent → amber-init → runtime, no HTTP in front", bench.Dur(a50), bench.Dur(a99), bench.X(bench.Ratio(a50, d50)))
		at.Add("direct Runtime API call, in process", bench.Dur(d50), bench.Dur(d99), "1")
		w("%s\n", at.String())
	}

	writeFreezeSection(w, fr)

	// Throughput.
	w("## Sustained throughput\n\n")
	lat := bench.Summarize(tp.Lats)
	agents := make([]string, 0, len(tp.PerAgent))
	for a, n := range tp.PerAgent {
		agents = append(agents, fmt.Sprintf("%s %d", a, n))
	}
	slices.Sort(agents)
	w("examples/hello, %d clients invoking back to back for %s through the scheduler to %d agents; the pool is min_warm = max_instances = %d "+
		"and the run starts once %d instances are idle. Compared with one client's sequential warm invocations through the scheduler (previous table).\n\n",
		tp.Workers, tp.Duration, len(f.cluster.Agents), tp.Workers, tp.Instances)
	tt := bench.Table{Header: []string{"clients", "agents", "invocations/s", "p50", "p99", "p50 ÷ sequential p50", "p99 ÷ sequential p99", "failed", "per agent"}}
	tt.Add(fmt.Sprint(tp.Workers), fmt.Sprint(len(f.cluster.Agents)), fmt.Sprintf("%.0f", tp.Rate()), bench.Dur(lat.P50), bench.Dur(lat.P99),
		bench.X(bench.Ratio(lat.P50, via.P50)), bench.X(bench.Ratio(lat.P99, via.P99)), fmt.Sprint(tp.Errors), strings.Join(agents, ", "))
	w("%s\n", tt.String())
	w("CPU time per invocation during the run, by process (the test process holds the clients, the scheduler and both agents; "+
		"the cores are shared by all of them, so %d cores ÷ this total bounds the rate):\n\n", runtime.NumCPU())
	cput := bench.Table{Header: []string{"process", "CPU per invocation", "share"}}
	for _, s := range tp.CPU {
		cput.Add(s.Command, fmt.Sprintf("%.0f µs", s.PerOp), fmt.Sprintf("%.0f%%", 100*s.PerOp/tp.CPUTotal))
	}
	cput.Add("total", fmt.Sprintf("%.0f µs", tp.CPUTotal), fmt.Sprintf("bound %.0f/s", float64(runtime.NumCPU())*1e6/tp.CPUTotal))
	w("%s\n", cput.String())

	// Placement and console.
	w("## Placement and console\n\n")
	w("`%s`, in this run. Placement: 100 agents, 1,000 functions, one call in ten finding an idle instance. "+
		"Console: one frame of a view with 1,000 functions on 50 agents, 160×50 (goal: at most 10 ms a frame); "+
		"taking in a state in which 10 of the functions and 5 of the agents changed (goal: at most 2 ms a state).\n\n", cpuCmd)
	ct := bench.Table{Header: []string{"what", "result", "per operation", "÷ goal"}}
	if r, ok := bench.Find(cpu, "BenchmarkPlace"); ok {
		ct.Add("placement decisions, 100 agents, 1,000 functions", fmt.Sprintf("%.2f M decisions/s", r.Metrics["decisions/s"]/1e6),
			fmt.Sprintf("%.0f ns, %.0f allocs", r.Metrics["ns/op"], r.Metrics["allocs/op"]), "–")
	}
	for _, v := range []struct{ bench, what, per string }{
		{"BenchmarkRenderOverview", "console render, overview (view 1)", "frame"},
		{"BenchmarkRenderFunctions", "console render, functions (view 2, sorted)", "frame"},
		{"BenchmarkRenderLatency", "console render, latency (view 4)", "frame"},
		{"BenchmarkApplyState", "console: taking in one stream state (not a frame)", "state"},
	} {
		if r, ok := bench.Find(cpu, v.bench); ok {
			ns := r.Metrics["ns/op"]
			goal := "–"
			if v.per == "frame" {
				goal = bench.X(ns / 1e7)
			}
			ct.Add(v.what, fmt.Sprintf("%.2f ms per %s", ns/1e6, v.per), fmt.Sprintf("%.0f allocs, %.2f MB", r.Metrics["allocs/op"], r.Metrics["B/op"]/1e6), goal)
		}
	}
	// Intake when little changed (10 of 1,000 functions, 5 of 50 agents):
	// every table built anew, the old way, against only the changed rows,
	// in the same run (goal: at most 2 ms a state).
	full, okF := bench.Find(cpu, "BenchmarkApplyStateQuiet/full")
	inc, okI := bench.Find(cpu, "BenchmarkApplyStateQuiet/incremental")
	if okF && okI {
		for _, v := range []struct {
			what string
			r    bench.GoBench
		}{
			{"console: a state with 10 of 1,000 functions changed, every table built anew", full},
			{"console: the same, only the changed rows rebuilt", inc},
		} {
			ns := v.r.Metrics["ns/op"]
			ct.Add(v.what, fmt.Sprintf("%.2f ms per state (%s of building anew)", ns/1e6, bench.X(ns/full.Metrics["ns/op"])),
				fmt.Sprintf("%.0f allocs, %.2f MB", v.r.Metrics["allocs/op"], v.r.Metrics["B/op"]/1e6), bench.X(ns/2e6))
		}
	}
	w("%s", ct.String())

	if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s in %s:\n%s", out, time.Since(start).Round(time.Second), b.String())
}

// signed formats a difference of latencies.
func signed(d time.Duration) string {
	if d < 0 {
		return "−" + bench.Dur(-d)
	}
	return bench.Dur(d)
}
