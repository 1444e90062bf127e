package testenv_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/amberfn/amber/agent"
	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/api/ociarchive"
	"github.com/amberfn/amber/testenv"
)

// Isolation tests: deploy variants of the shell example whose handler
// looks at its own instance from the inside, and check what an operator
// relies on: an unprivileged user, no capabilities, seccomp, a read-only
// root, loopback-only networking, and pids and memory limits that hold.

// isoDeploy deploys the shell example with handler.sh replaced by handler
// (a shell function `handler` that gets the event file as $1 and prints
// the response).
func isoDeploy(t *testing.T, f *fixture, name, handler string, mutate ...func(*api.FunctionSpec)) *api.Function {
	t.Helper()
	stage := filepath.Join(f.dir, "stage-"+name)
	os.RemoveAll(stage)
	if err := copyDir(filepath.Join(f.dir, "stage-shell"), stage); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stage, "handler.sh"), []byte(handler), 0o644); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(f.dir, name+".tar")
	if err := buildArchive(stage, archive); err != nil {
		t.Fatal(err)
	}
	return deploy(t, f.cluster.Client(), name, archive, mutate...)
}

// isoInvoke invokes name and fails the test on a platform error or if the
// call does not come back within limit.
func isoInvoke(t *testing.T, f *fixture, name string, limit time.Duration) *api.InvokeResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	start := time.Now()
	res, err := f.cluster.Client().Invoke(ctx, name, []byte(`{}`))
	if err != nil {
		t.Fatalf("invoke %s: %v (after %s)", name, err, time.Since(start).Round(time.Millisecond))
	}
	t.Logf("%s: %s start on %s/%s in %s, function error %q, payload:\n%s", name, res.StartKind, res.Agent,
		res.Instance, time.Since(start).Round(time.Millisecond), res.FunctionError, res.Payload)
	return res
}

// keyValues parses the handler's KEY=VALUE lines.
func keyValues(payload []byte) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(string(payload), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			out[k] = v
		}
	}
	return out
}

const identityHandler = `handler() {
	bb=/var/task/busybox
	echo "uid=$($bb id -u)"
	echo "gid=$($bb id -g)"
	echo "init_uid=$($bb grep '^Uid:' /proc/1/status | $bb tr -s '\t ' ' ' | $bb cut -d' ' -f2)"
	if (echo x >/probe) 2>/dev/null; then echo root_write=ok; else echo root_write=denied; fi
	if (echo x >/var/task/probe) 2>/dev/null; then echo task_write=ok; else echo task_write=denied; fi
	if echo x >/tmp/probe && [ "$($bb cat /tmp/probe)" = x ]; then echo tmp_write=ok; else echo tmp_write=failed; fi
	$bb grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status | $bb tr -d '\t ' | $bb tr ':' '='
	echo "mounts=$($bb cut -d' ' -f2 /proc/self/mounts | $bb tr '\n' ',')"
	if $bb mount -t tmpfs none /tmp 2>/dev/null; then echo mount=ok; else echo mount=denied; fi
}
`

func TestInstanceRunsUnprivileged(t *testing.T) {
	f := cluster(t)
	isoDeploy(t, f, "iso-identity", identityHandler)
	res := isoInvoke(t, f, "iso-identity", 20*time.Second)
	if res.FunctionError != "" {
		t.Fatalf("function error: %s", res.Payload)
	}
	kv := keyValues(res.Payload)
	want := map[string]string{
		"uid": "993", "gid": "993", "init_uid": "0", // amber-init is root, out of the function's reach
		"root_write": "denied", "task_write": "denied", "tmp_write": "ok",
		"CapInh": "0000000000000000", "CapPrm": "0000000000000000", "CapEff": "0000000000000000",
		"CapBnd": "0000000000000000", "CapAmb": "0000000000000000",
		"NoNewPrivs": "1", "Seccomp": "2",
		"mount": "denied",
	}
	for k, v := range want {
		if kv[k] != v {
			t.Errorf("%s = %q, want %q", k, kv[k], v)
		}
	}
	mounts := strings.Split(strings.TrimSuffix(kv["mounts"], ","), ",")
	have := map[string]bool{}
	for _, m := range mounts {
		have[m] = true
	}
	for _, m := range []string{"/", "/proc", "/dev", "/tmp", "/.amber-init"} {
		if !have[m] {
			t.Errorf("mount %s missing (mounts: %v)", m, mounts)
		}
	}
	for _, m := range []string{"/sys", "/run", "/dev/shm", "/dev/mqueue", "/dev/pts"} {
		if have[m] {
			t.Errorf("mount %s present, want it dropped (mounts: %v)", m, mounts)
		}
	}

	// The warm instance's memory cgroup is where containerd puts it, and
	// it has seen no OOM kill.
	u, err := agent.InstanceMemory(agent.Namespace, res.Instance)
	if err != nil {
		t.Fatalf("InstanceMemory(%s): %v", res.Instance, err)
	}
	t.Logf("memory cgroup of %s: %+v", res.Instance, u)
	if u.PeakBytes == 0 || u.PeakBytes > 128<<20 || u.OOMKills != 0 {
		t.Errorf("memory of a healthy instance = %+v, want 0 < peak <= 128 MiB and no OOM kill", u)
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory/amber/" + res.Instance); err != nil && !isUnified() {
		t.Errorf("cgroup v1 memory folder of %s: %v", res.Instance, err)
	}
}

