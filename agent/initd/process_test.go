package initd

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// runtimeModeEnv makes the test binary act as a fake Lambda runtime.
const runtimeModeEnv = "AMBER_INIT_TEST_RUNTIME"

func TestMain(m *testing.M) {
	if mode := os.Getenv(runtimeModeEnv); mode != "" {
		os.Exit(fakeRuntime(mode))
	}
	os.Exit(m.Run())
}

// fakeRuntime is a tiny Lambda runtime. Modes:
//
//	echo      answer every invocation with its payload ("exit" exits 7,
//	          "fail" posts an error)
//	initfail  print 25 lines, report an init error, exit 3
//	sleep     print "sleeping" and wait to be signalled
//	orphan    leave an orphan grandchild behind, then echo
//	spawner   start an exit-soon process, print its pid and exit
//	exit-soon sleep briefly and exit
func fakeRuntime(mode string) int {
	base := "http://" + os.Getenv("AWS_LAMBDA_RUNTIME_API") + apiPrefix
	cwd, _ := os.Getwd()
	if mode != "spawner" && mode != "exit-soon" {
		fmt.Fprintf(os.Stderr, "runtime %s starting pid=%d cwd=%s\n", mode, os.Getpid(), cwd)
	}
	switch mode {
	case "initfail":
		for i := 1; i <= 25; i++ {
			fmt.Printf("line %d\n", i)
		}
		// stdout and stderr are separate pipes, merged in the tail in the
		// order init reads them: give stdout a head start.
		time.Sleep(50 * time.Millisecond)
		fmt.Fprintln(os.Stderr, "fatal: cannot init")
		post(base+"init/error", `{"errorMessage":"cannot init","errorType":"Runtime.InitError"}`)
		return 3
	case "sleep":
		fmt.Println("sleeping")
		time.Sleep(time.Minute)
		return 0
	case "exit-soon":
		time.Sleep(200 * time.Millisecond)
		return 0
	case "spawner":
		c := exec.Command(os.Args[0])
		c.Env = append(os.Environ(), runtimeModeEnv+"=exit-soon")
		if err := c.Start(); err != nil {
			return 1
		}
		fmt.Println(c.Process.Pid)
		return 0
	case "orphan":
		c := exec.Command(os.Args[0])
		c.Env = append(os.Environ(), runtimeModeEnv+"=spawner")
		out, err := c.Output()
		if err != nil {
			fmt.Fprintln(os.Stderr, "spawner:", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "orphan=%s;\n", strings.TrimSpace(string(out)))
	}
	for {
		resp, err := http.Get(base + "invocation/next")
		if err != nil {
			fmt.Fprintln(os.Stderr, "next:", err)
			return 1
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		id := resp.Header.Get(hdrRequestID)
		fmt.Printf("handled %s\n", id)
		switch string(body) {
		case "exit":
			fmt.Println("bye")
			return 7
		case "fail":
			post(base+"invocation/"+id+"/error", `{"errorMessage":"asked to fail","errorType":"Test.Fail"}`)
		default:
			post(base+"invocation/"+id+"/response", string(body))
		}
	}
}

func post(url, body string) {
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		fmt.Fprintln(os.Stderr, "post:", err)
		return
	}
	resp.Body.Close()
}

// startRuntime runs a Server whose runtime is this test binary in mode.
func startRuntime(t *testing.T, mode string, opts ...Option) *harness {
	env := append(os.Environ(), runtimeModeEnv+"="+mode, "LAMBDA_TASK_ROOT="+t.TempDir())
	return startHarness(t, append([]Option{WithCommand(os.Args[0]), WithEnv(env)}, opts...)...)
}

// roundTrip sends one invocation to a runtime parked on /next and returns
// the answering frame, then waits for the runtime to park again.
func roundTrip(t *testing.T, h *harness, id, payload string) api.Frame {
	t.Helper()
	h.invoke(api.FrameMeta{RequestID: id, DeadlineMs: time.Now().Add(time.Minute).UnixMilli()}, payload)
	f := h.frame()
	if (f.Kind != api.FrameResponse && f.Kind != api.FrameError) || f.Meta.RequestID != id {
		t.Fatalf("answer to %s: frame %c %+v %q", id, f.Kind, f.Meta, f.Body)
	}
	h.expect(api.FrameReady)
	return f
}

func TestRuntimeEcho(t *testing.T) {
	h := startRuntime(t, "echo")
	h.expect(api.FrameReady)
	for i := range 3 {
		id := fmt.Sprintf("echo-%d", i)
		payload := fmt.Sprintf(`{"n":%d}`, i)
		if f := roundTrip(t, h, id, payload); f.Kind != api.FrameResponse || string(f.Body) != payload {
			t.Fatalf("frame %c %q, want response %q", f.Kind, f.Body, payload)
		}
	}
	f := roundTrip(t, h, "e-fail", "fail")
	if f.Kind != api.FrameError || f.Meta.ErrorType != "Test.Fail" {
		t.Fatalf("frame %c %+v, want error Test.Fail", f.Kind, f.Meta)
	}
	h.waitOutput("handled e-fail")
	if !strings.Contains(h.logs.String(), "runtime echo starting") {
		t.Errorf("stderr not forwarded; output:\n%s", h.logs.String())
	}
}

func TestRuntimeLogFrames(t *testing.T) {
	h := startRuntime(t, "echo")
	streams := map[string]bool{}
	for !streams["stdout"] || !streams["stderr"] {
		f := h.raw()
		if f.Kind == api.FrameReady && !streams["stdout"] {
			h.invoke(api.FrameMeta{RequestID: "x"}, "p") // makes it print "handled x"
		}
		if f.Kind == api.FrameLog {
			streams[f.Meta.Stream] = true
			if len(f.Body) == 0 || len(f.Body) > maxLogChunk {
				t.Fatalf("log frame of %d bytes", len(f.Body))
			}
		}
	}
}

func TestRuntimeExitsDuringInit(t *testing.T) {
	h := startRuntime(t, "initfail")
	ie := h.expect(api.FrameInitError)
	if ie.Meta.ErrorType != "Runtime.InitError" {
		t.Errorf("init error type %q", ie.Meta.ErrorType)
	}
	f := h.expect(api.FrameExit)
	if f.Meta.ExitCode != 3 || f.Meta.Reason != "exit status 3" {
		t.Errorf("exit meta = %+v, want code 3, reason \"exit status 3\"", f.Meta)
	}
	lines := strings.Split(string(f.Body), "\n")
	if len(lines) != tailLines {
		t.Errorf("exit body has %d lines, want %d:\n%s", len(lines), tailLines, f.Body)
	}
	body := "\n" + string(f.Body) + "\n"
	for _, want := range []string{"\nline 25\n", "\nfatal: cannot init\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("exit body lacks %q:\n%s", want, f.Body)
		}
	}
	if strings.Contains(body, "\nline 1\n") {
		t.Errorf("exit body has more than the last lines:\n%s", f.Body)
	}
	err := waitRun(t, h)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 3 || ExitCode(err) != 3 || !errors.Is(err, ErrRuntimeExited) {
		t.Errorf("Run = %v, want ExitError code 3", err)
	}
}

