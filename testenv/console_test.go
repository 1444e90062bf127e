package testenv_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/amberfn/amber/testenv"
)

// tmux runs a tmux command on the test's own server socket.
func tmux(t *testing.T, sock string, args ...string) string {
	t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", sock}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestConsoleEndToEnd runs `amber console` under tmux against the real
// cluster, presses `+` on a function and checks through the API that its
// min_warm changed; then it measures the console's CPU while it watches.
func TestConsoleEndToEnd(t *testing.T) {
	f := cluster(t)
	if _, err := exec.LookPath("tmux"); err != nil {
		testenv.Require(t, fmt.Errorf("%w: tmux not installed (apt-get install tmux)", testenv.ErrPrerequisite))
	}
	c := f.cluster.Client()
	sleeper(t, f, "console-fn")
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "amber")
	build := exec.Command("go", "build", "-o", bin, "./cmd/amber")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	sock := filepath.Join(dir, "tmux.sock")
	cmd := fmt.Sprintf("AMBER_SCHEDULER=%s AMBER_TOKEN=%s NO_COLOR=1 %s console", f.cluster.SchedulerURL, f.cluster.Token, bin)
	tmux(t, sock, "new-session", "-d", "-s", "console", "-x", "120", "-y", "40", cmd)
	t.Cleanup(func() { _ = exec.Command("tmux", "-S", sock, "kill-server").Run() })
	screen := func() string { return tmux(t, sock, "capture-pane", "-p", "-t", "console") }
	waitFor(t, "the console to show console-fn", func() bool { return strings.Contains(screen(), "console-fn") })

	// Functions view, filter down to our function, one more warm instance.
	tmux(t, sock, "send-keys", "-t", "console", "2")
	tmux(t, sock, "send-keys", "-t", "console", "/")
	tmux(t, sock, "send-keys", "-t", "console", "-l", "console-fn")
	tmux(t, sock, "send-keys", "-t", "console", "Enter")
	tmux(t, sock, "send-keys", "-t", "console", "+")
	waitFor(t, "min_warm 1 through the API", func() bool {
		p, err := c.Pool(t.Context(), "console-fn")
		return err == nil && p.MinWarm == 1
	})
	waitFor(t, "the confirmed value on screen", func() bool { return strings.Contains(screen(), "min_warm 1") })

	// The console's own CPU while it watches a live cluster.
	pid := strings.TrimSpace(tmux(t, sock, "display-message", "-p", "-t", "console", "#{pane_pid}"))
	ticks := func() int64 {
		// The pane runs sh -c; the console is its child (or the pane itself after exec).
		out, _ := exec.Command("pgrep", "-P", pid).Output()
		target := pid
		if kids := strings.Fields(string(out)); len(kids) > 0 {
			target = kids[0]
		}
		b, err := os.ReadFile("/proc/" + target + "/stat")
		if err != nil {
			return 0
		}
		fields := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+2:])
		u, _ := strconv.ParseInt(fields[11], 10, 64)
		s, _ := strconv.ParseInt(fields[12], 10, 64)
		return u + s
	}
	before, t0 := ticks(), time.Now()
	time.Sleep(5 * time.Second)
	used := float64(ticks()-before) / 100 // clock ticks at 100 Hz
	t.Logf("console CPU while watching: %.1f%% of a core over %s", 100*used/time.Since(t0).Seconds(), time.Since(t0).Round(time.Second))

	if _, err := c.SetPool(t.Context(), "console-fn", poolOff()); err != nil {
		t.Fatal(err)
	}
	tmux(t, sock, "send-keys", "-t", "console", "q")
}