func isUnified() bool {
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	return err == nil
}

const networkHandler = `handler() {
	bb=/var/task/busybox
	echo "links=$($bb tail -n +3 /proc/net/dev | $bb cut -d: -f1 | $bb tr -d ' ' | $bb tr '\n' ',')"
	echo "ip_links=$($bb ip -o link | $bb cut -d: -f2 | $bb tr -d ' ' | $bb tr '\n' ',')"
	for target in "$SCHEDULER_ADDR" "$OUTSIDE_ADDR"; do
		[ -n "$target" ] || continue
		if $bb timeout 3 $bb nc "${target%:*}" "${target##*:}" </dev/null >/dev/null 2>&1; then
			echo "reach_$target=connected"
		else
			echo "reach_$target=failed"
		fi
		if $bb timeout 3 $bb wget -q -O /dev/null "http://$target/healthz" 2>/dev/null; then
			echo "http_$target=ok"
		else
			echo "http_$target=failed"
		fi
	done
}
`

func TestInstanceNetworkIsLoopbackOnly(t *testing.T) {
	f := cluster(t)
	u, err := url.Parse(f.cluster.SchedulerURL)
	if err != nil {
		t.Fatal(err)
	}
	// The scheduler listens on the host's loopback; also try the host's
	// outside address, with a listener there, in case loopback alone
	// proves nothing.
	env := map[string]string{"SCHEDULER_ADDR": u.Host}
	if ip := outsideIPv4(); ip != "" {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err == nil {
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			env["OUTSIDE_ADDR"] = ln.Addr().String()
			// The host itself can reach both: the failures below are the
			// instance's isolation, not dead listeners.
			if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err != nil {
				t.Fatalf("host cannot reach its own listener %s: %v", ln.Addr(), err)
			} else {
				c.Close()
			}
		}
	}
	isoDeploy(t, f, "iso-network", networkHandler, func(s *api.FunctionSpec) { s.Env = env })
	res := isoInvoke(t, f, "iso-network", 30*time.Second)
	if res.FunctionError != "" {
		t.Fatalf("function error: %s", res.Payload)
	}
	kv := keyValues(res.Payload)
	if kv["links"] != "lo," {
		t.Errorf("interfaces in /proc/net/dev = %q, want only lo", kv["links"])
	}
	if kv["ip_links"] != "lo," {
		t.Errorf("ip link = %q, want only lo", kv["ip_links"])
	}
	for _, target := range env {
		if got := kv["reach_"+target]; got != "failed" {
			t.Errorf("TCP connect from the instance to %s: %q, want failed", target, got)
		}
		if got := kv["http_"+target]; got != "failed" {
			t.Errorf("HTTP from the instance to %s: %q, want failed", target, got)
		}
	}
}

// outsideIPv4 is one of the host's non-loopback IPv4 addresses, or "".
func outsideIPv4() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	return ""
}

const forkHandler = `handler() {
	bb=/var/task/busybox
	started=0
	i=0
	while [ $i -lt 400 ]; do
		$bb sleep 30 2>/dev/null &
		[ $? -eq 0 ] && started=$((started+1))
		i=$((i+1))
	done
	echo "started=$started"
	echo "pids=$($bb ls -d /proc/[0-9]* 2>/dev/null | $bb wc -l)"
}
`

