package testenv_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"

	"github.com/amberfn/amber/agent"
	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/scheduler"
	"github.com/amberfn/amber/testenv"
)

// faultEnv is TestFaults' cluster: an in-process scheduler and agent
// (agent-1, 4096 MB) from StartCluster, plus "sub", an `amber agent`
// subprocess that can be SIGKILLed. sub advertises far more memory, so
// cold starts go there first while it is up.
type faultEnv struct {
	*relEnv
	amberBin string
	subArgs  []string
	sub      *agentProc
	ctd      *containerd.Client
}

const subAgent = "sub"

// startSub starts sub; TestFaults' cleanup kills whichever sub runs last.
func (e *faultEnv) startSub(t *testing.T, n int) {
	t.Helper()
	logPath := filepath.Join(e.dir, fmt.Sprintf("sub-%d.log", n))
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(e.amberBin, e.subArgs...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		t.Fatalf("start %s: %v", e.amberBin, err)
	}
	p := &agentProc{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	e.sub = p
	url := "http://" + e.sub.waitServing(t)
	waitAgentReady(t, e.cl.Client(), subAgent, url)
}

// TestFaults injects one fault per subtest while 6 clients keep invoking,
// and accounts for every invocation: it succeeded, failed with an HTTP
// error whose message names the problem (never a hang: every call has a
// 30 s limit), or — for async events — is in the dead-letter list; the
// ledger's answered records are exactly the clients' successes and
// function errors.
func TestFaults(t *testing.T) {
	env := &faultEnv{relEnv: reliabilityCluster(t, "amber-flt-", 1)}
	ctx := t.Context()
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	env.amberBin = filepath.Join(env.dir, "amber")
	build := exec.CommandContext(ctx, "go", "build", "-o", env.amberBin, "./cmd/amber")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/amber: %v\n%s", err, out)
	}
	state := filepath.Join(env.dir, subAgent)
	env.subArgs = []string{"agent", "--name", subAgent, "--listen", "127.0.0.1:0",
		"--scheduler", env.cl.SchedulerURL, "--token", env.cl.Token,
		"--containerd", env.cl.Containerd.Address, "--init", env.initBin,
		"--state", state, "--capacity", "100000"}
	env.ctd, err = containerd.New(env.cl.Containerd.Address, containerd.WithDefaultNamespace(agent.Namespace))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.ctd.Close() })
	// Registered before the agent's own cleanup (which kills it), so it runs
	// after: remove whatever is still labelled with sub.
	t.Cleanup(func() {
		sweep, err := agent.NewContainerd(env.cl.Containerd.Address, subAgent, env.initBin, state, nil,
			slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			return
		}
		defer sweep.Close()
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = sweep.Cleanup(cctx)
	})
	t.Cleanup(func() { // SIGTERM: sub removes its instances; SIGKILL if it hangs
		if env.sub != nil {
			env.sub.signal(syscall.SIGTERM)
			select {
			case <-env.sub.done:
			case <-time.After(40 * time.Second):
				t.Errorf("sub did not stop within 40 s of SIGTERM; its log:\n%s", env.sub.logText())
				env.sub.signal(syscall.SIGKILL)
				<-env.sub.done
			}
		}
	})
	env.startSub(t, 1)

	t.Run("AgentSIGKILL", func(t *testing.T) { faultAgentKill(t, env) })
	t.Run("SchedulerRestart", func(t *testing.T) { faultSchedulerRestart(t, env) })
	t.Run("ContainerdRestart", func(t *testing.T) { faultContainerdRestart(t, env) })
	t.Run("SnapshotDiskFull", func(t *testing.T) { faultSnapshotDiskFull(t, env) })
}

// faultLoad deploys the subtest's functions and starts 6 clients on them.
func faultLoad(t *testing.T, env *faultEnv, prefix string) (*load, time.Time) {
	t.Helper()
	fns := deployLoadFns(t, env.cl.Client(), prefix, env.helloTar, env.dir)
	since := time.Now()
	l := newLoad(env.cl.SchedulerURL, env.cl.Token, fns)
	l.setPhase("before")
	l.start(6)
	t.Cleanup(l.halt)
	return l, since
}

// finish stops the load, reports it, checks the accounts and reaps the
// subtest's instances.
func (e *faultEnv) finish(t *testing.T, l *load, since time.Time) {
	t.Helper()
	l.halt()
	l.report(t)
	l.checkAccounts(t, since, 90*time.Second)
	reapFns(t, e.cl.Client(), l.fns.sync())
}