func TestRuntimeExitsDuringInvocation(t *testing.T) {
	h := startRuntime(t, "echo")
	h.expect(api.FrameReady)
	h.invoke(api.FrameMeta{RequestID: "bye"}, "exit")
	f := h.expect(api.FrameExit)
	if f.Meta.ExitCode != 7 || f.Meta.Reason != "exit status 7" || !strings.HasSuffix(string(f.Body), "bye") {
		t.Errorf("exit frame = %+v %q", f.Meta, f.Body)
	}
}

func TestRuntimeSignalForwarded(t *testing.T) {
	h := startRuntime(t, "sleep")
	h.waitOutput("sleeping")
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	f := h.expect(api.FrameExit)
	if f.Meta.Reason != "signal: terminated" || f.Meta.ExitCode != 128+int(syscall.SIGTERM) {
		t.Errorf("exit meta = %+v, want signal: terminated", f.Meta)
	}
}

func TestStdinEOFKillsRuntime(t *testing.T) {
	h := startRuntime(t, "echo")
	h.expect(api.FrameReady)
	h.waitOutput("starting pid=")
	pid := pidAfter(t, h.logs.String(), "pid=")
	h.toInit.Close()
	if err := waitRun(t, h); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("runtime pid %d still exists after Run (kill 0: %v)", pid, err)
	}
}

