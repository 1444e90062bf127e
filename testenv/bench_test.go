package testenv_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/testenv/bench"
)

// The measurements live in the measure* functions below; the Benchmark*
// functions report them as metrics and TestBenchSuite (suite_test.go)
// runs them against one cluster and writes BENCH.md.

// percentile returns the p-th percentile (0–100) of ds, sorting it.
func percentile(ds []time.Duration, p float64) time.Duration { return bench.Percentile(ds, p) }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// benchRounds is the number of rounds, AMBER_BENCH_ROUNDS or def.
func benchRounds(b *testing.B, def int) int {
	if v, err := strconv.Atoi(os.Getenv("AMBER_BENCH_ROUNDS")); err == nil && v > 0 {
		return v
	}
	return def
}

// startOpts says what measureStarts does in each round.
type startOpts struct {
	Example      string // examples/NAME
	Rounds       int
	ViaScheduler bool // cold starts through the scheduler; else straight to the first agent
	Ctr          bool // a `ctr run --rm` of the same image on the same containerd in every round
	Restore      bool // wait for the agent's snapshot, then restore from it in every round (needs CRIU)
	Warm         int  // warm invocations per round, straight to the agent that started cold
}

// startResult holds client-side latencies (to the first reply) and what
// the agent reported.
type startResult struct {
	Cold, Restore, Warm, Ctr []time.Duration
	Init, RestoreAgent, Take []time.Duration // init time, the agent's restore time, snapshot take time
	SnapshotBytes            int64
	Decision                 string // the agent's snapshot decision after the last round
}

var startSeq atomic.Int64 // makes every round's version new, across benchmarks

// measureStarts deploys a new version of examples/NAME in every round (a
// new version has no warm instance or snapshot anywhere) and, in this
// order: starts it cold; waits for the agent's background snapshot of it
// (Restore); invokes the cold-started instance Warm times; runs the same
// image with `ctr run --rm` (Ctr: a container start, the bootstrap's own
// init, exit); retires the idle instances and restores from the snapshot
// (Restore); retires the idle instances. Waiting for the snapshot before
// the rest keeps the agent's background instance from competing with the
// timed starts. Cold starts without ViaScheduler, warm invocations and
// restores go straight to one agent, so cold and restore take the same
// path.
func measureStarts(tb testing.TB, f *fixture, o startOpts) *startResult {
	tb.Helper()
	c := f.cluster.Client()
	ctx := tb.Context()
	name := "bench-start-" + o.Example
	image := exampleImage(tb, f, o.Example)
	base := deploy(tb, c, name, image, func(s *api.FunctionSpec) {
		s.MemoryMB = 256
		s.Timeout = api.Duration(10 * time.Second)
	})
	var ctrArgs []string
	var ctrRef string
	if o.Ctr {
		ctrArgs, ctrRef = ctrImage(tb, f, o.Example, image)
	}
	const payload = `{"name":"bench"}`
	r := &startResult{}
	for i := 0; i < o.Rounds; i++ {
		spec := base.FunctionSpec
		spec.Env = map[string]string{"ROUND": strconv.FormatInt(startSeq.Add(1), 10)}
		fn, err := c.Deploy(ctx, spec)
		if err != nil {
			tb.Fatal(err)
		}
		agentName := f.cluster.Agents[0].Name()
		t0 := time.Now()
		var res *api.InvokeResult
		if o.ViaScheduler {
			res, err = c.Invoke(ctx, name, []byte(payload))
		} else {
			res, err = agentInvoke(ctx, f, agentName, name, fn.Version, payload)
		}
		d := time.Since(t0)
		if err != nil || res.FunctionError != "" || res.StartKind != api.StartCold {
			tb.Fatalf("%s cold invoke: %v %+v", o.Example, err, res)
		}
		r.Cold, r.Init = append(r.Cold, d), append(r.Init, res.InitDuration)
		ag := agentNamed(tb, f, res.Agent)

		if o.Restore {
			e := waitSnapshot(tb, ag, name, fn.Version, t0)
			r.Take, r.SnapshotBytes = append(r.Take, e.TakeTime), e.Size
		}
		for j := 0; j < o.Warm; j++ {
			t0 := time.Now()
			res, err := agentInvoke(ctx, f, ag.Name(), name, fn.Version, payload)
			d := time.Since(t0)
			if err != nil || res.FunctionError != "" || res.StartKind != api.StartWarm {
				tb.Fatalf("%s warm invoke: %v %+v", o.Example, err, res)
			}
			r.Warm = append(r.Warm, d)
		}
		if o.Ctr {
			id := fmt.Sprintf("bench-%s-%d", o.Example, startSeq.Add(1))
			t0 := time.Now()
			out, err := exec.CommandContext(ctx, "ctr", append(ctrArgs, "run", "--rm", ctrRef, id, "/var/task/bootstrap")...).CombinedOutput()
			d := time.Since(t0)
			// The bootstrap exits non-zero outside Lambda (no Runtime API),
			// after its init: only ctr's own failures count.
			if err != nil && strings.Contains(string(out), "ctr: ") {
				tb.Fatalf("ctr run %s: %v\n%s", ctrRef, err, out)
			}
			r.Ctr = append(r.Ctr, d)
		}
		if o.Restore {
			ag.RetireIdle(name)
			t0 := time.Now()
			res, err := agentInvoke(ctx, f, ag.Name(), name, fn.Version, payload)
			d := time.Since(t0)
			if err != nil || res.FunctionError != "" || res.StartKind != api.StartRestore {
				tb.Fatalf("%s restore invoke: %v %+v (decision %q)", o.Example, err, res, ag.SnapshotDecision(name, fn.Version))
			}
			r.Restore, r.RestoreAgent = append(r.Restore, d), append(r.RestoreAgent, res.RestoreDuration)
			if i == o.Rounds-1 {
				r.Decision = ag.SnapshotDecision(name, fn.Version)
			}
		}
		ag.RetireIdle(name)
	}
	return r
}