// reapFns sets the functions' pools to 0 with a 1 s keep-alive and waits
// until no agent reports an instance of them.
func reapFns(t *testing.T, c *api.Client, fns []string) {
	t.Helper()
	for _, fn := range fns {
		if _, err := c.SetPool(t.Context(), fn, poolOff()); err != nil {
			t.Errorf("pool of %s back to 0: %v", fn, err)
		}
	}
	waitUntil(t, 60*time.Second, "instances reaped", func() bool {
		for _, fn := range fns {
			if _, _, total := instancesOf(t, c, fn); total > 0 {
				return false
			}
		}
		return true
	})
}

// checkPhases: the phases named pure (before and after a fault) saw no
// failure at all; every other phase, and every call that spanned a phase
// change, failed only with clear errors.
func checkPhases(t *testing.T, l *load, allowUnreachable bool, pure ...string) {
	t.Helper()
	l.mu.Lock()
	order := append([]string(nil), l.order...)
	l.mu.Unlock()
	for _, p := range order {
		pt := l.tally(p)
		if pt.ok+pt.fnErr+pt.platform+pt.unreachable+pt.hung+pt.asyncAcked+pt.asyncRefused == 0 {
			continue
		}
		if slices.Contains(pure, p) {
			noFailures(t, l, p)
		} else {
			onlyClearErrors(t, l, p, allowUnreachable)
		}
	}
}

// noFailures fails the test if the phase saw any failed call.
func noFailures(t *testing.T, l *load, phase string) {
	t.Helper()
	pt := l.tally(phase)
	if n := pt.platform + pt.unreachable + pt.hung + pt.unexpected; n > 0 {
		t.Errorf("phase %s: %d calls failed (%d platform errors, %d scheduler unreachable, %d hung, %d unexpected function errors), want none",
			phase, n, pt.platform, pt.unreachable, pt.hung, pt.unexpected)
	}
	if pt.ok == 0 {
		t.Errorf("phase %s: no successful invocation", phase)
	}
}

// onlyClearErrors fails the test if a phase saw a failure other than an
// HTTP error with a message (allowUnreachable: or the scheduler refusing
// connections while it is down).
func onlyClearErrors(t *testing.T, l *load, phase string, allowUnreachable bool) {
	t.Helper()
	pt := l.tally(phase)
	if pt.hung > 0 {
		t.Errorf("phase %s: %d calls hung", phase, pt.hung)
	}
	if pt.unexpected > 0 {
		t.Errorf("phase %s: %d calls of functions that do not fail came back as function errors (a platform fault blamed on the function)", phase, pt.unexpected)
	}
	if pt.unreachable > 0 && !allowUnreachable {
		t.Errorf("phase %s: %d calls failed without an HTTP error (transport errors) while the scheduler was up", phase, pt.unreachable)
	}
	for k := range pt.errs {
		if strings.Contains(k, "without a message") {
			t.Errorf("phase %s: an HTTP error without a message: %s", phase, k)
		}
	}
}

// faultAgentKill: SIGKILL the subprocess agent under load. Calls it had
// in flight fail with a 502 naming the agent and request; the rest carry
// on on agent-1; the agent is started again and serves.
func faultAgentKill(t *testing.T, env *faultEnv) {
	l, since := faultLoad(t, env, "fa")
	time.Sleep(4 * time.Second)
	if l.tally("before").agents[subAgent] == 0 {
		t.Logf("note: sub served nothing before the kill: %v", l.tally("before").agents)
	}
	l.setPhase("killed")
	env.sub.signal(syscall.SIGKILL)
	select {
	case <-env.sub.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not die within 10 s of SIGKILL")
	}
	time.Sleep(6 * time.Second)
	l.setPhase("restarting")
	env.startSub(t, 2)
	// After the restart: the next cold starts go to sub (most free
	// memory); a new version of the slow function makes some.
	deploy(t, env.cl.Client(), l.fns.slow, shellImage(t, env.dir, "fa-slow2", `handler() { /var/task/busybox usleep 200000; printf '{"slept":2}'; }`))
	time.Sleep(time.Second)
	l.setPhase("after")
	time.Sleep(6 * time.Second)
	env.finish(t, l, since)

	checkPhases(t, l, false, "before", "after")
	killed := l.tally("killed")
	if killed.ok == 0 || killed.agents["agent-1"] == 0 {
		t.Errorf("no invocation succeeded on agent-1 while sub was down: %+v", killed.agents)
	}
	if killed.agents[subAgent] > 0 {
		t.Logf("note: %d invocations answered by sub around its kill (finished before it)", killed.agents[subAgent])
	}
	after := l.tally("after")
	if after.agents["agent-1"] == 0 || after.agents[subAgent] == 0 {
		t.Errorf("after the restart invocations should run on both agents: %v", after.agents)
	}
}

