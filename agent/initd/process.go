package initd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/amberfn/amber/api"
)

// maxLogChunk bounds the body of one FrameLog.
const maxLogChunk = 64 << 10

// defaultBootstrapFallbacks are where a Lambda custom runtime's bootstrap
// is looked for after $LAMBDA_TASK_ROOT/bootstrap.
func defaultBootstrapFallbacks() []string {
	return []string{"/var/runtime/bootstrap", "/var/task/bootstrap"}
}

// defaultTaskRoot is LAMBDA_TASK_ROOT when the environment does not set it.
const defaultTaskRoot = "/var/task"

// exitStatus is how the runtime process ended.
type exitStatus struct {
	code   int    // exit code, or 128+signal
	reason string // "exit status 2", "signal: killed"
}

func statusOf(ws syscall.WaitStatus) exitStatus {
	switch {
	case ws.Exited():
		return exitStatus{code: ws.ExitStatus(), reason: fmt.Sprintf("exit status %d", ws.ExitStatus())}
	case ws.Signaled():
		r := "signal: " + ws.Signal().String()
		if ws.CoreDump() {
			r += " (core dumped)"
		}
		return exitStatus{code: 128 + int(ws.Signal()), reason: r}
	default:
		return exitStatus{code: 1, reason: fmt.Sprintf("unexpected wait status %#x", uint32(ws))}
	}
}

// process is the supervised runtime: its output is forwarded as FrameLog
// frames and kept in a tail, and its exit status is collected by our own
// wait4 loop (never os/exec's Wait, so reaping orphans as PID 1 cannot
// steal it).
type process struct {
	proc    *os.Process
	log     *slog.Logger
	out     FrameSender
	tail    *tail
	output  sync.WaitGroup // output forwarders
	done    chan struct{}  // closed when the process has been reaped
	status  exitStatus     // valid after done
	sigchld chan os.Signal
}

// startSpec says what to run and how.
type startSpec struct {
	argv    []string
	env     []string
	dir     string
	reapAll bool                // wait4(-1): reap every child (PID 1)
	cred    *syscall.Credential // who the runtime runs as; nil: as amber-init
}

// startProcess starts the runtime with its stdout and stderr on pipes.
func startProcess(spec startSpec, out FrameSender, log *slog.Logger) (*process, error) {
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		closeAll(stdoutR, stdoutW)
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	stdin, _ := os.Open(os.DevNull) // nil (closed fd 0) if /dev/null is missing
	p := &process{
		log: log, out: out,
		tail:    newTail(tailBytes),
		done:    make(chan struct{}),
		sigchld: make(chan os.Signal, 1),
	}
	// Listen for SIGCHLD before the child exists so no exit is missed.
	signal.Notify(p.sigchld, syscall.SIGCHLD)
	p.proc, err = os.StartProcess(spec.argv[0], spec.argv, &os.ProcAttr{
		Dir:   spec.dir,
		Env:   spec.env,
		Files: []*os.File{stdin, stdoutW, stderrW},
		Sys:   &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: spec.cred},
	})
	closeAll(stdin, stdoutW, stderrW)
	if err != nil {
		signal.Stop(p.sigchld)
		closeAll(stdoutR, stderrR)
		return nil, err
	}
	log.Info("runtime started", "pid", p.proc.Pid, "argv", spec.argv, "dir", spec.dir)
	p.output.Add(2)
	go p.forward(stdoutR, "stdout")
	go p.forward(stderrR, "stderr")
	go p.reap(spec.reapAll)
	return p, nil
}

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		if f != nil {
			_ = f.Close()
		}
	}
}

// forward sends everything read from r as FrameLog chunks.
func (p *process) forward(r *os.File, stream string) {
	defer p.output.Done()
	defer r.Close()
	buf := make([]byte, maxLogChunk)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			chunk := bytes.Clone(buf[:n])
			_, _ = p.tail.Write(chunk)
			_ = p.out.Write(api.Frame{
				Kind: api.FrameLog,
				Meta: api.FrameMeta{Stream: stream},
				Body: chunk,
			})
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, fs.ErrClosed) {
				p.log.Warn("read runtime output", "stream", stream, "err", err)
			}
			return
		}
	}
}