var (
	ctrMu       sync.Mutex
	ctrImported = map[string]bool{}
)

// ctrImage imports an example's archive into the bench namespace of the
// cluster's containerd once, and returns ctr's global flags and the
// image's name.
func ctrImage(tb testing.TB, f *fixture, example, archive string) ([]string, string) {
	tb.Helper()
	args := []string{"--address", f.cluster.Containerd.Address, "--namespace", "bench"}
	ref := "bench/" + example
	ctrMu.Lock()
	defer ctrMu.Unlock()
	if !ctrImported[ref] {
		out, err := exec.Command("ctr", append(args, "images", "import", "--index-name", ref, archive)...).CombinedOutput()
		if err != nil {
			tb.Fatalf("ctr import: %v\n%s", err, out)
		}
		ctrImported[ref] = true
	}
	return args, ref
}

// BenchmarkColdStart compares a cold start of examples/hello through the
// whole path (client → scheduler → agent → new container → amber-init →
// aws-lambda-go runtime → response) with `ctr run --rm` of the same image
// on the same containerd, interleaved in one run so machine noise hits both.
func BenchmarkColdStart(b *testing.B) {
	f := clusterB(b)
	rounds := benchRounds(b, 15)
	r := measureStarts(b, f, startOpts{Example: "hello", Rounds: rounds, ViaScheduler: true, Ctr: true})
	ap50, cp50 := percentile(r.Cold, 50), percentile(r.Ctr, 50)
	b.ReportMetric(ms(ap50), "cold-p50-ms")
	b.ReportMetric(ms(percentile(r.Cold, 99)), "cold-p99-ms")
	b.ReportMetric(ms(cp50), "ctr-run-p50-ms")
	b.ReportMetric(float64(ap50)/float64(cp50), "cold/ctr-run")
	b.Logf("%d rounds: amber cold start p50 %.1f ms p99 %.1f ms; ctr run --rm p50 %.1f ms p99 %.1f ms; ratio %.2f",
		rounds, ms(ap50), ms(percentile(r.Cold, 99)), ms(cp50), ms(percentile(r.Ctr, 99)), float64(ap50)/float64(cp50))
}

