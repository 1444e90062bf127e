package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// The unit tests run the real amber-init as a plain host process, with
// this test binary re-executed as the function runtime ("fake runtime"
// mode, switched on by fakeRuntimeEnv). No containerd, no root.

const (
	// fakeRuntimeEnv switches TestMain into the fake runtime.
	fakeRuntimeEnv = "AMBER_AGENT_TEST_FAKE_RUNTIME"
	// fakeInitEnv (set through the function spec's Env) picks how init goes:
	// "" (normal), "exit" (print to stderr, exit 3), "error" (post
	// /runtime/init/error, exit 1), "hang" (never call /next).
	fakeInitEnv = "FAKE_INIT"
)

// initBin is the amber-init built by TestMain.
var initBin string

func TestMain(m *testing.M) {
	if os.Getenv(fakeRuntimeEnv) == "1" {
		os.Exit(fakeRuntime())
	}
	dir, err := os.MkdirTemp("", "amber-agent-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	initBin, err = buildInit(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildInit builds cmd/amber-init as a static binary into dir.
func buildInit(dir string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside a module")
	}
	bin := filepath.Join(dir, "amber-init")
	build := exec.Command("go", "build", "-o", bin, "./cmd/amber-init")
	build.Dir = filepath.Dir(gomod)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build amber-init: %v\n%s", err, out)
	}
	return bin, nil
}

// fakeEvent is the payload the fake runtime understands. Anything else
// (or an empty op) is echoed back.
type fakeEvent struct {
	Op   string `json:"op"`   // "echo" | "error" | "sleep" | "exit" | "barrier" | "print"
	Ms   int    `json:"ms"`   // sleep: how long
	Code int    `json:"code"` // exit: the exit code
	Dir  string `json:"dir"`  // barrier: where arrivals are marked
	N    int    `json:"n"`    // barrier: how many arrivals to wait for
	Text string `json:"text"` // print: a line for stdout, then an echo
}

// fakeRuntime is a Lambda custom runtime speaking the Runtime API at
// $AWS_LAMBDA_RUNTIME_API; it is the test binary's main in that mode.
func fakeRuntime() int {
	base := "http://" + os.Getenv("AWS_LAMBDA_RUNTIME_API") + "/2018-06-01/runtime/"
	hc := &http.Client{}
	post := func(path, errType string, body []byte) error {
		req, err := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(body))
		if err != nil {
			return err
		}
		if errType != "" {
			req.Header.Set("Lambda-Runtime-Function-Error-Type", errType)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("POST %s: %s", path, resp.Status)
		}
		return nil
	}
	switch os.Getenv(fakeInitEnv) {
	case "exit":
		fmt.Fprintln(os.Stderr, "fake: loading config")
		fmt.Fprintln(os.Stderr, "fake: config is broken")
		return 3
	case "error":
		fe := api.FunctionError{ErrorType: "Fake.InitBroken", ErrorMessage: "cannot load handler"}
		if err := post("init/error", fe.ErrorType, mustJSON(fe)); err != nil {
			fmt.Fprintln(os.Stderr, "fake:", err)
		}
		return 1
	case "hang":
		fmt.Fprintln(os.Stderr, "fake: thinking about it")
		time.Sleep(time.Hour)
		return 1
	}
	for {
		resp, err := hc.Get(base + "invocation/next")
		if err != nil {
			fmt.Fprintln(os.Stderr, "fake: next:", err)
			return 1
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			fmt.Fprintln(os.Stderr, "fake: next:", resp.Status)
			return 1
		}
		id := resp.Header.Get("Lambda-Runtime-Aws-Request-Id")
		var ev fakeEvent
		_ = json.Unmarshal(body, &ev)
		switch ev.Op {
		case "error":
			fe := api.FunctionError{ErrorType: "FakeError", ErrorMessage: "boom"}
			err = post("invocation/"+id+"/error", fe.ErrorType, mustJSON(fe))
		case "sleep":
			time.Sleep(time.Duration(ev.Ms) * time.Millisecond)
			err = post("invocation/"+id+"/response", "", []byte(`"slept"`))
		case "exit":
			fmt.Fprintln(os.Stderr, "fake: crashing now")
			return ev.Code
		case "print":
			fmt.Println(ev.Text)
			err = post("invocation/"+id+"/response", "", body)
		case "barrier":
			n := waitBarrier(ev.Dir, id, ev.N)
			err = post("invocation/"+id+"/response", "", []byte(strconv.Itoa(n)))
		default:
			err = post("invocation/"+id+"/response", "", body)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "fake:", err)
			return 1
		}
	}
}

