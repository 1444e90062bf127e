package agent

import (
	"context"
	"os"
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
