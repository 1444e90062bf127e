package testenv_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/testenv"
)

// TestSeveralSchedulers: `amber up --schedulers 2` brings up two
// scheduler processes joined as one control plane; every scheduler knows
// the agent, DIR/env lists both, and with the first one killed the agent
// heartbeats to the second and the client carries on through it.
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
		Schedulers: 2, SchedulerBin: amber})
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
	if want := "AMBER_SCHEDULER=" + strings.Join(cl.SchedulerURLs, ","); len(cl.SchedulerURLs) != 2 || !strings.Contains(string(env), want) {
		t.Fatalf("env file:\n%s\nwant a line %s with two URLs", env, want)
	}
	for _, p := range cl.Schedulers {
		if _, err := os.Stat(filepath.Join(p.Dir, "nats")); err != nil {
			t.Errorf("%s keeps no NATS folder in its data folder: %v", p.Name, err)
		}
		cp, err := api.NewClient(p.URL, api.WithToken(cl.Token)).ControlPlane(ctx)
		if err != nil || cp.MetaLeader == "" || cp.Peers != 1 || cp.Server != p.Name {
			t.Errorf("%s: control plane %+v %v: want server %s with a meta leader and 1 peer", p.Name, cp, err, p.Name)
		}
	}

	// Kill the first scheduler as an operator would.
	killed := time.Now()
	if err := syscall.Kill(cl.Schedulers[0].Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	second := api.NewClient(cl.SchedulerURLs[1], api.WithToken(cl.Token))
	// The agent's next heartbeats go to the second scheduler.
	deadline := time.Now().Add(30 * time.Second)
	for {
		agents, err := second.Agents(ctx)
		if err == nil && len(agents) == 1 && agents[0].State == api.AgentReady && agents[0].LastSeen.After(killed) {
			t.Logf("SIGKILL of scheduler-1 → the agent's first heartbeat on scheduler-2: %s", time.Since(killed).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not heartbeat to the second scheduler: %+v %v", agents, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A client with both URLs deploys and invokes through the second.
	c := cl.Client()
	f, err := os.Open(hello)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	digest, err := c.UploadImage(ctx, f)
	if err != nil {
		t.Fatalf("upload with the first scheduler down: %v", err)
	}
	if _, err := c.Deploy(ctx, api.FunctionSpec{Name: "hello", Image: digest, MemoryMB: api.DefaultMemory, Timeout: api.Duration(api.DefaultTimeout)}); err != nil {
		t.Fatalf("deploy with the first scheduler down: %v", err)
	}
	res, err := c.Invoke(ctx, "hello", []byte(`{"name":"amber"}`))
	if err != nil || res.FunctionError != "" {
		t.Fatalf("invoke with the first scheduler down: %+v %v", res, err)
	}
	// Warm invocations through a client whose first URL is refused: what
	// the failover costs per call once it sticks to the second.
	start := time.Now()
	const n = 50
	for range n {
		if _, err := c.Invoke(ctx, "hello", []byte(`{"name":"amber"}`)); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("warm invoke through the surviving scheduler: %s each (%d calls)", (time.Since(start) / n).Round(time.Microsecond), n)
}