func TestInstancePidsLimitHolds(t *testing.T) {
	f := cluster(t)
	isoDeploy(t, f, "iso-forks", forkHandler, func(s *api.FunctionSpec) { s.Timeout = api.Duration(3 * time.Second) })
	start := time.Now()
	res := isoInvoke(t, f, "iso-forks", 30*time.Second)
	took := time.Since(start)
	if res.FunctionError == "" {
		// It may get its answer out; then fewer than 400 can be running.
		kv := keyValues(res.Payload)
		if kv["pids"] == "" {
			t.Errorf("no pid count in %q", res.Payload)
		}
	}
	if took > 20*time.Second {
		t.Errorf("the fork loop took %s to come back", took)
	}
	// If the instance is still there, its pids cgroup shows the limit held.
	pids := filepath.Join("/sys/fs/cgroup/pids", agent.Namespace, res.Instance)
	if isUnified() {
		pids = filepath.Join("/sys/fs/cgroup", agent.Namespace, res.Instance)
	}
	if b, err := os.ReadFile(filepath.Join(pids, "pids.max")); err == nil {
		cur, _ := os.ReadFile(filepath.Join(pids, "pids.current"))
		ev, _ := os.ReadFile(filepath.Join(pids, "pids.events"))
		t.Logf("pids cgroup of %s: max %s current %s events %s", res.Instance,
			strings.TrimSpace(string(b)), strings.TrimSpace(string(cur)), strings.TrimSpace(string(ev)))
		if strings.TrimSpace(string(b)) != "256" {
			t.Errorf("pids.max = %q, want 256", b)
		}
		if !strings.HasPrefix(string(ev), "max ") || strings.TrimSpace(string(ev)) == "max 0" {
			t.Errorf("pids.events = %q, want forks refused at the limit", ev)
		}
	} else {
		t.Logf("instance %s is gone: %v", res.Instance, err)
	}
	// The agent that ran it keeps serving another function.
	var ag *agent.Agent
	for _, a := range f.cluster.Agents {
		if a.Name() == res.Agent {
			ag = a
		}
	}
	if ag == nil {
		t.Fatalf("no agent named %q", res.Agent)
	}
	fn := deploy(t, f.cluster.Client(), "iso-after-forks", f.images["shell"])
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	next, err := ag.Invoke(ctx, fn.Name, fn.Version, "", []byte(`{"after":"forks"}`))
	if err != nil {
		t.Fatalf("%s after the fork loop: %v", res.Agent, err)
	}
	if next.FunctionError != "" || !strings.Contains(string(next.Payload), `{"after":"forks"}`) {
		t.Errorf("%s after the fork loop: %q %q", res.Agent, next.FunctionError, next.Payload)
	}
}

func TestInstanceMemoryLimitHolds(t *testing.T) {
	f := cluster(t)
	tests := []struct {
		name    string
		handler string
	}{
		// tmpfs pages are charged to the instance's memory cgroup.
		{"tmpfs", `handler() { /var/task/busybox dd if=/dev/zero of=/tmp/fill bs=1M count=300 2>&1; echo "wrote=$(/var/task/busybox du -m /tmp/fill)"; }
`},
		// A shell string doubled until it no longer fits: anonymous memory.
		{"heap", `handler() { x=0123456789abcdef; while :; do x="$x$x"; done; }
`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := "iso-mem-" + tc.name
			isoDeploy(t, f, name, tc.handler, func(s *api.FunctionSpec) {
				s.MemoryMB = 128
				s.Timeout = api.Duration(20 * time.Second)
			})
			start := time.Now()
			res := isoInvoke(t, f, name, 60*time.Second)
			took := time.Since(start)
			if res.FunctionError == "" {
				t.Fatalf("allocating past 128 MB succeeded: %q", res.Payload)
			}
			var fe api.FunctionError
			_ = json.Unmarshal(res.Payload, &fe)
			if fe.ErrorType != "Runtime.OutOfMemory" || !strings.Contains(fe.ErrorMessage, "out of memory") || took > 15*time.Second {
				t.Errorf("out of memory took %s and ended as %+v: want a prompt Runtime.OutOfMemory error", took, fe)
			}
			if res.MaxMemoryMB < 100 || res.MaxMemoryMB > 128 {
				t.Errorf("max memory used = %d MB, want near the 128 MB limit", res.MaxMemoryMB)
			}
			// If the instance is still there (the OOM killer took the
			// handler, not the runtime, or the removal has not happened
			// yet), its cgroup says what happened.
			if u, err := agent.InstanceMemory(agent.Namespace, res.Instance); err == nil {
				t.Logf("memory cgroup of instance %s: %+v", res.Instance, u)
				if u.OOMKills == 0 || u.PeakBytes < 100<<20 || u.PeakBytes > 128<<20 {
					t.Errorf("memory of %s after the OOM = %+v, want an OOM kill and a peak near 128 MiB", res.Instance, u)
				}
			} else {
				t.Logf("instance %s is gone: %v", res.Instance, err)
			}
		})
	}
}

var (
	attackOnce sync.Once
	attackPath string
	attackErr  error
)

