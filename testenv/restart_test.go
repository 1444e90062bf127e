package testenv_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/errdefs"

	"github.com/amberfn/amber/agent"
	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/testenv"
)

// TestAgentSIGKILLAndRestart kills a real `amber agent` process with
// SIGKILL while an invocation runs on it, then starts the same agent again:
// the in-flight invocation is reported to its caller as a platform failure
// naming the request and the agent, the restarted agent removes what its
// predecessor left in containerd (container, task, snapshot, shim) and on
// the host (network namespace), serves again, and a SIGTERM later stops it
// cleanly with nothing left behind.
func TestAgentSIGKILLAndRestart(t *testing.T) {
	f := cluster(t)
	ctx := t.Context()
	c := f.cluster.Client()
	dir := t.TempDir()

	// 1. The amber binary and the static amber-init.
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	amberBin := filepath.Join(dir, "amber")
	build := exec.CommandContext(ctx, "go", "build", "-o", amberBin, "./cmd/amber")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/amber: %v\n%s", err, out)
	}
	initBin, err := testenv.BuildInit(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}

	const name = "crashy"
	state := filepath.Join(dir, name)
	netnsDir := filepath.Join(state, "netns")
	args := []string{"agent", "--name", name, "--listen", "127.0.0.1:0",
		"--scheduler", f.cluster.SchedulerURL, "--token", f.cluster.Token,
		"--containerd", f.cluster.Containerd.Address, "--init", initBin,
		"--state", state, "--capacity", "100000"}

	ctd, err := containerd.New(f.cluster.Containerd.Address, containerd.WithDefaultNamespace(agent.Namespace))
	if err != nil {
		t.Fatalf("containerd client: %v", err)
	}
	t.Cleanup(func() { ctd.Close() })
	// Whatever happens, leave the shared containerd as we found it: remove
	// anything still labelled with this agent (runs after the agent
	// processes are killed, before the temp dir goes).
	t.Cleanup(func() {
		sweep, err := agent.NewContainerd(f.cluster.Containerd.Address, name, initBin, state, nil,
			slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Logf("final sweep: %v", err)
			return
		}
		defer sweep.Close()
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if n, err := sweep.Cleanup(cctx); err != nil || n > 0 {
			t.Logf("final sweep removed %d leftover instances (err %v)", n, err)
		}
	})

	// 2. Start the agent and wait until the scheduler lists it as ready.
	first := startAgentProc(t, amberBin, args, filepath.Join(dir, "crashy-1.log"))
	firstURL := "http://" + first.waitServing(t)
	waitAgentReady(t, c, name, firstURL)

	// 3. A slow invocation in flight on crashy.
	stage := filepath.Join(dir, "stage-slow")
	if err := copyDir(filepath.Join(f.dir, "stage-shell"), stage); err != nil {
		t.Fatal(err)
	}
	handler := "handler() { /var/task/busybox sleep 20; echo '{\"slept\":20}'; }\n"
	if err := os.WriteFile(filepath.Join(stage, "handler.sh"), []byte(handler), 0o644); err != nil {
		t.Fatal(err)
	}
	slowTar := filepath.Join(dir, "slow.tar")
	if err := buildArchive(stage, slowTar); err != nil {
		t.Fatal(err)
	}
	deploy(t, c, "slow", slowTar, func(s *api.FunctionSpec) { s.Timeout = api.Duration(60 * time.Second) })

	inflight := make(chan invokeOutcome, 1)
	go func() {
		start := time.Now()
		res, err := c.Invoke(ctx, "slow", []byte(`{"in":"flight"}`))
		inflight <- invokeOutcome{res, err, time.Since(start)}
	}()

	inst := waitBusyInstance(t, c, name, "slow", inflight)
	t.Logf("in flight: instance %s of slow on %s", inst.ID, name)
	reqID := startedRequest(t, c, "slow", name, inst.ID)
	t.Logf("in flight: request %s", reqID)
	if _, err := os.Stat(filepath.Join(netnsDir, inst.ID)); err != nil {
		t.Fatalf("instance network namespace before the kill: %v", err)
	}

	// SIGKILL: no shutdown path runs.
	first.signal(syscall.SIGKILL)
	killedAt := time.Now()
	select {
	case <-first.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent process did not die within 10s of SIGKILL")
	}

	// 4. The in-flight invocation fails promptly, as a platform error that
	// names the request and the agent.
	var o invokeOutcome
	select {
	case o = <-inflight:
	case <-time.After(15 * time.Second): // the function sleeps 20 s: a hang guard below that
		t.Fatalf("the in-flight invocation has not returned %s after the agent was killed", time.Since(killedAt).Round(time.Millisecond))
	}
	if o.err == nil {
		t.Fatalf("the in-flight invocation returned a result instead of a platform error: %+v (payload %s)", o.res, o.res.Payload)
	}
	t.Logf("in-flight invocation failed %s after the kill: %q", time.Since(killedAt).Round(time.Millisecond), o.err.Error())
	if !errors.Is(o.err, api.ErrUnavailable) {
		t.Errorf("in-flight error %v does not wrap api.ErrUnavailable", o.err)
	}
	var se *api.StatusError
	if !errors.As(o.err, &se) || se.Status != 502 || se.Code != "BadGateway" {
		t.Errorf("in-flight error %#v: want a 502 BadGateway StatusError", o.err)
	}
	for _, want := range []string{"agent " + name, "request " + reqID} {
		if !strings.Contains(o.err.Error(), want) {
			t.Errorf("in-flight error %q does not name %q", o.err, want)
		}
	}

	// 5. The instance is still in containerd: container, task, snapshot,
	// shim, and its network namespace on the host.
	// (An instance the agent was checkpointing for a snapshot, "-snap-",
	// may be there too; the restarted agent removes it like the rest.)
	var ids []string
	atKill := labelledContainers(t, ctd, name)
	for _, id := range atKill {
		if !strings.Contains(id, "-snap-") {
			ids = append(ids, id)
		}
	}
	if len(ids) != 1 || ids[0] != inst.ID {
		t.Fatalf("containers labelled %s after the kill = %v, want [%s]", name, ids, inst.ID)
	}
	cont, err := ctd.LoadContainer(ctx, inst.ID)
	if err != nil {
		t.Fatal(err)
	}
	task, err := cont.Task(ctx, nil)
	if err != nil {
		t.Fatalf("task of %s after the kill: %v", inst.ID, err)
	}
	if st, err := task.Status(ctx); err == nil {
		t.Logf("after the kill: task %s is %s", inst.ID, st.Status)
	}
	if !hasTask(t, ctd, inst.ID) {
		t.Fatalf("task %s is not listed after the kill", inst.ID)
	}
	if _, err := ctd.SnapshotService("overlayfs").Stat(ctx, inst.ID); err != nil {
		t.Fatalf("snapshot %s after the kill: %v", inst.ID, err)
	}
	fifos := taskFIFOs(t, ctd, inst.ID)
	for _, p := range fifos {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("stdio FIFO of %s after the kill: %v", inst.ID, err)
		}
	}
	if _, err := os.Stat(filepath.Join(netnsDir, inst.ID)); err != nil {
		t.Fatalf("network namespace of %s after the kill: %v", inst.ID, err)
	}
	if procs := procsMentioning(inst.ID); len(procs) == 0 {
		t.Fatalf("no containerd-shim process for %s after the kill", inst.ID)
	} else {
		t.Logf("after the kill: %d process(es) name %s: %s", len(procs), inst.ID, procs[0])
	}

	// Restart the same agent.
	second := startAgentProc(t, amberBin, args, filepath.Join(dir, "crashy-2.log"))
	secondURL := "http://" + second.waitServing(t)
	waitAgentReady(t, c, name, secondURL)
	countRE := regexp.MustCompile(fmt.Sprintf(`.*removed leftover instances.*count"?[=:]%d\b.*`, len(atKill)))
	if m := countRE.FindString(second.logText()); m == "" {
		t.Errorf("the restarted agent did not report removing %d leftover instance(s); its log:\n%s", len(atKill), second.logText())
	} else {
		t.Logf("restarted agent: %s", m)
	}

	if ids := labelledContainers(t, ctd, name); len(ids) != 0 {
		t.Errorf("containers labelled %s after the restart: %v", name, ids)
	}
	if hasTask(t, ctd, inst.ID) {
		t.Errorf("task %s is still listed after the restart", inst.ID)
	}
	if _, err := ctd.SnapshotService("overlayfs").Stat(ctx, inst.ID); !errdefs.IsNotFound(err) {
		t.Errorf("snapshot %s after the restart: %v, want not found", inst.ID, err)
	}
	if left := dirEntries(t, netnsDir); len(left) != 0 {
		t.Errorf("network namespaces left in %s after the restart: %v", netnsDir, left)
	}
	for _, p := range append(fifos, filepath.Dir(fifos[0])) {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stdio FIFO %s of the killed agent's task after the restart: %v, want it removed", p, err)
		}
	}
	waitNoProcs(t, inst.ID)

	// The restarted agent serves.
	deploy(t, c, "quick", f.images["shell"])
	res, err := c.Invoke(ctx, "quick", []byte(`{"after":"restart"}`))
	if err != nil {
		t.Fatalf("invoke quick after the restart: %v", err)
	}
	if res.Agent != name {
		t.Fatalf("quick ran on %s, not %s: placement sends a cold start to the ready agent with the most free memory, "+
			"and %s advertises 100000 MB against 4096 MB for the fixture agents; the scheduler sees: %s",
			res.Agent, name, name, agentsSummary(ctx, c))
	}
	if res.FunctionError != "" || !strings.Contains(string(res.Payload), `"after":"restart"`) {
		t.Fatalf("quick on the restarted agent: %s %s", res.FunctionError, res.Payload)
	}
	quickID := res.Instance

	// 6. SIGTERM: a clean exit that removes the agent's instances.
	second.signal(syscall.SIGTERM)
	select {
	case <-second.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the restarted agent did not exit within 30s of SIGTERM; its log:\n%s", second.logText())
	}
	if second.err != nil {
		t.Errorf("the restarted agent exited with %v after SIGTERM, want status 0; its log:\n%s", second.err, second.logText())
	}
	if ids := labelledContainers(t, ctd, name); len(ids) != 0 {
		t.Errorf("containers labelled %s after SIGTERM: %v", name, ids)
	}
	if hasTask(t, ctd, quickID) {
		t.Errorf("task %s is still listed after SIGTERM", quickID)
	}
	if left := dirEntries(t, netnsDir); len(left) != 0 {
		t.Errorf("network namespaces left in %s after SIGTERM: %v", netnsDir, left)
	}
	waitNoProcs(t, quickID)
}