// waitBarrier marks an arrival in dir and waits (at most 10 s) until n
// arrivals are marked; it returns how many it saw.
func waitBarrier(dir, id string, n int) int {
	_ = os.WriteFile(filepath.Join(dir, id), nil, 0o600)
	deadline := time.Now().Add(10 * time.Second)
	for {
		entries, _ := os.ReadDir(dir)
		if len(entries) >= n || time.Now().After(deadline) {
			return len(entries)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fakeLauncher starts amber-init as a host process in its own process
// group, with the test binary as the runtime, and tracks what is alive.
type fakeLauncher struct {
	t       testing.TB
	initBin string

	mu       sync.Mutex
	live     map[string]*fakeProc
	groups   []int // every process group ever started
	launched int
	freezes  int
	thaws    int
}

func newFakeLauncher(t testing.TB) *fakeLauncher {
	l := &fakeLauncher{t: t, initBin: initBin, live: map[string]*fakeProc{}}
	t.Cleanup(l.killAll)
	return l
}

type fakeProc struct {
	l      *fakeLauncher
	id     string
	cmd    *exec.Cmd
	exited chan struct{}
	once   sync.Once
}

func (l *fakeLauncher) Launch(ctx context.Context, spec launchSpec) (process, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(l.initBin, "-listen", "127.0.0.1:0", "--", self)
	cmd.Env = append(os.Environ(), lambdaEnv(spec.Fn)...)
	cmd.Env = append(cmd.Env, fakeRuntimeEnv+"=1", "LAMBDA_TASK_ROOT="+os.TempDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Real pipes for stdin and stdout, copied by our own goroutines, so
	// that Wait depends on the process only (exec's copier for a non-file
	// stdin would wait for the agent to close it).
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		closeFiles(inR, inW)
		return nil, err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, spec.Stderr
	if err := cmd.Start(); err != nil {
		closeFiles(inR, inW, outR, outW)
		return nil, err
	}
	closeFiles(inR, outW)
	p := &fakeProc{l: l, id: spec.ID, cmd: cmd, exited: make(chan struct{})}
	l.mu.Lock()
	l.live[spec.ID] = p
	l.groups = append(l.groups, cmd.Process.Pid)
	l.launched++
	l.mu.Unlock()
	go func() {
		_, _ = io.Copy(inW, spec.Stdin)
		inW.Close()
	}()
	drained := make(chan struct{})
	go func() {
		_, _ = io.Copy(spec.Stdout, outR)
		outR.Close()
		close(drained)
	}()
	go func() {
		_ = cmd.Wait()
		<-drained // every frame amber-init wrote has reached the agent
		l.mu.Lock()
		delete(l.live, spec.ID)
		l.mu.Unlock()
		close(p.exited)
	}()
	return p, nil
}

func closeFiles(fs ...*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

func (p *fakeProc) Exited() <-chan struct{} { return p.exited }

// Kill kills amber-init and the runtime (the whole process group).
func (p *fakeProc) Kill(context.Context) error {
	err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// Freeze stops the whole process group (the fake's cgroup freezer).
func (p *fakeProc) Freeze(context.Context) error {
	p.l.mu.Lock()
	p.l.freezes++
	p.l.mu.Unlock()
	return syscall.Kill(-p.cmd.Process.Pid, syscall.SIGSTOP)
}

// Thaw lets the process group run again.
func (p *fakeProc) Thaw(context.Context) error {
	p.l.mu.Lock()
	p.l.thaws++
	p.l.mu.Unlock()
	return syscall.Kill(-p.cmd.Process.Pid, syscall.SIGCONT)
}

// freezeCounts is how many freezes and thaws the launcher's processes saw.
func (l *fakeLauncher) freezeCounts() (freezes, thaws int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.freezes, l.thaws
}

// Close kills the process group and waits for amber-init to be reaped.
func (p *fakeProc) Close(ctx context.Context) error {
	err := p.Kill(ctx)
	select {
	case <-p.exited:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(10 * time.Second):
		return fmt.Errorf("instance %s: amber-init not reaped after SIGKILL", p.id)
	}
	return err
}

// liveCount is the number of amber-init processes not yet reaped.
func (l *fakeLauncher) liveCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.live)
}

func (l *fakeLauncher) launches() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.launched
}

// liveIDs lists the instances whose amber-init still runs.
func (l *fakeLauncher) liveIDs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	ids := make([]string, 0, len(l.live))
	for id := range l.live {
		ids = append(ids, id)
	}
	return ids
}

// waitLive waits until exactly want amber-init processes run and no
// process (runtime included) is left in the groups of those that ended.
func (l *fakeLauncher) waitLive(t testing.TB, want int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		n, stray := l.liveCount(), l.strays()
		if n == want && len(stray) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("want %d live instance processes and no strays; have %d live (%v), strays %v", want, n, l.liveIDs(), stray)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// strays lists processes (not zombies) left in the process groups of
// instances whose amber-init has ended.
func (l *fakeLauncher) strays() []string {
	l.mu.Lock()
	alive := map[int]bool{}
	for _, p := range l.live {
		alive[p.cmd.Process.Pid] = true
	}
	var dead []int
	for _, g := range l.groups {
		if !alive[g] {
			dead = append(dead, g)
		}
	}
	l.mu.Unlock()
	if len(dead) == 0 {
		return nil
	}
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		pgrp, _ := strconv.Atoi(f[2])
		for _, g := range dead {
			if pgrp == g {
				out = append(out, fmt.Sprintf("pid %d (group %d, state %s)", pid, g, f[0]))
			}
		}
	}
	return out
}

// killAll kills every process group still running (test cleanup).
func (l *fakeLauncher) killAll() {
	l.mu.Lock()
	list := make([]*fakeProc, 0, len(l.live))
	for _, p := range l.live {
		list = append(list, p)
	}
	groups := append([]int(nil), l.groups...)
	l.mu.Unlock()
	for _, g := range groups {
		_ = syscall.Kill(-g, syscall.SIGKILL)
	}
	for _, p := range list {
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			l.t.Errorf("instance %s: amber-init not reaped at cleanup", p.id)
		}
	}
}

// fakeRegistry serves function specs from a map and records heartbeats.
type fakeRegistry struct {
	mu      sync.Mutex
	fns     map[fnKey]*api.Function
	hbs     []api.Heartbeat
	targets []api.PoolTarget
	hbCh    chan struct{} // signalled on each heartbeat
}

func newFakeRegistry(fns ...*api.Function) *fakeRegistry {
	r := &fakeRegistry{fns: map[fnKey]*api.Function{}, hbCh: make(chan struct{}, 1)}
	for _, fn := range fns {
		r.fns[fnKey{fn.Name, fn.Version}] = fn
	}
	return r
}

func (r *fakeRegistry) FetchImage(context.Context, string) (io.ReadCloser, error) {
	return nil, errors.New("fake registry: FetchImage is not used by the fake launcher")
}

func (r *fakeRegistry) FunctionVersion(_ context.Context, name string, version int) (*api.Function, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn, ok := r.fns[fnKey{name, version}]
	if !ok {
		return nil, fmt.Errorf("function %q version %d: %w", name, version, api.ErrNotFound)
	}
	return fn, nil
}

func (r *fakeRegistry) Heartbeat(_ context.Context, hb api.Heartbeat) (*api.HeartbeatReply, error) {
	r.mu.Lock()
	r.hbs = append(r.hbs, hb)
	reply := &api.HeartbeatReply{Targets: append([]api.PoolTarget{}, r.targets...)}
	r.mu.Unlock()
	select {
	case r.hbCh <- struct{}{}:
	default:
	}
	return reply, nil
}

// setTargets makes later heartbeats answer with these pool targets.
func (r *fakeRegistry) setTargets(ts ...api.PoolTarget) {
	r.mu.Lock()
	r.targets = ts
	r.mu.Unlock()
}

func (r *fakeRegistry) heartbeats() []api.Heartbeat {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]api.Heartbeat(nil), r.hbs...)
}