// attackImage builds testdata/initattack, a function that tries to take
// over amber-init from inside its instance, with user as the image's
// User ("" for none).
func attackImage(t *testing.T, f *fixture, user string) string {
	t.Helper()
	attackOnce.Do(func() {
		attackPath, attackErr = testenv.BuildGoFunction(t.Context(), "./testenv/testdata/initattack", "initattack", f.dir)
	})
	if attackErr != nil {
		t.Fatal(attackErr)
	}
	if user == "" {
		return attackPath
	}
	out := filepath.Join(f.dir, "initattack-user-"+strings.ReplaceAll(user, ":", "-")+".tar")
	w, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := ociarchive.Build(filepath.Join(f.dir, "stage-initattack"), w, ociarchive.WithUser(user)); err != nil {
		t.Fatal(err)
	}
	return out
}

// attackAttempts are what initattack tries against PID 1 that amber-init
// being non-dumpable refuses, even to a function of its own user.
var attackAttempts = []string{"ptrace_attach", "ptrace_seize", "mem_read", "vm_read", "pidfd_getfd",
	"environ_read", "fd0_read", "fd0_write", "fd1_write"}

// otherUserAttempts are refused because amber-init runs as another user
// than the function: listing /proc/1/fd (it shows fd numbers only; their
// targets stay out of reach) and kill(1, …) with 0, SIGTERM and SIGKILL.
var otherUserAttempts = []string{"fd_list", "kill_0", "kill_term", "kill_kill"}

// initAttack runs initattack on one instance through invoke, then invokes
// it again: every attempt must have been refused with EPERM or EACCES,
// the function must hold no capabilities and amber-init CAP_KILL alone,
// and the same instance must answer the second call, warm. The signal
// attempts (and otherUserAttempts) are made only when otherUser is set:
// amber-init and the function then run as different users. It returns
// the attack's result and what initattack reported.
func initAttack(t *testing.T, invoke func(payload string) (*api.InvokeResult, error), otherUser bool) (*api.InvokeResult, map[string]string) {
	t.Helper()
	res, err := invoke(fmt.Sprintf(`{"signals":%t}`, otherUser))
	if err != nil {
		t.Fatal(err)
	}
	if res.FunctionError != "" {
		t.Fatalf("function error: %s", res.Payload)
	}
	var got map[string]string
	if err := json.Unmarshal(res.Payload, &got); err != nil {
		t.Fatalf("result %q: %v", res.Payload, err)
	}
	t.Logf("%s start on %s: %v", res.StartKind, res.Instance, got)
	attempts := attackAttempts
	if otherUser {
		attempts = append(append([]string{}, attackAttempts...), otherUserAttempts...)
	}
	for _, a := range attempts {
		switch got[a] {
		case syscall.EPERM.Error(), syscall.EACCES.Error():
		default:
			t.Errorf("%s on amber-init from the function: %q, want EPERM or EACCES", a, got[a])
		}
	}
	for _, set := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		if got[set] != "0000000000000000" {
			t.Errorf("the function's %s = %q, want none", set, got[set])
		}
	}
	if want := fmt.Sprintf("%016x", 1<<5); got["init_cap"] != want || got["init_uid"] != "0" {
		t.Errorf("amber-init: uid %q, effective capabilities %q; want uid 0 and %s (CAP_KILL)", got["init_uid"], got["init_cap"], want)
	}
	again, err := invoke(`{}`)
	if err != nil {
		t.Fatalf("invoke after the attack: %v", err)
	}
	if again.FunctionError != "" || again.StartKind != api.StartWarm || again.Instance != res.Instance {
		t.Errorf("after the attack on %s: %s start on %s, function error %q: want the same instance, warm",
			res.Instance, again.StartKind, again.Instance, again.FunctionError)
	}
	return res, got
}

// TestFunctionCannotTakeOverInit: function code can neither trace
// amber-init, read its memory or environment, reach its frame stream
// through /proc/1/fd, nor (as another user) signal it, and the instance
// keeps serving. An image that says root runs its function as uid 0 like
// amber-init: being non-dumpable still keeps it out of reach.
func TestFunctionCannotTakeOverInit(t *testing.T) {
	f := cluster(t)
	tests := []struct {
		name    string
		user    string // the image's User
		wantUID string
	}{
		{"sandbox-user", "", "993"},
		{"image-user", "1000:1000", "1000"},
		{"image-root", "0", "0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := "iso-initattack-" + tc.name
			deploy(t, f.cluster.Client(), name, attackImage(t, f, tc.user))
			invoke := func(payload string) (*api.InvokeResult, error) {
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				defer cancel()
				return f.cluster.Client().Invoke(ctx, name, []byte(payload))
			}
			_, got := initAttack(t, invoke, tc.wantUID != "0")
			if got["uid"] != tc.wantUID {
				t.Errorf("the function runs as uid %q, want %s", got["uid"], tc.wantUID)
			}
		})
	}
}