// invokeOutcome is what a c.Invoke in a goroutine came back with.
type invokeOutcome struct {
	res  *api.InvokeResult
	err  error
	took time.Duration
}

// agentProc is one `amber agent` subprocess in its own process group.
type agentProc struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // cmd.Wait's result, set before done closes
}

func startAgentProc(t *testing.T, bin string, args []string, logPath string) *agentProc {
	t.Helper()
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		t.Fatalf("start %s: %v", bin, err)
	}
	p := &agentProc{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("log of %s:\n%s", filepath.Base(logPath), p.logText())
		}
	})
	return p
}

// signal sends sig to the agent's process group, unless it has exited.
func (p *agentProc) signal(sig syscall.Signal) {
	select {
	case <-p.done:
	default:
		_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	}
}

func (p *agentProc) logText() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// The agent logs text on a terminal and JSON otherwise (a file here).
var servingRE = regexp.MustCompile(`(?:msg="agent serving".* addr=|"msg":"agent serving","addr":")([^"\s]+)`)

// waitServing returns the address the agent logged it serves on.
func (p *agentProc) waitServing(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := servingRE.FindStringSubmatch(p.logText()); m != nil {
			return m[1]
		}
		select {
		case <-p.done:
			t.Fatalf("the agent exited (%v) before serving; its log:\n%s", p.err, p.logText())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not log that it serves within 30s; its log:\n%s", p.logText())
		}
	}
}

