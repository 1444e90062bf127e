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

// TestSeveralSchedulers: `amber up --schedulers 3` brings up three
// scheduler processes joined as one control plane, with HAProxy (Debian's)
// in front. Clients invoke through HAProxy while one scheduler is SIGKILLed:
// the agent moves to another scheduler, invocations keep being answered,
// and every answered invocation is in the ledger exactly once.
func TestSeveralSchedulers(t *testing.T) {
	testenv.Require(t, testenv.CheckContainerd())
	if testing.Short() {
		t.Skip("several scheduler processes: skipped in -short")
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "amber-multi-")
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
	hello, err := testenv.BuildExample(ctx, "hello", dir)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := testenv.StartCluster(ctx, testenv.ClusterConfig{Dir: filepath.Join(dir, "cluster"), Agents: 1, InitBin: initBin,
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
