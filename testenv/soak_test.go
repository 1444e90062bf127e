package testenv_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd"
	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/snapshots"

	"github.com/amberfn/amber/agent"
	"github.com/amberfn/amber/api"
	amsnap "github.com/amberfn/amber/snapshots"
	"github.com/amberfn/amber/testenv"
)

// soakDuration is how long TestSoak keeps the load on:
// AMBER_SOAK_DURATION (a Go duration; `go tool task soak` sets 5m), 45 s by
// default.
func soakDuration(t *testing.T) time.Duration {
	v := os.Getenv("AMBER_SOAK_DURATION")
	if v == "" {
		return 45 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 10*time.Second {
		t.Fatalf("AMBER_SOAK_DURATION=%q: want a Go duration of at least 10s", v)
	}
	return d
}

// reliabilityCluster starts a cluster of its own (its own containerd) for
// one reliability test, with the hello image and the staged shell example
// in the returned folder. Servers log to DIR/cluster.log.
// relEnv is a reliability test's own cluster and what it was built with.
type relEnv struct {
	cl       *testenv.Cluster
	dir      string // the test's folder: images, staged examples, cluster.log
	initBin  string
	helloTar string
	log      *slog.Logger // the servers' logger (DIR/cluster.log)
}

func reliabilityCluster(t *testing.T, prefix string, agents int, srv ...api.ServerOption) *relEnv {
	t.Helper()
	testenv.Require(t, testenv.CheckContainerd())
	dir, err := os.MkdirTemp("", prefix) // short: the containerd socket path is bounded
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	initBin, err := testenv.BuildInit(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	hello, err := testenv.BuildExample(ctx, "hello", dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.BuildExample(ctx, "shell", dir); err != nil { // stages dir/stage-shell
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "cluster.log")
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(lf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cl, err := testenv.StartCluster(ctx, testenv.ClusterConfig{Dir: filepath.Join(dir, "cluster"), Agents: agents, InitBin: initBin, Log: log, Server: srv})
	if err != nil {
		lf.Close()
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		cl.Stop()
		lf.Close()
		if t.Failed() {
			t.Logf("cluster log kept at %s (folder %s)", logPath, dir)
			return
		}
		os.RemoveAll(dir)
	})
	return &relEnv{cl: cl, dir: dir, initBin: initBin, helloTar: hello, log: log}
}

// memSample is one reading of the test process's memory.
type memSample struct {
	at        time.Duration
	heapInUse uint64
	rss       uint64
}

func sampleMemory(since time.Time) memSample {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{at: time.Since(since), heapInUse: ms.HeapInuse, rss: rssBytes()}
}

func rssBytes() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseUint(f[0], 10, 64)
				return n << 10
			}
		}
	}
	return 0
}

func openFDs() int {
	es, _ := os.ReadDir("/proc/self/fd")
	return len(es)
}

func mb(b uint64) float64 { return float64(b) / (1 << 20) }