// faultSchedulerRestart: stop the scheduler under load (its HTTP server
// shuts down gracefully, the Scheduler closes) and start a new one on the
// same address and data folder. Acknowledged events are delivered; the
// ledger keeps every acknowledged record.
func faultSchedulerRestart(t *testing.T, env *faultEnv) {
	l, since := faultLoad(t, env, "fb")
	time.Sleep(4 * time.Second)
	l.setPhase("restart")
	if err := testenv.RestartScheduler(t.Context(), env.cl, 10*time.Second, time.Second,
		scheduler.WithLogger(env.log.With("component", "scheduler"))); err != nil {
		t.Fatalf("restart scheduler: %v", err)
	}
	c := env.cl.Client()
	waitUntil(t, 30*time.Second, "both agents ready with the new scheduler", func() bool {
		agents, err := c.Agents(t.Context())
		ready := 0
		for _, a := range agents {
			if a.State == api.AgentReady {
				ready++
			}
		}
		return err == nil && ready == 2
	})
	l.setPhase("after")
	time.Sleep(6 * time.Second)
	env.finish(t, l, since)

	checkPhases(t, l, true, "before", "after")
}

// faultContainerdRestart: restart containerd under load (its shims and
// tasks keep running, as with systemctl restart). Calls that need
// containerd while it is down fail with a clear error; afterwards new
// instances start again and every call succeeds.
func faultContainerdRestart(t *testing.T, env *faultEnv) {
	l, since := faultLoad(t, env, "fc")
	time.Sleep(4 * time.Second)
	l.setPhase("restart")
	if err := testenv.RestartContainerd(t.Context(), env.cl.Containerd, 2*time.Second); err != nil {
		t.Fatalf("restart containerd: %v", err)
	}
	c := env.cl.Client()
	// New instances: a new version of the slow function needs cold starts.
	restarted := time.Now()
	deploy(t, c, l.fns.slow, shellImage(t, env.dir, "fc-slow2", `handler() { /var/task/busybox usleep 200000; printf '{"slept":2}'; }`))
	var coldAfter *api.InvokeResult
	waitUntil(t, 60*time.Second, "a cold start after the containerd restart", func() bool {
		res, err := l.syncCall(l.fns.slow, `{}`) // accounted like the load's calls
		if err != nil {
			t.Logf("invoke after the restart: %v", err)
			return false
		}
		if res.StartKind == api.StartCold || res.StartKind == api.StartRestore {
			coldAfter = res
			return true
		}
		return false
	})
	t.Logf("first new instance %s on %s %s after containerd came back", coldAfter.Instance, coldAfter.Agent, time.Since(restarted).Round(time.Millisecond))
	l.setPhase("after")
	time.Sleep(6 * time.Second)
	env.finish(t, l, since)

	checkPhases(t, l, false, "before", "after")

	// Nothing of this subtest's functions left in containerd.
	var left []string
	defer func() {
		if t.Failed() && len(left) > 0 {
			t.Logf("containers of fc-* still in containerd: %v", left)
			// What the agent is stuck on: its goroutines, in its log.
			if env.sub != nil {
				_ = syscall.Kill(env.sub.cmd.Process.Pid, syscall.SIGQUIT)
				t.Logf("sub's goroutines dumped to its log (%s)", env.dir)
			}
		}
	}()
	waitUntil(t, 30*time.Second, "no container of fc-* in containerd", func() bool {
		conts, err := env.ctd.Containers(t.Context())
		if err != nil {
			return false
		}
		left = left[:0]
		for _, x := range conts {
			if strings.HasPrefix(x.ID(), "fc-") {
				left = append(left, x.ID())
			}
		}
		return len(left) == 0
	})
}

