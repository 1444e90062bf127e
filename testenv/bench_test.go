package testenv_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// percentile returns the p-th percentile (0–100) of ds, sorting it.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	i := int(float64(len(ds)-1) * p / 100)
	return ds[i]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// BenchmarkColdStart compares a cold start of examples/hello through the
// whole path (client → scheduler → agent → new container → amber-init →
// aws-lambda-go runtime → response) with `ctr run --rm` of the same image
// on the same containerd, interleaved in one run so machine noise hits both.
func BenchmarkColdStart(b *testing.B) {
	f := clusterB(b)
	c := f.cluster.Client()
	ctx := b.Context()
	base := deploy(b, c, "bench-cold", f.images["hello"])
	ctrArgs := []string{"--address", f.cluster.Containerd.Address, "--namespace", "bench"}
	out, err := exec.Command("ctr", append(ctrArgs, "images", "import", "--index-name", "bench/hello", f.images["hello"])...).CombinedOutput()
	if err != nil {
		b.Fatalf("ctr import: %v\n%s", err, out)
	}
	rounds := benchRounds(b, 15)
	var amber, ctr []time.Duration
	for i := 0; i < rounds; i++ {
		// A new version has no warm instance anywhere: the next invoke is cold.
		spec := base.FunctionSpec
		spec.Env = map[string]string{"ROUND": strconv.Itoa(i)}
		if _, err := c.Deploy(ctx, spec); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		res, err := c.Invoke(ctx, "bench-cold", []byte(`{"name":"bench"}`))
		d := time.Since(t0)
		if err != nil || res.FunctionError != "" || res.StartKind != api.StartCold {
			b.Fatalf("cold invoke: %v %s %s", err, res.StartKind, res.Payload)
		}
		amber = append(amber, d)

		t0 = time.Now()
		// The bootstrap exits at once outside Lambda: a container start, exec and exit.
		cmd := exec.Command("ctr", append(ctrArgs, "run", "--rm", "bench/hello", fmt.Sprintf("bench-%d", i), "/var/task/bootstrap")...)
		_ = cmd.Run()
		ctr = append(ctr, time.Since(t0))
	}
	ap50, cp50 := percentile(amber, 50), percentile(ctr, 50)
	b.ReportMetric(ms(ap50), "cold-p50-ms")
	b.ReportMetric(ms(percentile(amber, 99)), "cold-p99-ms")
	b.ReportMetric(ms(cp50), "ctr-run-p50-ms")
	b.ReportMetric(float64(ap50)/float64(cp50), "cold/ctr-run")
	b.Logf("%d rounds: amber cold start p50 %.1f ms p99 %.1f ms; ctr run --rm p50 %.1f ms p99 %.1f ms; ratio %.2f",
		rounds, ms(ap50), ms(percentile(amber, 99)), ms(cp50), ms(percentile(ctr, 99)), float64(ap50)/float64(cp50))
}

// BenchmarkWarmInvoke measures sequential warm invocations of
// examples/hello through the scheduler and an agent, next to a bare
// loopback HTTP round trip to the scheduler (/healthz) in the same run.
func BenchmarkWarmInvoke(b *testing.B) {
	f := clusterB(b)
	c := f.cluster.Client()
	ctx := b.Context()
	deploy(b, c, "bench-warm", f.images["hello"])
	if _, err := c.Invoke(ctx, "bench-warm", []byte(`{}`)); err != nil {
		b.Fatal(err)
	}
	n := benchRounds(b, 1000)
	warm := make([]time.Duration, 0, n)
	bare := make([]time.Duration, 0, n)
	hc := &http.Client{}
	for i := 0; i < n; i++ {
		t0 := time.Now()
		res, err := c.Invoke(ctx, "bench-warm", []byte(`{"name":"bench"}`))
		d := time.Since(t0)
		if err != nil || res.StartKind != api.StartWarm {
			b.Fatalf("warm invoke %d: %v %v", i, err, res)
		}
		warm = append(warm, d)
		t0 = time.Now()
		resp, err := hc.Get(f.cluster.SchedulerURL + "/healthz")
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		bare = append(bare, time.Since(t0))
	}
	wp50, wp99 := percentile(warm, 50), percentile(warm, 99)
	bp50 := percentile(bare, 50)
	b.ReportMetric(float64(wp50.Microseconds()), "warm-p50-µs")
	b.ReportMetric(float64(wp99.Microseconds()), "warm-p99-µs")
	b.ReportMetric(float64(bp50.Microseconds()), "http-p50-µs")
	b.ReportMetric(float64(wp50)/float64(bp50), "warm/http")
	b.Logf("%d sequential invokes: warm p50 %s p99 %s; bare loopback HTTP p50 %s p99 %s",
		n, wp50, wp99, bp50, percentile(bare, 99))
}