func TestBootstrap(t *testing.T) {
	t.Run("found in LAMBDA_TASK_ROOT, run there", func(t *testing.T) {
		root := t.TempDir()
		if err := os.Symlink(os.Args[0], filepath.Join(root, "bootstrap")); err != nil {
			t.Fatal(err)
		}
		env := append(os.Environ(), runtimeModeEnv+"=echo", "LAMBDA_TASK_ROOT="+root)
		h := startHarness(t, WithEnv(env), withFallbacks())
		h.expect(api.FrameReady)
		h.waitOutput("cwd=" + root + "\n")
		roundTrip(t, h, "b1", "hi")
	})
	tests := []struct {
		name     string
		setup    func(root string)
		reason   func(root, fallback string) string
		code     int
		sentinel error
	}{
		{
			name:  "missing",
			setup: func(string) {},
			reason: func(root, fb string) string {
				return fmt.Sprintf("bootstrap not found: tried %s/bootstrap, %s", root, fb)
			},
			code: 127, sentinel: ErrBootstrapNotFound,
		},
		{
			name: "not executable",
			setup: func(root string) {
				_ = os.WriteFile(filepath.Join(root, "bootstrap"), []byte("#!/bin/sh\n"), 0o644)
			},
			reason: func(root, _ string) string { return "fork/exec " + root + "/bootstrap: permission denied" },
			code:   126, sentinel: syscall.EACCES,
		},
		{
			name: "not a program",
			setup: func(root string) {
				_ = os.WriteFile(filepath.Join(root, "bootstrap"), []byte("garbage"), 0o755)
			},
			reason: func(root, _ string) string { return "fork/exec " + root + "/bootstrap: exec format error" },
			code:   126, sentinel: syscall.ENOEXEC,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			fallback := filepath.Join(t.TempDir(), "bootstrap")
			tt.setup(root)
			h := startHarness(t, WithEnv([]string{"LAMBDA_TASK_ROOT=" + root}), withFallbacks(fallback))
			f := h.expect(api.FrameExit)
			if want := tt.reason(root, fallback); f.Meta.Reason != want || f.Meta.ExitCode != tt.code {
				t.Errorf("exit meta = %+v, want reason %q code %d", f.Meta, want, tt.code)
			}
			err := waitRun(t, h)
			if !errors.Is(err, ErrStart) || !errors.Is(err, tt.sentinel) || ExitCode(err) != tt.code {
				t.Errorf("Run = %v (exit code %d), want %v, code %d", err, ExitCode(err), tt.sentinel, tt.code)
			}
		})
	}
}

func TestReapsOrphans(t *testing.T) {
	// Become a subreaper so the orphan is re-parented to this process, as
	// it would be to amber-init as PID 1.
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, 36 /* PR_SET_CHILD_SUBREAPER */, 1, 0); e != 0 {
		t.Skipf("PR_SET_CHILD_SUBREAPER: %v", e)
	}
	t.Cleanup(func() { syscall.RawSyscall(syscall.SYS_PRCTL, 36, 0, 0) })
	h := startRuntime(t, "orphan", func(s *Server) { s.reapAll = true })
	h.waitOutput(";")
	pid := pidAfter(t, h.logs.String(), "orphan=")
	deadline := time.Now().Add(waitFor)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, os.ErrNotExist) {
			break // reaped
		}
		if time.Now().After(deadline) {
			stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			t.Fatalf("orphan %d not reaped: %s", pid, stat)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The runtime itself is still supervised.
	h.expect(api.FrameReady)
	roundTrip(t, h, "after-orphan", "ok")
}

// withFallbacks replaces the fixed bootstrap locations for a test.
func withFallbacks(paths ...string) Option {
	return func(s *Server) { s.fallbacks = paths }
}

// pidAfter parses the number following key in s.
func pidAfter(t *testing.T, s, key string) int {
	t.Helper()
	_, rest, ok := strings.Cut(s, key)
	if !ok {
		t.Fatalf("no %q in output:\n%s", key, s)
	}
	end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(rest)
	}
	pid, err := strconv.Atoi(rest[:end])
	if err != nil {
		t.Fatalf("pid after %q: %v", key, err)
	}
	return pid
}
