package testenv_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/testenv"
)

// threeSchedulers starts a local cluster of three `amber scheduler`
// processes and agents, in a folder named with prefix that also holds
// hello.tar (examples/hello); it is stopped when the test ends.
func threeSchedulers(t *testing.T, prefix string, agents int) (*testenv.Cluster, string) {
	t.Helper()
	testenv.Require(t, testenv.CheckContainerd())
	if testing.Short() {
		t.Skip("several scheduler processes: skipped in -short")
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	initBin, err := testenv.BuildInit(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	amber, err := testenv.BuildAmber(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.BuildExample(ctx, "hello", dir); err != nil {
		t.Fatal(err)
	}
	cl, err := testenv.StartCluster(ctx, testenv.ClusterConfig{Dir: filepath.Join(dir, "cluster"), Agents: agents, InitBin: initBin,
		Schedulers: 3, SchedulerBin: amber})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cl.Stop()
		if !t.Failed() {
			os.RemoveAll(dir)
		}
	})
	return cl, dir
}

// TestSeveralSchedulers: `amber up --schedulers 3` brings up three
// scheduler processes joined as one control plane, with HAProxy (Debian's)
// in front. Clients invoke through HAProxy while one scheduler is SIGKILLed:
// the agent moves to another scheduler, invocations keep being answered,
// and every answered invocation is in the ledger exactly once.
func TestSeveralSchedulers(t *testing.T) {
	ctx := context.Background()
	cl, dir := threeSchedulers(t, "amber-multi-", 1)
	hello := filepath.Join(dir, "hello.tar")
	env, err := os.ReadFile(cl.EnvFile())
	if err != nil {
		t.Fatal(err)
	}
	if want := "AMBER_SCHEDULER=" + strings.Join(cl.SchedulerURLs, ","); len(cl.SchedulerURLs) != 3 || !strings.Contains(string(env), want) {
		t.Fatalf("env file:\n%s\nwant a line %s with three URLs", env, want)
	}
	var backends []string
	for _, p := range cl.Schedulers {
		if _, err := os.Stat(filepath.Join(p.Dir, "nats")); err != nil {
			t.Errorf("%s keeps no NATS folder in its data folder: %v", p.Name, err)
		}
		cp, err := api.NewClient(p.URL, api.WithToken(cl.Token)).ControlPlane(ctx)
		if err != nil || cp.MetaLeader == "" || cp.Peers != 2 || cp.Server != p.Name {
			t.Errorf("%s: control plane %+v %v: want server %s with a meta leader and 2 peers", p.Name, cp, err, p.Name)
		}
		backends = append(backends, strings.TrimPrefix(p.URL, "http://"))
	}

	// Deploy through one scheduler; every scheduler serves it.
	c := cl.Client()
	f, err := os.Open(hello)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	digest, err := c.UploadImage(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Deploy(ctx, api.FunctionSpec{Name: "hello", Image: digest, MemoryMB: api.DefaultMemory, Timeout: api.Duration(api.DefaultTimeout)}); err != nil {
		t.Fatal(err)
	}
	for _, u := range cl.SchedulerURLs {
		res, err := api.NewClient(u, api.WithToken(cl.Token)).Invoke(ctx, "hello", []byte(`{"name":"amber"}`))
		if err != nil || res.FunctionError != "" {
			t.Fatalf("invoke through %s: %+v %v", u, res, err)
		}
	}

	// Load through HAProxy, one scheduler SIGKILLed in the middle.
	lb := testenv.StartHAProxy(t, backends)
	type call struct {
		at, done time.Time
		reqID    string
		err      error
	}
	var mu sync.Mutex
	var calls []call
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			lc := api.NewClient(lb.URL(), api.WithToken(cl.Token))
			for {
				select {
				case <-stop:
					return
				default:
				}
				at := time.Now()
				res, err := lc.Invoke(ctx, "hello", []byte(`{"name":"amber"}`))
				cc := call{at: at, done: time.Now(), err: err}
				if err == nil {
					cc.reqID = res.RequestID
				}
				mu.Lock()
				calls = append(calls, cc)
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	time.Sleep(2 * time.Second)
	killed := time.Now()
	if err := syscall.Kill(cl.Schedulers[0].Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(6 * time.Second)
	close(stop)
	wg.Wait()

	// The agent heartbeats to a surviving scheduler.
	second := api.NewClient(strings.Join(cl.SchedulerURLs[1:], ","), api.WithToken(cl.Token))
	agents, err := second.Agents(ctx)
	if err != nil || len(agents) != 1 || agents[0].State != api.AgentReady || !agents[0].LastSeen.After(killed) {
		t.Fatalf("the agent after the kill: %+v %v", agents, err)
	}
	var ok, failed int
	var firstAfter time.Time
	ids := map[string]bool{}
	for _, cc := range calls {
		if cc.err != nil {
			failed++
			t.Logf("failed call at +%s: %v", cc.at.Sub(killed).Round(time.Millisecond), cc.err)
			continue
		}
		ok++
		ids[cc.reqID] = true
		if cc.at.After(killed) && (firstAfter.IsZero() || cc.done.Before(firstAfter)) {
			firstAfter = cc.done
		}
	}
	if firstAfter.IsZero() {
		t.Fatal("no invocation succeeded through HAProxy after the kill")
	}
	t.Logf("through HAProxy: %d answered, %d failed; SIGKILL of scheduler-1 → first answered invocation: %s",
		ok, failed, firstAfter.Sub(killed).Round(time.Millisecond))
	// Failed calls name the problem (HAProxy's 5xx or the scheduler's), and
	// are few: HAProxy retries what never reached a scheduler.
	if failed > ok/10 {
		t.Errorf("%d of %d calls failed during the fault", failed, ok+failed)
	}

	// Every answered invocation is in the ledger exactly once.
	var recs []api.LedgerRecord
	deadline := time.Now().Add(30 * time.Second)
	for {
		recs, err = second.Ledger(ctx, "hello", time.Time{}, 100000)
		found := 0
		for _, r := range recs {
			if ids[r.RequestID] {
				found++
			}
		}
		if err == nil && found >= len(ids) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ledger: %d of %d answered invocations after 30 s (%v)", found, len(ids), err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	seen := map[string]int{}
	for _, r := range recs {
		seen[r.RequestID]++
	}
	for id := range ids {
		if seen[id] != 1 {
			t.Errorf("answered invocation %s is in the ledger %d times", id, seen[id])
		}
	}
}

// TestControlPlaneFaults: six clients invoke (sync and async) through
// HAProxy in front of three schedulers while, one after another: a
// scheduler is SIGKILLed and brought back; the NATS meta leader's
// scheduler is SIGKILLed and brought back; all three are restarted one at a
// time; one is stopped (SIGSTOP) for 30 s and let go. A cron schedule
// fires all along. Afterwards every 202 event was delivered at least once
// or dead-lettered, every answered invocation is in the ledger exactly
// once, each cron tick fired once, and the functions and pools are all
// there. During the faults a call fails only with an HTTP error that names
// the problem.
func TestControlPlaneFaults(t *testing.T) {
	ctx := context.Background()
	cl, dir := threeSchedulers(t, "amber-cpf-", 2)
	helloTar := filepath.Join(dir, "hello.tar")
	if _, err := testenv.BuildExample(ctx, "shell", dir); err != nil { // stages dir/stage-shell
		t.Fatal(err)
	}
	var backends []string
	for _, p := range cl.Schedulers {
		backends = append(backends, strings.TrimPrefix(p.URL, "http://"))
	}
	lb := testenv.StartHAProxy(t, backends)
	c := cl.Client() // every scheduler's URL: the next one on a refused connection
	fns := deployLoadFns(t, c, "cp", helloTar, dir)
	two, keep := 2, api.Duration(time.Minute)
	if _, err := c.SetPool(ctx, fns.slow, api.PoolChange{MinWarm: &two, KeepAlive: &keep}); err != nil {
		t.Fatal(err)
	}
	sc, err := c.SetSchedule(ctx, fns.hello, "rate(1 minute)")
	if err != nil {
		t.Fatal(err)
	}
	since := time.Now()
	l := newLoad(lb.URL(), cl.Token, fns)
	l.setPhase("before")
	l.start(6)
	t.Cleanup(l.halt)
	waitUntil(t, 60*time.Second, "invocations answered before the faults", func() bool { return l.tally("before").ok >= 20 })

	byName := func(name string) *testenv.SchedulerProcess {
		for _, p := range cl.Schedulers {
			if p.Name == name {
				return p
			}
		}
		return nil
	}
	killAndBack := func(phase string, p *testenv.SchedulerProcess) {
		l.setPhase(phase)
		killed := time.Now()
		p.Kill()
		time.Sleep(5 * time.Second)
		if err := p.Restart(ctx); err != nil {
			t.Fatalf("%s: %v", phase, err)
		}
		t.Logf("%s: %s killed and back serving after %s", phase, p.Name, time.Since(killed).Round(time.Millisecond))
	}
	killAndBack("kill", cl.Schedulers[0])
	time.Sleep(3 * time.Second)

	cp, err := c.ControlPlane(ctx)
	if err != nil || cp.MetaLeader == "" || byName(cp.MetaLeader) == nil {
		t.Fatalf("meta leader: %+v %v", cp, err)
	}
	killAndBack("kill-meta-leader", byName(cp.MetaLeader))
	time.Sleep(3 * time.Second)

	l.setPhase("rolling-restart")
	for _, p := range cl.Schedulers {
		p.Stop(30 * time.Second)
		if err := p.Restart(ctx); err != nil {
			t.Fatalf("rolling restart: %v", err)
		}
		time.Sleep(2 * time.Second)
	}

	l.setPhase("cut-off")
	cut := cl.Schedulers[1]
	if err := cut.Pause(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Second)
	if err := cut.Resume(); err != nil {
		t.Fatal(err)
	}
	l.setPhase("after")
	time.Sleep(8 * time.Second)
	l.halt()
	l.report(t)
	l.checkAccounts(t, since, 90*time.Second)
	// A paused scheduler's connections hang rather than fail: HAProxy's
	// health check takes it out, calls already sent to it wait for it.
	checkPhases(t, l, true, "before", "after")

	// Nothing lost: functions, versions and pool settings.
	for _, fn := range fns.sync() {
		f, err := c.Function(ctx, fn)
		if err != nil || f.Version != 1 {
			t.Errorf("function %s after the faults: %+v %v", fn, f, err)
		}
	}
	if p, err := c.Pool(ctx, fns.slow); err != nil || p.MinWarm != 2 {
		t.Errorf("pool of %s after the faults: %+v %v", fns.slow, p, err)
	}
	// Each cron tick fired once: the schedule counted one fire per minute
	// since it was set, and the ledger holds a delivery for each.
	all, err := c.Schedules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got api.Schedule
	for _, s := range all {
		if s.Function == fns.hello {
			got = s
		}
	}
	want := int64(got.LastFiredAt.Sub(sc.CreatedAt) / time.Minute)
	recs, err := c.Ledger(ctx, fns.hello, since, 100000)
	if err != nil {
		t.Fatal(err)
	}
	var fired int64
	for _, r := range recs {
		if r.Source == "schedule" && !r.Error {
			fired++
		}
	}
	t.Logf("cron: %d fires counted for %d minutes, %d scheduled deliveries in the ledger", got.Fired, want, fired)
	if got.Fired != want || want < 1 || fired < got.Fired {
		t.Errorf("cron: %d fires counted, %d minutes elapsed to the last fire, %d scheduled deliveries; want one fire a minute, each delivered", got.Fired, want, fired)
	}
}