// benchRounds is the number of rounds, AMBER_BENCH_ROUNDS or def.
func benchRounds(b *testing.B, def int) int {
	if v, err := strconv.Atoi(os.Getenv("AMBER_BENCH_ROUNDS")); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkRegistryPull measures, with a 50 MB image (one random-content
// layer) on a loopback registry: pull and unpack alone (containerd, as the
// agent does it), the first invocation after a deploy by reference (pull,
// unpack and cold start), and a cold start from the image already present,
// in the same run. The body is benchRegistryPull in registry_test.go.
func BenchmarkRegistryPull(b *testing.B) { benchRegistryPull(b) }

// BenchmarkSchedulerOverhead compares a warm invoke of examples/hello
// through the scheduler with the same invoke sent straight to the agent
// that holds the warm instance, interleaved in one run.
func BenchmarkSchedulerOverhead(b *testing.B) {
	f := clusterB(b)
	c := f.cluster.Client()
	ctx := b.Context()
	fn := deploy(b, c, "bench-direct", f.images["hello"])
	first, err := c.Invoke(ctx, "bench-direct", []byte(`{}`))
	if err != nil {
		b.Fatal(err)
	}
	agents, err := c.Agents(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var agentURL string
	for _, a := range agents {
		if a.Name == first.Agent {
			agentURL = a.URL
		}
	}
	hc := &http.Client{}
	direct := func() error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, agentURL+"/v1/functions/bench-direct/invoke", strings.NewReader(`{"name":"bench"}`))
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
	n := benchRounds(b, 1000)
	via := make([]time.Duration, 0, n)
	straight := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		t0 := time.Now()
		res, err := c.Invoke(ctx, "bench-direct", []byte(`{"name":"bench"}`))
		if err != nil || res.StartKind != api.StartWarm {
			b.Fatalf("invoke %d: %v %v", i, err, res)
		}
		via = append(via, time.Since(t0))
		t0 = time.Now()
		if err := direct(); err != nil {
			b.Fatal(err)
		}
		straight = append(straight, time.Since(t0))
	}
	vp50, sp50 := percentile(via, 50), percentile(straight, 50)
	b.ReportMetric(float64(vp50.Microseconds()), "scheduler-p50-µs")
	b.ReportMetric(float64(sp50.Microseconds()), "agent-p50-µs")
	b.ReportMetric(float64((vp50 - sp50).Microseconds()), "added-p50-µs")
	b.Logf("%d invokes: through the scheduler p50 %s p99 %s; straight to the agent p50 %s p99 %s; added %s at p50",
		n, vp50, percentile(via, 99), sp50, percentile(straight, 99), vp50-sp50)
}

// BenchmarkThroughput drives sustained warm invocations of examples/hello
// (next to a no-op) through the scheduler and two agents from
// concurrent clients for a fixed time, and reports invocations per second
// and the p99 latency.
func BenchmarkThroughput(b *testing.B) {
	f := clusterB(b)
	c := f.cluster.Client()
	ctx := b.Context()
	deploy(b, c, "bench-tput", f.images["hello"])
	const workers = 16
	if _, err := c.SetPool(ctx, "bench-tput", api.PoolChange{MinWarm: ptr(workers)}); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		fs, err := c.Function(ctx, "bench-tput")
		if err != nil {
			b.Fatal(err)
		}
		if len(fs.Instances) >= workers || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	dur := 10 * time.Second
	if v, err := time.ParseDuration(os.Getenv("AMBER_BENCH_DURATION")); err == nil {
		dur = v
	}
	var (
		mu   sync.Mutex
		lats []time.Duration
		errs int
	)
	end := time.Now().Add(dur)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			bad := 0
			for time.Now().Before(end) {
				t0 := time.Now()
				res, err := c.Invoke(ctx, "bench-tput", []byte(`{}`))
				if err != nil || res.FunctionError != "" {
					bad++
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lats = append(lats, mine...)
			errs += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	rate := float64(len(lats)) / dur.Seconds()
	b.ReportMetric(rate, "invocations/s")
	b.ReportMetric(float64(percentile(lats, 99).Microseconds()), "p99-µs")
	b.Logf("%d workers for %s: %d invocations (%.0f/s), %d failed, p50 %s p99 %s",
		workers, dur, len(lats), rate, errs, percentile(lats, 50), percentile(lats, 99))
	if _, err := c.SetPool(ctx, "bench-tput", api.PoolChange{MinWarm: ptr(0)}); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSnapshotRestore measures, for examples/heavy-init and
// examples/hello, a cold start and a restore from a snapshot of the same
// version on the same agent, interleaved round by round (each round
// deploys a new version: cold start, wait for the agent's background
// snapshot, retire the warm instance, restore), plus each snapshot's size
// and time to take. Both are timed by the client to the first reply,
// straight to the agent. Reports restore/cold at p50.
func BenchmarkSnapshotRestore(b *testing.B) {
	requireCRIU(b)
	f := clusterB(b)
	c := f.cluster.Client()
	ctx := b.Context()
	ag := f.cluster.Agents[0]
	rounds := benchRounds(b, 10)
	for _, ex := range []string{"heavy-init", "hello"} {
		name := "bench-snap-" + ex
		base := deploy(b, c, name, exampleImage(b, f, ex), func(s *api.FunctionSpec) {
			s.MemoryMB = 256
			s.Timeout = api.Duration(10 * time.Second)
		})
		var cold, restore, initD, restoreD, take []time.Duration
		var size int64
		for i := 0; i < rounds; i++ {
			spec := base.FunctionSpec
			spec.Env = map[string]string{"ROUND": strconv.Itoa(i)}
			fn, err := c.Deploy(ctx, spec)
			if err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			res, err := agentInvoke(ctx, f, ag.Name(), name, fn.Version, `{}`)
			d := time.Since(t0)
			if err != nil || res.FunctionError != "" || res.StartKind != api.StartCold {
				b.Fatalf("cold invoke: %v %+v", err, res)
			}
			cold, initD = append(cold, d), append(initD, res.InitDuration)
			e := waitSnapshot(b, ag, name, fn.Version, t0)
			take, size = append(take, e.TakeTime), e.Size
			ag.RetireIdle(name)
			t0 = time.Now()
			res, err = agentInvoke(ctx, f, ag.Name(), name, fn.Version, `{}`)
			d = time.Since(t0)
			if err != nil || res.FunctionError != "" || res.StartKind != api.StartRestore {
				b.Fatalf("restore invoke: %v %+v (decision %q)", err, res, ag.SnapshotDecision(name, fn.Version))
			}
			restore, restoreD = append(restore, d), append(restoreD, res.RestoreDuration)
			ag.RetireIdle(name)
			if i == rounds-1 {
				b.Logf("%s: decision after the last round: %s", ex, ag.SnapshotDecision(name, fn.Version))
			}
		}
		cp50, rp50 := percentile(cold, 50), percentile(restore, 50)
		b.ReportMetric(ms(cp50), ex+"-cold-p50-ms")
		b.ReportMetric(ms(percentile(cold, 99)), ex+"-cold-p99-ms")
		b.ReportMetric(ms(rp50), ex+"-restore-p50-ms")
		b.ReportMetric(ms(percentile(restore, 99)), ex+"-restore-p99-ms")
		b.ReportMetric(float64(rp50)/float64(cp50), ex+"-restore/cold")
		b.ReportMetric(float64(size)/(1<<20), ex+"-snapshot-MB")
		b.ReportMetric(ms(percentile(take, 50)), ex+"-take-p50-ms")
		b.Logf("%s, %d rounds: cold p50 %.1f ms p99 %.1f ms (init p50 %.1f ms); restore p50 %.1f ms p99 %.1f ms (agent's restore p50 %.1f ms); restore/cold %.2f; snapshot %.1f MB, taken in p50 %.1f ms",
			ex, rounds, ms(cp50), ms(percentile(cold, 99)), ms(percentile(initD, 50)), ms(rp50), ms(percentile(restore, 99)),
			ms(percentile(restoreD, 50)), float64(rp50)/float64(cp50), float64(size)/(1<<20), ms(percentile(take, 50)))
	}
}