// reap waits for the runtime on every SIGCHLD. With all set it reaps any
// child (orphans re-parented to PID 1 too) and records the runtime's status
// when its pid comes up.
func (p *process) reap(all bool) {
	defer signal.Stop(p.sigchld)
	for {
		if st, ok := p.poll(all); ok {
			p.status = st
			close(p.done)
			return
		}
		<-p.sigchld
	}
}

// poll collects exited children without blocking; ok reports the runtime's end.
func (p *process) poll(all bool) (exitStatus, bool) {
	target := p.proc.Pid
	if all {
		target = -1
	}
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(target, &ws, syscall.WNOHANG, nil)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil:
			// ECHILD: nobody left to wait for, so the runtime is gone too.
			return exitStatus{code: 1, reason: "runtime vanished: " + err.Error()}, true
		case pid == 0:
			return exitStatus{}, false
		case pid == p.proc.Pid:
			return statusOf(ws), true
		default:
			p.log.Debug("reaped orphan", "pid", pid, "status", statusOf(ws).reason)
		}
	}
}

// Done is closed once the runtime has exited and been reaped.
func (p *process) Done() <-chan struct{} { return p.done }

// Signal forwards sig to the runtime.
func (p *process) Signal(sig os.Signal) {
	if err := p.proc.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.log.Warn("signal runtime", "signal", sig, "err", err)
	}
}

// Kill kills the runtime and waits up to wait for it to be reaped.
func (p *process) Kill(wait time.Duration) {
	p.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(wait):
		p.log.Warn("runtime not reaped after SIGKILL", "pid", p.proc.Pid)
	}
	_ = p.proc.Release()
}

// ExitFrame waits up to grace for the output to drain (a grandchild may
// hold the pipes open) and returns the FrameExit describing the runtime's end.
func (p *process) ExitFrame(grace time.Duration) api.Frame {
	drained := make(chan struct{})
	go func() { p.output.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(grace):
		p.log.Warn("runtime output still open after exit")
	}
	_ = p.proc.Release()
	return api.Frame{
		Kind: api.FrameExit,
		Meta: api.FrameMeta{ExitCode: p.status.code, Reason: p.status.reason},
		Body: p.tail.Lines(tailLines),
	}
}

// resolveCommand returns the argv to run: the explicit command (looked up
// in PATH when it has no slash), else the first executable bootstrap.
func resolveCommand(command []string, candidates []string) ([]string, error) {
	if len(command) > 0 {
		argv := append([]string(nil), command...)
		if !strings.Contains(argv[0], "/") {
			path, err := exec.LookPath(argv[0])
			if err != nil {
				return nil, err
			}
			argv[0] = path
		}
		return argv, nil
	}
	path, err := findBootstrap(candidates)
	if err != nil {
		return nil, err
	}
	return []string{path}, nil
}

// findBootstrap returns the first executable candidate. When some exist
// but none is executable it returns the first existing one, so starting
// it yields the kernel's own error (permission denied, exec format error).
func findBootstrap(candidates []string) (string, error) {
	firstExisting := ""
	for _, c := range candidates {
		fi, err := os.Stat(c)
		if err != nil || fi.IsDir() {
			continue
		}
		if fi.Mode().Perm()&0o111 != 0 {
			return c, nil
		}
		if firstExisting == "" {
			firstExisting = c
		}
	}
	if firstExisting != "" {
		return firstExisting, nil
	}
	return "", fmt.Errorf("%w: tried %s", ErrBootstrapNotFound, strings.Join(candidates, ", "))
}

// bootstrapCandidates lists where to look for bootstrap, without duplicates.
func bootstrapCandidates(taskRoot string, fallbacks []string) []string {
	out := []string{filepath.Join(taskRoot, "bootstrap")}
	for _, f := range fallbacks {
		if f != out[0] {
			out = append(out, f)
		}
	}
	return out
}

// startExitCode is the exit code a shell would give for a start failure.
func startExitCode(err error) int {
	if errors.Is(err, ErrBootstrapNotFound) || errors.Is(err, fs.ErrNotExist) || errors.Is(err, exec.ErrNotFound) {
		return 127
	}
	return 126
}
