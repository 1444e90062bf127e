package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// waitFrozen polls the agent's listing until its one instance is frozen
// (want) or not, for up to 10 s.
func waitFrozen(t *testing.T, a *Agent, want bool) api.Instance {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		list := a.Instances()
		if len(list) == 1 && list[0].Frozen == want {
			return list[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("instances %+v: want one with frozen=%v", list, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// procState is the state letter of /proc/PID/stat ("T": stopped).
func procState(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return rest[:1]
}

func (l *fakeLauncher) onlyPid(t *testing.T) int {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.live) != 1 {
		t.Fatalf("%d live instances, want 1", len(l.live))
	}
	for _, p := range l.live {
		return p.cmd.Process.Pid
	}
	return 0
}

func TestIdleInstanceFrozen(t *testing.T) {
	tests := []struct {
		name        string
		freezeAfter time.Duration
		wantFrozen  bool
	}{
		{"at once", 0, true},
		{"after a delay", 30 * time.Millisecond, true},
		{"off", -1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t, []*api.Function{testFn("fz", 1, 5*time.Second, nil)}, WithFreezeAfter(tt.freezeAfter))
			ctx := t.Context()
			for i := range 3 {
				r, err := e.a.Invoke(ctx, "fz", 1, "", []byte(`{"op":"echo"}`))
				if err != nil || r.FunctionError != "" {
					t.Fatalf("invoke %d: %v %+v", i, err, r)
				}
				if i > 0 && r.StartKind != api.StartWarm {
					t.Fatalf("invoke %d started %s, want warm (thawed)", i, r.StartKind)
				}
				if !tt.wantFrozen {
					continue
				}
				inst := waitFrozen(t, e.a, true)
				if inst.State != api.StateIdle {
					t.Errorf("frozen instance state %s, want idle", inst.State)
				}
				pid := e.l.onlyPid(t)
				deadline := time.Now().Add(5 * time.Second)
				for procState(t, pid) != "T" && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				if s := procState(t, pid); s != "T" {
					t.Errorf("amber-init (pid %d) is in state %s while frozen, want T", pid, s)
				}
			}
			freezes, thaws := e.l.freezeCounts()
			switch {
			case tt.wantFrozen && (freezes != 3 || thaws != 2):
				t.Errorf("freezes %d, thaws %d; want 3 and 2", freezes, thaws)
			case !tt.wantFrozen && freezes+thaws != 0:
				t.Errorf("freezes %d, thaws %d; want none", freezes, thaws)
			}
		})
	}
}

// TestFrozenInstanceReaped: keep-alive and shutdown remove a frozen
// instance and leave no process behind.
func TestFrozenInstanceReaped(t *testing.T) {
	tests := []struct {
		name   string
		remove func(e *testEnv)
	}{
		{"keep-alive", func(e *testEnv) { e.a.reap(time.Now().Add(time.Hour)) }},
		{"retire", func(e *testEnv) { e.a.RetireIdle("fz") }},
		{"shutdown", func(e *testEnv) {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			e.a.Shutdown(ctx)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t, []*api.Function{testFn("fz", 1, 5*time.Second, nil)}, WithFreezeAfter(0))
			if r, err := e.a.Invoke(t.Context(), "fz", 1, "", nil); err != nil || r.FunctionError != "" {
				t.Fatalf("invoke: %v %+v", err, r)
			}
			waitFrozen(t, e.a, true)
			tt.remove(e)
			e.l.waitLive(t, 0)
			if n := len(e.a.Instances()); n != 0 {
				t.Errorf("%d instances listed after removal", n)
			}
		})
	}
}

func TestFreezerCgroupFiles(t *testing.T) {
	tests := []struct {
		name       string
		v2         bool
		files      map[string]string // present before the freeze
		wantFrozen map[string]string // after the freeze
		wantThawed map[string]string // after the thaw
	}{
		{
			name:       "v1",
			files:      map[string]string{"freezer.state": "THAWED\n"},
			wantFrozen: map[string]string{"freezer.state": "FROZEN"},
			wantThawed: map[string]string{"freezer.state": "THAWED"},
		},
		{
			// cgroup.events is the kernel's to write; here it already says frozen.
			name:       "v2",
			v2:         true,
			files:      map[string]string{"cgroup.freeze": "0\n", "cgroup.events": "populated 1\nfrozen 1\n"},
			wantFrozen: map[string]string{"cgroup.freeze": "1"},
			wantThawed: map[string]string{"cgroup.freeze": "0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, body := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			f := freezerCgroup{dir: dir, v2: tt.v2}
			check := func(step string, want map[string]string) {
				t.Helper()
				for name, w := range want {
					b, err := os.ReadFile(filepath.Join(dir, name))
					if err != nil || strings.TrimSpace(string(b)) != w {
						t.Errorf("after %s: %s = %q (%v), want %q", step, name, b, err, w)
					}
				}
			}
			if err := f.freeze(); err != nil {
				t.Fatalf("freeze: %v", err)
			}
			check("freeze", tt.wantFrozen)
			if frozen, err := f.isFrozen(); err != nil || !frozen {
				t.Errorf("isFrozen after freeze = %v, %v", frozen, err)
			}
			if err := f.thaw(); err != nil {
				t.Fatalf("thaw: %v", err)
			}
			check("thaw", tt.wantThawed)
		})
	}
	if err := (freezerCgroup{}).freeze(); !errors.Is(err, ErrNoFreezer) {
		t.Errorf("freeze without a cgroup: %v, want ErrNoFreezer", err)
	}
}

func TestParseControllerMountpoint(t *testing.T) {
	const mountinfo = `30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
36 30 0:33 / /sys/fs/cgroup/free\040zer rw,relatime - cgroup cgroup rw,freezer
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	tests := []struct{ ctrl, want string }{
		{"cpuacct", "/sys/fs/cgroup/cpu,cpuacct"},
		{"freezer", "/sys/fs/cgroup/free zer"},
		{"memory", ""},
	}
	for _, tt := range tests {
		if got := parseControllerMountpoint([]byte(mountinfo), tt.ctrl); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.ctrl, got, tt.want)
		}
	}
	const procCgroup = "12:freezer:/amber/x\n4:cpu,cpuacct:/amber/x\n0::/\n"
	for _, ctrl := range []string{"freezer", "cpuacct"} {
		if got, ok := parseProcCgroupController([]byte(procCgroup), false, ctrl); !ok || got != "/amber/x" {
			t.Errorf("%s in /proc/PID/cgroup: %q, %v", ctrl, got, ok)
		}
	}
}