// testFn is a function spec for the fake runtime.
func testFn(name string, version int, timeout time.Duration, env map[string]string) *api.Function {
	return &api.Function{
		FunctionSpec: api.FunctionSpec{
			Name: name, Image: "sha256:" + strings.Repeat("0", 64),
			MemoryMB: 128, Timeout: api.Duration(timeout), Env: env,
		},
		Version: version,
	}
}

// testEnv is an agent wired to a fake registry and a fake launcher.
type testEnv struct {
	a   *Agent
	reg *fakeRegistry
	l   *fakeLauncher
}

// newTestEnv returns an agent serving fns; it is shut down and every
// process killed when the test ends.
func newTestEnv(t testing.TB, fns []*api.Function, opts ...Option) *testEnv {
	t.Helper()
	reg := newFakeRegistry(fns...)
	l := newFakeLauncher(t)
	log := slog.New(slog.NewTextHandler(tbWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if _, ok := t.(*testing.B); ok {
		log = slog.New(slog.DiscardHandler)
	}
	all := append([]Option{WithName("test-agent"), withLauncher(l), WithLogger(log)}, opts...)
	a, err := New(reg, all...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	return &testEnv{a: a, reg: reg, l: l}
}

// tbWriter sends log lines to the test log until the test ends.
type tbWriter struct{ t testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	defer func() { _ = recover() }() // a log line after the test ended
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
