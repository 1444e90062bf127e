package testenv_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"

	"github.com/amberfn/amber/agent"
	"github.com/amberfn/amber/api"
)

// spinHandler starts a CPU spinner that outlives the invocation when the
// event says "spin", and stays busy for a second when it says "busy".
const spinHandler = `handler() {
	case "$(cat "$1")" in
	*spin*) ( while :; do :; done ) </dev/null >/dev/null 2>&1 & ;;
	*busy*) /var/task/busybox sleep 1 ;;
	esac
	printf '{"ok":true}'
}`

// inProcessAgent is an agent of its own on the cluster's containerd, not
// registered with the scheduler: tests invoke it directly and can drop it
// without a shutdown, as a killed agent would be.
func inProcessAgent(t testing.TB, f *fixture, name string, opts ...agent.Option) (*agent.Agent, *agent.Containerd, string) {
	t.Helper()
	state := filepath.Join(f.dir, "agents-"+name)
	var w io.Writer = io.Discard
	if os.Getenv("FREEZE_DEBUG") != "" {
		w = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	client := f.cluster.Client()
	ctr, err := agent.NewContainerd(f.cluster.Containerd.Address, name, filepath.Join(f.dir, "amber-init"), state, client, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctr.Close() })
	all := append([]agent.Option{agent.WithName(name), agent.WithLauncher(ctr), agent.WithLogger(log), agent.WithSnapshots(false)}, opts...)
	a, err := agent.New(client, all...)
	if err != nil {
		t.Fatal(err)
	}
	return a, ctr, state
}