// faultSnapshotDiskFull: a third agent keeps its CRIU snapshot store on a
// 64 MB tmpfs and takes the cold starts (most free memory). The snapshot
// of examples/heavy-init (about 67 MB) cannot be written there:
// invocations still succeed (cold), the agent says why, and no partial
// snapshot is left to be restored later.
func faultSnapshotDiskFull(t *testing.T, env *faultEnv) {
	requireCRIU(t)
	ctx := t.Context()
	const name = "tiny"
	state := filepath.Join(env.dir, name)
	store := filepath.Join(state, "snapshots")
	if err := os.MkdirAll(store, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", store).CombinedOutput(); err != nil {
		testenv.Require(t, fmt.Errorf("%w: mount a tmpfs for the snapshot store: %v: %s", testenv.ErrPrerequisite, err, out))
	}
	t.Cleanup(func() { _ = syscall.Unmount(store, syscall.MNT_DETACH) })

	var logBuf syncBuffer
	log := slog.New(slog.NewTextHandler(io.MultiWriter(&logBuf, logWriter{env.log}), nil)).With("component", "agent")
	client := env.cl.Client()
	ctr, err := agent.NewContainerd(env.cl.Containerd.Address, name, env.initBin, state, client, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(client, agent.WithName(name), agent.WithAdvertiseURL("http://"+ln.Addr().String()),
		agent.WithToken(env.cl.Token), agent.WithCapacityMB(200000), agent.WithLauncher(ctr), agent.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: a.Handler()}
	go func() { _ = srv.Serve(ln) }()
	runCtx, stop := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { _ = a.Run(runCtx); close(ran) }()
	t.Cleanup(func() { // before the unmount (cleanups run last first)
		stop()
		<-ran
		_ = srv.Close()
		_ = ctr.Close()
	})
	waitAgentReady(t, client, name, "http://"+ln.Addr().String())

	l, since := faultLoad(t, env, "fd")
	heavyTar, err := testenv.BuildExample(ctx, "heavy-init", env.dir)
	if err != nil {
		t.Fatal(err)
	}
	fn := deploy(t, client, "fd-heavy", heavyTar, func(s *api.FunctionSpec) {
		s.MemoryMB = 256
		s.Timeout = api.Duration(10 * time.Second)
	})
	heavy := func() *api.InvokeResult {
		t.Helper()
		ictx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		res, err := client.Invoke(ictx, "fd-heavy", []byte(`{}`))
		if err != nil {
			t.Fatalf("invoke fd-heavy: %v", err)
		}
		if res.FunctionError != "" {
			t.Fatalf("fd-heavy: function error %s", res.Payload)
		}
		if res.StartKind == api.StartRestore {
			t.Fatalf("fd-heavy was restored from a snapshot that cannot have been written (%s on %s)", res.Instance, res.Agent)
		}
		return res
	}
	// Each cold start here is followed by an attempt to snapshot the
	// version; the agent gives up after two failures.
	for attempt := 1; attempt <= 2; attempt++ {
		res := heavy()
		t.Logf("fd-heavy: %s start on %s (init %s)", res.StartKind, res.Agent, res.InitDuration.Round(time.Millisecond))
		if res.Agent != name {
			t.Fatalf("fd-heavy ran on %s, not %s (the agent with the most free memory): %s", res.Agent, name, agentsSummary(ctx, client))
		}
		waitUntil(t, 120*time.Second, "the snapshot attempt to end", func() bool {
			d := a.SnapshotDecision("fd-heavy", fn.Version)
			return !strings.Contains(d, "taking a snapshot") && strings.Contains(d, "failed")
		})
		t.Logf("decision after attempt %d: %s", attempt, a.SnapshotDecision("fd-heavy", fn.Version))
		a.RetireIdle("fd-heavy") // the next call starts a new instance
	}
	d := a.SnapshotDecision("fd-heavy", fn.Version)
	if !strings.Contains(d, "no snapshot: taking one failed") {
		t.Errorf("decision after two failed snapshots %q: want it to say it stopped trying", d)
	}
	if !strings.Contains(strings.ToLower(d), "no space") {
		t.Errorf("decision %q does not say the disk is full", d)
	}
	if _, log, ok := strings.Cut(d, "(criu log: "); !ok {
		t.Errorf("decision %q names no CRIU log", d)
	} else if _, err := os.Stat(strings.TrimSuffix(log, ")")); err != nil {
		t.Errorf("decision %q: the CRIU log it names is gone: %v", d, err)
	}
	if !strings.Contains(logBuf.String(), "snapshot_failed") {
		t.Errorf("the agent logged no snapshot_failed event")
	}
	for _, e := range dirEntriesOK(store) {
		if strings.HasPrefix(e, ".") || strings.HasPrefix(e, "fd-heavy@") {
			t.Errorf("partial snapshot left in the store: %s", e)
		}
	}
	if _, err := a.Snapshot("fd-heavy", fn.Version); err == nil {
		t.Errorf("the agent lists a snapshot of fd-heavy that could not have been written")
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(store, &st); err == nil {
		used := (st.Blocks - st.Bfree) * uint64(st.Bsize)
		t.Logf("snapshot tmpfs: %.1f MB used of %.1f MB after the failed snapshots: %v", mb(used), mb(st.Blocks*uint64(st.Bsize)), dirEntriesOK(store))
	}
	// Later starts stay cold and succeed.
	for range 2 {
		res := heavy()
		t.Logf("fd-heavy: %s start on %s", res.StartKind, res.Agent)
		a.RetireIdle("fd-heavy")
	}
	env.finish(t, l, since)
	checkPhases(t, l, false, "before")
	reapFns(t, client, []string{"fd-heavy"})
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// logWriter passes text lines on to a logger.
type logWriter struct{ log *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Info(strings.TrimSpace(string(p)), "component", "tiny")
	return len(p), nil
}
