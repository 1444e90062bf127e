package main

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/amberfn/amber/api"
)

// guardScript is the runtime: it reports who it and its parent (amber-init)
// are, then tries to read amber-init's environment, and exits.
const guardScript = `grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb):' /proc/self/status | tr -s '\t ' ' ' | sed 's/^/self /'
grep -E '^(Uid|CapEff|CapBnd):' /proc/$PPID/status | tr -s '\t ' ' ' | sed 's/^/init /'
if cat /proc/$PPID/environ >/dev/null 2>&1; then echo 'init environ readable'; else echo 'init environ denied'; fi`

// TestGuard starts amber-init -guard as the agent's spec does (a
// non-root user holding the guard capabilities, ambient included) outside
// any container, and checks what the runtime ends up with.
func TestGuard(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("TestGuard needs root under CI=true")
		}
		t.Skip("TestGuard needs root: it starts amber-init as another user")
	}
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} { // the sandbox user runs the binary
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "amber-init")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build amber-init: %v\n%s", err, out)
	}

	cmd := exec.Command(bin, "-guard", "-listen", "127.0.0.1:0", "--", "/bin/sh", "-c", guardScript)
	cmd.Dir = "/"
	cmd.Stderr = testLog{t}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: 993, Gid: 993, Groups: []uint32{993, 4242}},
		AmbientCaps: []uintptr{5, 6, 7, 8}, // CAP_KILL, CAP_SETGID, CAP_SETUID, CAP_SETPCAP
	}
	stdin, err := cmd.StdinPipe() // held open: EOF would stop amber-init
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var output strings.Builder
	var exit api.Frame
	r := bufio.NewReader(stdout)
	for {
		f, err := api.ReadFrame(r)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read frame: %v", err)
		}
		switch f.Kind {
		case api.FrameLog:
			output.Write(f.Body)
		case api.FrameExit:
			exit = f
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("amber-init: %v", err)
	}
	t.Logf("runtime output:\n%s", output.String())
	if exit.Kind != api.FrameExit || exit.Meta.ExitCode != 0 {
		t.Fatalf("exit frame %+v, want the runtime's exit 0", exit.Meta)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(output.String(), "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	none := "0000000000000000"
	for _, want := range []string{
		"self Uid: 993 993 993 993", "self Gid: 993 993 993 993", "self Groups: 993 4242",
		"self CapInh: " + none, "self CapPrm: " + none, "self CapEff: " + none,
		"self CapBnd: " + none, "self CapAmb: " + none,
		"init Uid: 0 0 0 0", "init CapEff: 0000000000000020", "init CapBnd: " + none,
		"init environ denied",
	} {
		if !lines[want] {
			t.Errorf("runtime output lacks %q", want)
		}
	}
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