// waitFrozen waits until the agent lists the instance as frozen and its
// freezer cgroup says so.
func waitFrozen(t testing.TB, a *agent.Agent, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		listed := false
		for _, in := range a.Instances() {
			if in.ID == id && in.Frozen && in.State == api.StateIdle {
				listed = true
			}
		}
		frozen, err := agent.InstanceFrozen(agent.Namespace, id)
		if listed && frozen {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %s not frozen after 10s (listed frozen: %v; cgroup frozen: %v, %v)", id, listed, frozen, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cpuDuring is the CPU time the instance's cgroup used while fn ran.
func cpuDuring(t testing.TB, id string, fn func()) time.Duration {
	t.Helper()
	before, err := agent.InstanceCPU(agent.Namespace, id)
	if err != nil {
		t.Fatal(err)
	}
	fn()
	after, err := agent.InstanceCPU(agent.Namespace, id)
	if err != nil {
		t.Fatal(err)
	}
	return after - before
}

// instanceGone checks that nothing of an instance is left: container,
// task, its cgroups and its network namespace.
func instanceGone(t testing.TB, f *fixture, state, id string) {
	t.Helper()
	ctd, err := containerd.New(f.cluster.Containerd.Address, containerd.WithDefaultNamespace(agent.Namespace))
	if err != nil {
		t.Fatal(err)
	}
	defer ctd.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var left []string
		if _, err := ctd.LoadContainer(t.Context(), id); !errdefs.IsNotFound(err) {
			left = append(left, "container")
		}
		for _, ctrl := range []string{"freezer", "memory", "cpuacct", "pids"} {
			if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", ctrl, agent.Namespace, id)); err == nil {
				left = append(left, ctrl+" cgroup")
			}
		}
		if _, err := os.Stat(filepath.Join(state, "netns", id)); err == nil {
			left = append(left, "network namespace")
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %s: left behind: %v", id, left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestIdleInstanceFrozen: a handler that leaves a spinner running and
// returns. While the instance is idle it is frozen and its cgroup uses no
// CPU; the next invocation thaws it (the spinner runs again while it is
// busy) and it is frozen again afterwards.
func TestIdleInstanceFrozen(t *testing.T) {
	f := cluster(t)
	c := f.cluster.Client()
	ctx := t.Context()
	fn := deploy(t, c, "freeze-spin", shellImage(t, f.dir, "freeze-spin", spinHandler))
	ag := f.cluster.Agents[0]

	res, err := agentInvoke(ctx, f, ag.Name(), fn.Name, fn.Version, `{"spin":true}`)
	if err != nil || res.FunctionError != "" {
		t.Fatalf("spin invoke: %v %+v", err, res)
	}
	id := res.Instance
	t.Logf("instance %s billed %d ms for starting the spinner", id, res.BilledMs)
	for round := 1; round <= 2; round++ {
		waitFrozen(t, ag, id)
		idle := cpuDuring(t, id, func() { time.Sleep(1500 * time.Millisecond) })
		t.Logf("round %d: CPU used in 1.5 s idle (frozen): %s", round, idle)
		// A thawed spinner would use about 1.5 s (one core).
		if idle > 100*time.Millisecond {
			t.Errorf("round %d: a frozen instance used %s of CPU in 1.5 s", round, idle)
		}
		var res *api.InvokeResult
		busy := cpuDuring(t, id, func() {
			res, err = agentInvoke(ctx, f, ag.Name(), fn.Name, fn.Version, `{"busy":true}`)
		})
		if err != nil || res.FunctionError != "" {
			t.Fatalf("round %d: busy invoke: %v %+v", round, err, res)
		}
		if res.Instance != id || res.StartKind != api.StartWarm {
			t.Fatalf("round %d: busy invoke ran on %s (%s), want the frozen instance %s thawed (warm)", round, res.Instance, res.StartKind, id)
		}
		t.Logf("round %d: CPU used during a 1 s busy invocation (spinner thawed): %s", round, busy)
		// The spinner runs again while the instance is busy (it shares
		// two cores with everything else here, at a low CPU weight: ask for
		// a twentieth of one, several times what the handler itself uses).
		if busy < 50*time.Millisecond {
			t.Errorf("round %d: the spinner did not run while the instance was busy (CPU %s in 1 s)", round, busy)
		}
	}
}

// TestFrozenInstanceRemoved: a frozen instance is removed without leaving
// anything behind by keep-alive reaping, and by the sweep a restarted
// agent makes of what its killed predecessor left (a paused task).
func TestFrozenInstanceRemoved(t *testing.T) {
	f := cluster(t)
	c := f.cluster.Client()
	ctx := t.Context()
	fn := deploy(t, c, "freeze-reap", shellImage(t, f.dir, "freeze-reap", spinHandler))

	t.Run("keep-alive", func(t *testing.T) {
		ag := f.cluster.Agents[1]
		keep := api.Duration(2 * time.Second)
		if _, err := c.SetPool(ctx, fn.Name, api.PoolChange{KeepAlive: &keep}); err != nil {
			t.Fatal(err)
		}
		// The agent takes the keep-alive from its next heartbeat's reply.
		time.Sleep(1500 * time.Millisecond)
		res, err := agentInvoke(ctx, f, ag.Name(), fn.Name, fn.Version, `{"spin":true}`)
		if err != nil || res.FunctionError != "" {
			t.Fatalf("invoke: %v %+v", err, res)
		}
		waitFrozen(t, ag, res.Instance)
		instanceGone(t, f, filepath.Join(f.cluster.Dir, "agents", ag.Name()), res.Instance)
		for _, in := range ag.Instances() {
			if in.ID == res.Instance {
				t.Errorf("reaped instance still listed: %+v", in)
			}
		}
	})

	t.Run("agent restart", func(t *testing.T) {
		const name = "freeze-adopt"
		a, _, state := inProcessAgent(t, f, name, agent.WithFreezeAfter(0))
		res, err := a.Invoke(ctx, fn.Name, fn.Version, "", []byte(`{"spin":true}`))
		if err != nil || res.FunctionError != "" {
			t.Fatalf("invoke: %v %+v", err, res)
		}
		waitFrozen(t, a, res.Instance)
		// The agent is gone without a shutdown; its successor sweeps.
		_, next, _ := inProcessAgent(t, f, name)
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		n, err := next.Cleanup(cctx)
		if err != nil || n != 1 {
			t.Fatalf("sweep removed %d instances (err %v), want the 1 frozen one", n, err)
		}
		instanceGone(t, f, state, res.Instance)
		sctx, scancel := context.WithTimeout(ctx, 15*time.Second)
		defer scancel()
		a.Shutdown(sctx) // what the dropped agent still holds: already gone
	})
}