// waitAgentReady waits until the scheduler lists the agent at url as ready.
func waitAgentReady(t *testing.T, c *api.Client, name, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		agents, err := c.Agents(t.Context())
		for _, a := range agents {
			if a.Name == name && a.URL == url && a.State == api.AgentReady {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s at %s not ready within 30s (last error %v); the scheduler sees: %s", name, url, err, agentsSummary(t.Context(), c))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitBusyInstance waits until an agent's heartbeat shows a busy instance
// of fn, and fails unless that agent is want.
func waitBusyInstance(t *testing.T, c *api.Client, want, fn string, early <-chan invokeOutcome) api.Instance {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		agents, err := c.Agents(t.Context())
		for _, a := range agents {
			for _, in := range a.Instances {
				if in.Function != fn || in.State != api.StateBusy {
					continue
				}
				if a.Name != want {
					t.Fatalf("%s was placed on %s, not %s: placement sends a cold start to the ready agent with the most free memory, "+
						"and %s advertises 100000 MB against 4096 MB for the fixture agents; the scheduler sees: %s",
						fn, a.Name, want, want, agentsSummary(t.Context(), c))
				}
				return in
			}
		}
		select {
		case o := <-early:
			t.Fatalf("the invocation of %s ended before it was seen busy: result %+v, error %v", fn, o.res, o.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no busy instance of %s within 30s (last error %v); the scheduler sees: %s", fn, err, agentsSummary(t.Context(), c))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startedRequest is the request id of the START line the agent logged for
// the instance.
func startedRequest(t *testing.T, c *api.Client, fn, agentName, instance string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs, err := c.Logs(t.Context(), fn, time.Time{}, 200)
		for _, r := range recs {
			if r.Agent == agentName && r.Instance == instance && strings.HasPrefix(r.Text, "START RequestId: ") && r.RequestID != "" {
				return r.RequestID
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no START line for instance %s of %s in the logs within 10s (last error %v): %+v", instance, fn, err, recs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func agentsSummary(ctx context.Context, c *api.Client) string {
	agents, err := c.Agents(ctx)
	if err != nil {
		return "(agents: " + err.Error() + ")"
	}
	var parts []string
	for _, a := range agents {
		var ins []string
		for _, in := range a.Instances {
			ins = append(ins, fmt.Sprintf("%s/%s", in.Function, in.State))
		}
		parts = append(parts, fmt.Sprintf("%s %s %s capacity %d MB reserved %d MB instances %v", a.Name, a.State, a.URL, a.CapacityMB, a.ReservedMB, ins))
	}
	return strings.Join(parts, "; ")
}

// labelledContainers lists the ids of the containers labelled with the agent.
func labelledContainers(t *testing.T, ctd *containerd.Client, agentName string) []string {
	t.Helper()
	conts, err := ctd.Containers(t.Context(), fmt.Sprintf("labels.%q==%s", agent.LabelAgent, agentName))
	if err != nil {
		t.Fatalf("list containers: %v", err)
	}
	ids := []string{}
	for _, c := range conts {
		ids = append(ids, c.ID())
	}
	return ids
}

// hasTask reports whether containerd lists a task with the id.
func hasTask(t *testing.T, ctd *containerd.Client, id string) bool {
	t.Helper()
	resp, err := ctd.TaskService().List(t.Context(), &tasksapi.ListTasksRequest{})
	if err != nil {
		t.Fatalf("list tasks: %v", err)
	}
	for _, p := range resp.Tasks {
		if p.ID == id {
			return true
		}
	}
	return false
}

// taskFIFOs are the stdio FIFO paths containerd holds for a task (the
// agent that created it made them under /run/containerd/fifo).
func taskFIFOs(t *testing.T, ctd *containerd.Client, id string) []string {
	t.Helper()
	resp, err := ctd.TaskService().Get(t.Context(), &tasksapi.GetRequest{ContainerID: id})
	if err != nil {
		t.Fatalf("get task %s: %v", id, err)
	}
	var out []string
	for _, p := range []string{resp.Process.Stdin, resp.Process.Stdout, resp.Process.Stderr} {
		if p != "" {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		t.Fatalf("task %s has no stdio FIFOs", id)
	}
	return out
}

func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// procsMentioning lists the processes whose command line holds s (a
// containerd-shim serving a container names its id with -id).
func procsMentioning(s string) []string {
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var out []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), s) {
			continue
		}
		pid := filepath.Base(filepath.Dir(p))
		out = append(out, pid+": "+strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " ")))
	}
	return out
}

// waitNoProcs waits until no process names the container id (a shim
// exits just after its task is deleted).
func waitNoProcs(t *testing.T, id string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		procs := procsMentioning(id)
		if len(procs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("processes still name container %s: %v", id, procs)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}