// warmPathsResult holds the four interleaved latencies of measureWarmPaths.
type warmPathsResult struct {
	Via      []time.Duration // client → scheduler → agent → instance
	Straight []time.Duration // client → agent → instance
	Runtime  []time.Duration // the in-process Runtime API exchange (bench.DirectRuntime)
	Bare     []time.Duration // a bare loopback HTTP round trip to the scheduler (/healthz)
	Agent    string          // the agent that holds the warm instance
}

// measureWarmPaths deploys examples/hello as name, warms one instance and
// then, n times, interleaved so machine noise hits all of them: a warm
// invoke through the scheduler; the same invoke straight to the agent
// that holds the warm instance; a direct call to an in-process Runtime
// API with an echoing runtime (no agent, no process, no container); a
// bare loopback HTTP round trip to the scheduler.
func measureWarmPaths(tb testing.TB, f *fixture, name string, n int) *warmPathsResult {
	tb.Helper()
	c := f.cluster.Client()
	ctx := tb.Context()
	fn := deploy(tb, c, name, f.images["hello"])
	first, err := c.Invoke(ctx, name, []byte(`{}`))
	if err != nil {
		tb.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // a heartbeat: the scheduler sees the idle instance
	agents, err := c.Agents(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	var agentURL string
	for _, a := range agents {
		if a.Name == first.Agent {
			agentURL = a.URL
		}
	}
	payload := `{"name":"bench"}`
	hc := &http.Client{}
	direct := func() error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, agentURL+"/v1/functions/"+name+"/invoke", strings.NewReader(payload))
		req.Header.Set(api.HeaderVersion, strconv.Itoa(fn.Version))
		req.Header.Set("Authorization", "Bearer "+f.cluster.Token)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK || resp.Header.Get(api.HeaderStartKind) != string(api.StartWarm) {
			return fmt.Errorf("direct invoke: %s %s", resp.Status, resp.Header.Get(api.HeaderStartKind))
		}
		return nil
	}
	rt, err := bench.NewDirectRuntime()
	if err != nil {
		tb.Fatal(err)
	}
	defer rt.Close()
	if err := rt.Call(ctx, "warmup", []byte(payload)); err != nil {
		tb.Fatal(err)
	}
	r := &warmPathsResult{Agent: first.Agent}
	for i := 0; i < n; i++ {
		t0 := time.Now()
		res, err := c.Invoke(ctx, name, []byte(payload))
		if err != nil || res.StartKind != api.StartWarm {
			tb.Fatalf("invoke %d: %v %v", i, err, res)
		}
		r.Via = append(r.Via, time.Since(t0))
		t0 = time.Now()
		if err := direct(); err != nil {
			tb.Fatal(err)
		}
		r.Straight = append(r.Straight, time.Since(t0))
		t0 = time.Now()
		if err := rt.Call(ctx, "bench-"+strconv.Itoa(i), []byte(payload)); err != nil {
			tb.Fatal(err)
		}
		r.Runtime = append(r.Runtime, time.Since(t0))
		t0 = time.Now()
		resp, err := hc.Get(f.cluster.SchedulerURL + "/healthz")
		if err != nil {
			tb.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		r.Bare = append(r.Bare, time.Since(t0))
	}
	return r
}

// BenchmarkWarmInvoke measures sequential warm invocations of
// examples/hello through the scheduler and an agent, next to a bare
// loopback HTTP round trip to the scheduler (/healthz) in the same run
// (measureWarmPaths).
func BenchmarkWarmInvoke(b *testing.B) {
	f := clusterB(b)
	n := benchRounds(b, 1000)
	r := measureWarmPaths(b, f, "bench-warm", n)
	wp50, wp99 := percentile(r.Via, 50), percentile(r.Via, 99)
	bp50 := percentile(r.Bare, 50)
	b.ReportMetric(float64(wp50.Microseconds()), "warm-p50-µs")
	b.ReportMetric(float64(wp99.Microseconds()), "warm-p99-µs")
	b.ReportMetric(float64(bp50.Microseconds()), "http-p50-µs")
	b.ReportMetric(float64(wp50)/float64(bp50), "warm/http")
	b.Logf("%d sequential invokes: warm p50 %s p99 %s; bare loopback HTTP p50 %s p99 %s",
		n, wp50, wp99, bp50, percentile(r.Bare, 99))
}

// BenchmarkRegistryPull measures, with a 50 MB image (one random-content
// layer) on a loopback registry: pull and unpack alone (containerd, as the
// agent does it), the first invocation after a deploy by reference (pull,
// unpack and cold start), and a cold start from the image already present,
// in the same run. The body is benchRegistryPull in registry_test.go.
func BenchmarkRegistryPull(b *testing.B) { benchRegistryPull(b) }

// BenchmarkSchedulerOverhead compares a warm invoke of examples/hello
// through the scheduler with the same invoke sent straight to the agent
// that holds the warm instance, and with a direct in-process Runtime API
// call, interleaved in one run (measureWarmPaths).
func BenchmarkSchedulerOverhead(b *testing.B) {
	f := clusterB(b)
	n := benchRounds(b, 1000)
	r := measureWarmPaths(b, f, "bench-direct", n)
	vp50, sp50, rp50 := percentile(r.Via, 50), percentile(r.Straight, 50), percentile(r.Runtime, 50)
	b.ReportMetric(float64(vp50.Microseconds()), "scheduler-p50-µs")
	b.ReportMetric(float64(sp50.Microseconds()), "agent-p50-µs")
	b.ReportMetric(float64(rp50.Microseconds()), "runtime-api-p50-µs")
	b.ReportMetric(float64((vp50 - sp50).Microseconds()), "added-p50-µs")
	b.Logf("%d invokes: through the scheduler p50 %s p99 %s; straight to the agent p50 %s p99 %s; added %s at p50; direct Runtime API p50 %s",
		n, vp50, percentile(r.Via, 99), sp50, percentile(r.Straight, 99), vp50-sp50, rp50)
}

// throughputResult is what measureThroughput saw.
type throughputResult struct {
	Workers   int
	Duration  time.Duration
	Lats      []time.Duration // successful invocations
	Errors    int
	Instances int            // idle instances of the function when the run started
	PerAgent  map[string]int // successful invocations per agent
	// CPU is the CPU time per successful invocation of each process of
	// the cluster (test process: clients, scheduler and agents).
	CPU      []bench.CPUShare
	CPUTotal float64 // µs per invocation
}

// Rate is successful invocations per second.
func (r *throughputResult) Rate() float64 { return float64(len(r.Lats)) / r.Duration.Seconds() }

// measureThroughput drives sustained warm invocations of examples/hello
// through the scheduler and the cluster's agents from workers concurrent
// clients for dur. The pool is min_warm = max_instances = workers, and
// the run starts once that many instances are idle (or after 30 s): one
// warm instance per client, and no prewarming of more instances (min_warm
// counts idle ones) competing with the run.
func measureThroughput(tb testing.TB, f *fixture, workers int, dur time.Duration) *throughputResult {
	tb.Helper()
	c := f.cluster.Client()
	ctx := tb.Context()
	deploy(tb, c, "bench-tput", f.images["hello"])
	if _, err := c.SetPool(ctx, "bench-tput", api.PoolChange{MinWarm: ptr(workers), MaxInstances: ptr(workers)}); err != nil {
		tb.Fatal(err)
	}
	r := &throughputResult{Workers: workers, Duration: dur, PerAgent: map[string]int{}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		fs, err := c.Function(ctx, "bench-tput")
		if err != nil {
			tb.Fatal(err)
		}
		r.Instances = 0
		for _, in := range fs.Instances {
			if in.State == api.StateIdle {
				r.Instances++
			}
		}
		if r.Instances >= workers || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	var mu sync.Mutex
	before := bench.SampleCPU(f.cluster.Dir)
	end := time.Now().Add(dur)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			per := map[string]int{}
			bad := 0
			for time.Now().Before(end) {
				t0 := time.Now()
				res, err := c.Invoke(ctx, "bench-tput", []byte(`{}`))
				if err != nil || res.FunctionError != "" {
					bad++
					continue
				}
				mine = append(mine, time.Since(t0))
				per[res.Agent]++
			}
			mu.Lock()
			r.Lats = append(r.Lats, mine...)
			r.Errors += bad
			for a, n := range per {
				r.PerAgent[a] += n
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	r.CPU, r.CPUTotal = bench.CPUPerOp(before, bench.SampleCPU(f.cluster.Dir), len(r.Lats))
	if _, err := c.SetPool(context.WithoutCancel(ctx), "bench-tput", api.PoolChange{MinWarm: ptr(0), MaxInstances: ptr(0)}); err != nil {
		tb.Fatal(err)
	}
	return r
}

// BenchmarkThroughput drives sustained warm invocations of examples/hello
// through the scheduler and two agents from 16 concurrent clients for a
// fixed time (AMBER_BENCH_DURATION, default 10 s), and reports
// invocations per second and the p99 latency.
func BenchmarkThroughput(b *testing.B) {
	f := clusterB(b)
	dur := 10 * time.Second
	if v, err := time.ParseDuration(os.Getenv("AMBER_BENCH_DURATION")); err == nil {
		dur = v
	}
	clients := 16
	if v, err := strconv.Atoi(os.Getenv("AMBER_BENCH_CLIENTS")); err == nil && v > 0 {
		clients = v
	}
	r := measureThroughput(b, f, clients, dur)
	b.ReportMetric(r.Rate(), "invocations/s")
	b.ReportMetric(float64(percentile(r.Lats, 99).Microseconds()), "p99-µs")
	b.ReportMetric(r.CPUTotal, "cpu-µs/op")
	b.Logf("%d workers for %s: %d invocations (%.0f/s), %d failed, p50 %s p99 %s, per agent %v; CPU per invocation %.0f µs: %v",
		r.Workers, dur, len(r.Lats), r.Rate(), r.Errors, percentile(r.Lats, 50), percentile(r.Lats, 99), r.PerAgent, r.CPUTotal, r.CPU)
}

// BenchmarkSnapshotRestore measures, for examples/heavy-init and
// examples/hello, a cold start and a restore from a snapshot of the same
// version on the same agent, interleaved round by round (measureStarts:
// each round deploys a new version: cold start, wait for the agent's
// background snapshot, retire the warm instance, restore), plus each
// snapshot's size and time to take. Both are timed by the client to the
// first reply, straight to the agent. Reports restore/cold at p50.
func BenchmarkSnapshotRestore(b *testing.B) {
	requireCRIU(b)
	f := clusterB(b)
	rounds := benchRounds(b, 10)
	for _, ex := range []string{"heavy-init", "hello"} {
		r := measureStarts(b, f, startOpts{Example: ex, Rounds: rounds, Restore: true})
		cp50, rp50 := percentile(r.Cold, 50), percentile(r.Restore, 50)
		b.ReportMetric(ms(cp50), ex+"-cold-p50-ms")
		b.ReportMetric(ms(percentile(r.Cold, 99)), ex+"-cold-p99-ms")
		b.ReportMetric(ms(rp50), ex+"-restore-p50-ms")
		b.ReportMetric(ms(percentile(r.Restore, 99)), ex+"-restore-p99-ms")
		b.ReportMetric(float64(rp50)/float64(cp50), ex+"-restore/cold")
		b.ReportMetric(float64(r.SnapshotBytes)/(1<<20), ex+"-snapshot-MB")
		b.ReportMetric(ms(percentile(r.Take, 50)), ex+"-take-p50-ms")
		b.Logf("%s: decision after the last round: %s", ex, r.Decision)
		b.Logf("%s, %d rounds: cold p50 %.1f ms p99 %.1f ms (init p50 %.1f ms); restore p50 %.1f ms p99 %.1f ms (agent's restore p50 %.1f ms); restore/cold %.2f; snapshot %.1f MB, taken in p50 %.1f ms",
			ex, rounds, ms(cp50), ms(percentile(r.Cold, 99)), ms(percentile(r.Init, 50)), ms(rp50), ms(percentile(r.Restore, 99)),
			ms(percentile(r.RestoreAgent, 50)), float64(rp50)/float64(cp50), float64(r.SnapshotBytes)/(1<<20), ms(percentile(r.Take, 50)))
	}
}