// TestSoak runs moderate load on a cluster of its own — 8 clients invoking
// examples/hello, a function that errors and a slow one, sync and as async
// events, while warm pools grow and shrink and hello is deployed again
// mid-way — for soakDuration. With the load stopped, pools back at 0 and
// every instance reaped, nothing may be left: containers, tasks, shims,
// active containerd snapshots, stdio FIFOs, task state folders, network
// namespaces, CRIU work folders, unreferenced or partial CRIU snapshots;
// goroutines and open files are back near where they were before; the
// heap (after a GC) has not kept growing; and the ledger holds exactly the
// invocations the clients saw answered.
func TestSoak(t *testing.T) {
	dur := soakDuration(t)
	env := reliabilityCluster(t, "amber-soak-", 2)
	cl, dir, helloTar := env.cl, env.dir, env.helloTar
	ctx := t.Context()
	c := cl.Client()
	ctd, err := containerd.New(cl.Containerd.Address, containerd.WithDefaultNamespace(agent.Namespace))
	if err != nil {
		t.Fatal(err)
	}
	defer ctd.Close()

	fns := deployLoadFns(t, c, "soak", helloTar, dir)
	all := fns.sync()

	// Warm-up: the same load for a few seconds, so connection pools,
	// caches and images are there before the baseline is taken.
	warm := newLoad(cl.SchedulerURL, cl.Token, fns)
	warm.start(8)
	time.Sleep(4 * time.Second)
	warm.halt()
	warm.report(t)
	reapAll(t, c, ctd, all)
	waitQueueEmpty(t, c, fns.hello)
	closeIdleHTTP()
	time.Sleep(200 * time.Millisecond)
	baseG, baseFD := runtime.NumGoroutine(), openFDs()
	baseSnaps := containerdSnapshots(t, ctd)
	t.Logf("baseline after warm-up: %d goroutines, %d open files, %d containerd snapshots", baseG, baseFD, len(baseSnaps))

	// The soak.
	since := time.Now()
	l := newLoad(cl.SchedulerURL, cl.Token, fns)
	l.setPhase("soak")
	l.start(8)
	var samples []memSample
	deployed := false
	tick := time.NewTicker(dur / 15)
	defer tick.Stop()
	round := 0
	for time.Since(since) < dur {
		<-tick.C
		round++
		samples = append(samples, sampleMemory(since))
		// Pools: hello between 0 and 2 warm, slow between 0 and 1.
		hw, sw := 2*(round%2), round%2
		if _, err := c.SetPool(ctx, fns.hello, api.PoolChange{MinWarm: ptr(hw)}); err != nil {
			t.Errorf("set pool of %s: %v", fns.hello, err)
		}
		if _, err := c.SetPool(ctx, fns.slow, api.PoolChange{MinWarm: ptr(sw)}); err != nil {
			t.Errorf("set pool of %s: %v", fns.slow, err)
		}
		if !deployed && time.Since(since) > dur/2 {
			deployed = true
			fn := deploy(t, c, fns.hello, helloTar, func(s *api.FunctionSpec) { s.Env = map[string]string{"SOAK_ROUND": "2"} })
			t.Logf("%s: deployed %s version %d under load", time.Since(since).Round(time.Second), fn.Name, fn.Version)
		}
	}
	l.halt()
	samples = append(samples, sampleMemory(since))
	l.report(t)
	tot := l.totals()
	t.Logf("soak: %s, %d sync invocations answered (%d ok, %d function errors), %d events acknowledged, %d platform errors",
		time.Since(since).Round(time.Second), tot.ok+tot.fnErr, tot.ok, tot.fnErr, tot.asyncAcked, tot.platform+tot.unreachable)
	if tot.unexpected > 0 {
		t.Errorf("%d invocations of functions that do not fail came back as function errors", tot.unexpected)
	}
	if tot.platform+tot.unreachable+tot.asyncRefused > 0 {
		t.Errorf("%d invocations failed with platform errors under a soak that injects no faults", tot.platform+tot.unreachable+tot.asyncRefused)
	}
	if tot.ok == 0 || tot.fnErr == 0 || tot.asyncAcked == 0 {
		t.Errorf("the load did not exercise every kind of call: %+v", tot)
	}
	l.checkAccounts(t, since, 60*time.Second)

	// Memory: the last third's average heap in use (after a GC) is not
	// above 1.75× the first third's (RSS: 2×); samples are logged.
	for _, s := range samples {
		t.Logf("memory at %6s: heap in use %6.1f MB, RSS %6.1f MB", s.at.Round(time.Second), mb(s.heapInUse), mb(s.rss))
	}
	third := len(samples) / 3
	if third >= 2 {
		avg := func(ss []memSample, f func(memSample) uint64) float64 {
			var sum float64
			for _, s := range ss {
				sum += float64(f(s))
			}
			return sum / float64(len(ss))
		}
		heap := func(s memSample) uint64 { return s.heapInUse }
		rss := func(s memSample) uint64 { return s.rss }
		h1, h3 := avg(samples[:third], heap), avg(samples[len(samples)-third:], heap)
		r1, r3 := avg(samples[:third], rss), avg(samples[len(samples)-third:], rss)
		t.Logf("memory: heap in use first third %.1f MB, last third %.1f MB (×%.2f); RSS %.1f MB → %.1f MB (×%.2f)",
			h1/(1<<20), h3/(1<<20), h3/h1, r1/(1<<20), r3/(1<<20), r3/r1)
		if h3 > 1.75*h1 {
			t.Errorf("heap in use grew from %.1f MB to %.1f MB over the soak (more than 1.75×)", h1/(1<<20), h3/(1<<20))
		}
		if r3 > 2*r1 {
			t.Errorf("RSS grew from %.1f MB to %.1f MB over the soak (more than 2×)", r1/(1<<20), r3/(1<<20))
		}
	}

	// Back to nothing: pools at 0, instances reaped.
	reapAll(t, c, ctd, all)
	checkNoLeaks(t, cl, ctd, baseSnaps, "soak-")

	// Goroutines and open files come back near the baseline.
	deadline := time.Now().Add(30 * time.Second)
	var g, fd int
	for {
		closeIdleHTTP()
		g, fd = runtime.NumGoroutine(), openFDs()
		if (g <= baseG+goroutineSlack && fd <= baseFD+fdSlack) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("after the soak: %d goroutines (baseline %d), %d open files (baseline %d)", g, baseG, fd, baseFD)
	if g > baseG+goroutineSlack {
		var buf bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
		t.Errorf("goroutines: %d after the soak, %d before (tolerance %d); dump:\n%s", g, baseG, goroutineSlack, buf.String())
	}
	if fd > baseFD+fdSlack {
		t.Errorf("open files: %d after the soak, %d before (tolerance %d): %s", fd, baseFD, fdSlack, fdTargets())
	}
}

// The soak's tolerances for goroutines and open files: idle keep-alive
// connections the scheduler keeps to each agent (up to 2 per agent, 3
// goroutines and 2 files each in one process) come and go.
const (
	goroutineSlack = 15
	fdSlack        = 12
)

// closeIdleHTTP closes the idle connections of the default transport (the
// in-process agents' clients of the scheduler use it).
func closeIdleHTTP() {
	if tr, ok := http.DefaultTransport.(*http.Transport); ok {
		tr.CloseIdleConnections()
	}
}

// reapAll sets every function's pool to 0 with a 1 s keep-alive and waits
// until no agent reports an instance and containerd holds no container.
func reapAll(t *testing.T, c *api.Client, ctd *containerd.Client, fns []string) {
	t.Helper()
	ctx := t.Context()
	for _, fn := range fns {
		if _, err := c.SetPool(ctx, fn, poolOff()); err != nil {
			t.Fatalf("pool of %s back to 0: %v", fn, err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		agents, err := c.Agents(ctx)
		n := 0
		for _, a := range agents {
			n += len(a.Instances)
		}
		conts, cerr := ctd.Containers(ctx)
		if err == nil && cerr == nil && n == 0 && len(conts) == 0 {
			return
		}
		if time.Now().After(deadline) {
			var ids []string
			for _, x := range conts {
				ids = append(ids, x.ID())
			}
			t.Fatalf("instances not reaped within 60s: agents report %d (%v), containerd holds %v (%v); %s", n, err, ids, cerr, agentsSummary(ctx, c))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func waitQueueEmpty(t *testing.T, c *api.Client, fn string) {
	t.Helper()
	waitUntil(t, 60*time.Second, "async queue of "+fn+" empty", func() bool {
		st, err := c.Async(t.Context(), fn)
		return err == nil && st.Pending == 0
	})
}

// containerdSnapshots lists the overlayfs snapshots: key → kind.
func containerdSnapshots(t *testing.T, ctd *containerd.Client) map[string]snapshots.Kind {
	t.Helper()
	out := map[string]snapshots.Kind{}
	err := ctd.SnapshotService("overlayfs").Walk(t.Context(), func(_ context.Context, info snapshots.Info) error {
		out[info.Name] = info.Kind
		return nil
	})
	if err != nil {
		t.Fatalf("walk snapshots: %v", err)
	}
	return out
}

// checkNoLeaks checks that the cluster, its instances reaped, left
// nothing behind: in containerd (containers, tasks, snapshots beyond the
// image layers of baseSnaps), on the host (shims, stdio FIFOs of
// instances named prefix*, task state folders, network namespaces, CRIU
// work folders) and in each agent's snapshot store (no partial snapshot,
// only versions the registry has, within the budget).
func checkNoLeaks(t *testing.T, cl *testenv.Cluster, ctd *containerd.Client, baseSnaps map[string]snapshots.Kind, prefix string) {
	t.Helper()
	ctx := t.Context()
	conts, err := ctd.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range conts {
		t.Errorf("leaked container %s", x.ID())
	}
	resp, err := ctd.TaskService().List(ctx, &tasksapi.ListTasksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range resp.Tasks {
		t.Errorf("leaked task %s (pid %d)", p.ID, p.Pid)
	}
	snaps := containerdSnapshots(t, ctd)
	active := 0
	for k, kind := range snaps {
		if kind != snapshots.KindCommitted {
			active++
			t.Errorf("leaked containerd snapshot %s (%s)", k, kind)
		} else if _, ok := baseSnaps[k]; !ok {
			t.Logf("new committed snapshot (an image layer) %s", k)
		}
	}
	t.Logf("containerd: %d containers, %d tasks, %d snapshots (%d committed at the baseline, %d not committed now)", len(conts), len(resp.Tasks), len(snaps), len(baseSnaps), active)

	// Shims exit just after their task is deleted.
	waitUntil(t, 15*time.Second, "no shim serving the test containerd", func() bool {
		return len(shimsOf(cl.Containerd.Address)) == 0
	})
	// Stdio FIFOs of this test's instances (cio names them ID-stdin …).
	fifos, _ := filepath.Glob("/run/containerd/fifo/*/" + prefix + "*")
	for _, f := range fifos {
		t.Errorf("leaked stdio FIFO %s", f)
	}
	stateRoot := filepath.Join(cl.Containerd.Dir, "state", "io.containerd.runtime.v2.task", agent.Namespace)
	for _, e := range dirEntriesOK(stateRoot) {
		t.Errorf("leaked task state folder %s", filepath.Join(stateRoot, e))
	}
	agentsDir := filepath.Join(cl.Dir, "agents")
	for _, a := range dirEntriesOK(agentsDir) {
		for _, sub := range []string{"netns", "criu-work"} {
			for _, e := range dirEntriesOK(filepath.Join(agentsDir, a, sub)) {
				t.Errorf("leaked %s entry %s of %s", sub, e, a)
			}
		}
		store := filepath.Join(agentsDir, a, "snapshots")
		st, err := amsnap.Open(store, 0)
		if err != nil {
			t.Errorf("snapshot store of %s: %v", a, err)
			continue
		}
		for _, e := range dirEntriesOK(store) {
			if strings.HasPrefix(e, ".") {
				t.Errorf("partial snapshot left in the store of %s: %s", a, e)
			}
		}
		var size int64
		for _, e := range st.List() {
			if e.Function == "" {
				t.Errorf("snapshot %s of %s has no readable metadata", e.Dir, a)
				continue
			}
			size += e.Size
			if _, err := cl.Client().FunctionVersion(ctx, e.Function, e.Version); err != nil {
				t.Errorf("snapshot of %s@%d on %s: the registry has no such version (%v)", e.Function, e.Version, a, err)
			}
			t.Logf("%s keeps a snapshot of %s@%d (%.1f MB)", a, e.Function, e.Version, mb(uint64(e.Size)))
		}
		if size > amsnap.DefaultBudget {
			t.Errorf("snapshot store of %s holds %d bytes, over its budget %d", a, size, amsnap.DefaultBudget)
		}
	}
}

// dirEntriesOK lists a folder's entries (none when it does not exist).
func dirEntriesOK(dir string) []string {
	es, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// shimsOf lists the containerd-shim processes serving the daemon at address.
func shimsOf(address string) []string {
	var out []string
	for _, p := range procsMentioning(address) {
		if strings.Contains(p, "containerd-shim") {
			out = append(out, p)
		}
	}
	return out
}

// fdTargets describes what the process's open files point at.
func fdTargets() string {
	es, _ := os.ReadDir("/proc/self/fd")
	counts := map[string]int{}
	for _, e := range es {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue
		}
		if i := strings.Index(target, ":["); i > 0 {
			target = target[:i]
		}
		counts[target]++
	}
	var b strings.Builder
	for k, n := range counts {
		fmt.Fprintf(&b, "%s ×%d; ", k, n)
	}
	return b.String()
}
