// Package initd is amber-init, the PID 1 of every function instance.
//
// It serves the AWS Lambda Runtime API to the function's runtime on a
// loopback port, starts and supervises that runtime, and talks to the
// amber agent only through framed messages (api.ReadFrame / api.FrameWriter)
// on its own stdin and stdout. Nothing else is ever written to stdout; its
// diagnostics go to the logger (stderr).
//
// RuntimeAPI holds the HTTP side and knows nothing of processes; Server
// wires it to the frame streams and the supervised runtime process.
//
// Frames, as the agent sees them on amber-init's stdout:
//
//	L*            the runtime's output (Meta.Stream "stdout"/"stderr", ≤ 64 KiB
//	              each), interleaved with everything below at any time
//	X*            the runtime posted /runtime/init/error (before its first /next)
//	N             the runtime's first /next: init is done, it is parked
//	then, for each I (invoke) the agent writes to stdin:
//	  R | E       the response or the FunctionError JSON for Meta.RequestID
//	  N           the runtime is parked again on /next
//	Q             the runtime exited (Meta.ExitCode, Meta.Reason, Body = last
//	              output lines); amber-init exits right after
//
// An E also ends an invocation whose response was over 6 MB
// (Function.ResponseSizeTooLarge). An invocation still open when Q arrives
// never gets an R or E. If the runtime cannot be started at all, Q is the
// only frame. On EOF on stdin amber-init kills the runtime and exits 0
// without a Q; on a malformed frame it logs and exits 2.
package initd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/amberfn/amber/api"
)

// DefaultListenAddr is where Lambda runtimes expect the Runtime API.
const DefaultListenAddr = "127.0.0.1:9001"

// Timing of shutdown steps.
const (
	defaultExitGrace = 500 * time.Millisecond // output drain after the runtime exits
	killWait         = 2 * time.Second        // reaping after SIGKILL
)

var (
	// ErrBootstrapNotFound: no command was given and no bootstrap exists.
	ErrBootstrapNotFound = errors.New("bootstrap not found")
	// ErrStart wraps any failure to start the runtime process.
	ErrStart = errors.New("start runtime")
	// ErrRuntimeExited is what an *ExitError unwraps to.
	ErrRuntimeExited = errors.New("runtime exited")
	// ErrOutput: frames could not be written (the agent is gone).
	ErrOutput = errors.New("write frames")
)

// ExitError is Run's result when the runtime process ends.
type ExitError struct {
	Code   int    // the exit code, or 128+signal number
	Reason string // "exit status 2", "signal: killed"
}

func (e *ExitError) Error() string { return "runtime exited: " + e.Reason }

// Unwrap makes errors.Is(err, ErrRuntimeExited) true.
func (e *ExitError) Unwrap() error { return ErrRuntimeExited }

// ExitCode maps Run's result to amber-init's exit status: 0 for nil (stdin
// closed), the runtime's own status when it exited, 2 for malformed input
// frames, 127 or 126 when the runtime could not be started, else 1.
func ExitCode(err error) int {
	var ee *ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.Code
	case errors.Is(err, api.ErrBadFrame), errors.Is(err, api.ErrFrameTooLarge):
		return 2
	case errors.Is(err, ErrStart):
		return startExitCode(err)
	default:
		return 1
	}
}

// Server is amber-init: it serves the Runtime API, relays frames and
// supervises the runtime. Create it with New.
type Server struct {
	addr    string
	in      io.Reader
	out     io.Writer
	command []string
	env     []string
	log     *slog.Logger
	spawn   bool
	guard   bool // takeOver before starting the runtime, lockDown after

	fallbacks []string      // bootstrap locations after $LAMBDA_TASK_ROOT/bootstrap
	reapAll   bool          // reap every child (true when we are PID 1)
	exitGrace time.Duration // wait for output after the runtime exits

	mu sync.Mutex
	ln net.Listener
}

// Option configures a Server.
type Option func(*Server)

// WithListenAddr sets the Runtime API address (default 127.0.0.1:9001);
// "127.0.0.1:0" picks a free port, see Listen.
func WithListenAddr(addr string) Option { return func(s *Server) { s.addr = addr } }

// WithStdio sets the frame streams (default os.Stdin and os.Stdout).
func WithStdio(in io.Reader, out io.Writer) Option {
	return func(s *Server) { s.in, s.out = in, out }
}

// WithCommand sets the runtime command instead of looking for bootstrap.
// argv[0] is looked up in PATH when it has no slash.
func WithCommand(argv ...string) Option {
	return func(s *Server) { s.command = append([]string(nil), argv...) }
}

// WithEnv sets the environment the runtime inherits (default os.Environ()).
// LAMBDA_TASK_ROOT is read from it; AWS_LAMBDA_RUNTIME_API is replaced.
func WithEnv(env []string) Option {
	return func(s *Server) { s.env = append([]string(nil), env...) }
}

// WithLogger sets the diagnostics logger (default: text to stderr).
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// WithGuard puts amber-init out of its runtime's reach (see guard.go):
// started as the function's user with GuardCapabilities, it becomes root
// and non-dumpable before anything else, starts the runtime as that user
// without capabilities, and keeps CAP_KILL alone.
func WithGuard() Option { return func(s *Server) { s.guard = true } }

// WithoutProcess serves the Runtime API and relays frames without starting
// a runtime: for tests, or a runtime started by other means.
func WithoutProcess() Option { return func(s *Server) { s.spawn = false } }

// New returns a Server with the given options.
func New(opts ...Option) *Server {
	s := &Server{
		addr:      DefaultListenAddr,
		in:        os.Stdin,
		out:       os.Stdout,
		env:       os.Environ(),
		log:       slog.New(slog.NewTextHandler(os.Stderr, nil)),
		spawn:     true,
		fallbacks: defaultBootstrapFallbacks(),
		reapAll:   os.Getpid() == 1,
		exitGrace: defaultExitGrace,
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Listen binds the Runtime API address if not done yet and returns it.
// Run calls it; call it first to learn the port of "127.0.0.1:0".
// Multipath TCP is off because CRIU cannot checkpoint it.
func (s *Server) Listen(ctx context.Context) (net.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return s.ln.Addr(), nil
	}
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(ctx, "tcp", s.addr)
	if err != nil {
		return nil, fmt.Errorf("runtime api: %w", err)
	}
	s.ln = ln
	return ln.Addr(), nil
}

// Run serves until the runtime exits (an *ExitError, after a FrameExit),
// stdin ends (nil), a malformed frame arrives (an error wrapping
// api.ErrBadFrame or api.ErrFrameTooLarge), frames cannot be written
// (ErrOutput) or ctx is done. Whatever the cause, the runtime is gone when
// Run returns. Use ExitCode for the process's exit status. Call Run once.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	out := &frameOut{fw: api.NewFrameWriter(s.out), fail: cancel}

	var g *guard
	if s.guard {
		var err error
		if g, err = takeOver(); err != nil {
			s.log.Error("guard", "err", err)
			_ = out.Write(exitFrame(1, err.Error()))
			return err
		}
	}
	addr, err := s.Listen(ctx)
	if err != nil {
		s.log.Error("listen", "err", err)
		_ = out.Write(exitFrame(1, err.Error()))
		return err
	}
	rt := NewRuntimeAPI(out, s.log)
	srv := s.httpServer(ctx, rt)
	go func() {
		if err := srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
			cancel(fmt.Errorf("serve runtime api: %w", err))
		}
	}()
	defer srv.Close()
	s.log.Info("runtime api listening", "addr", addr.String())

	input := make(chan error, 1)
	go func() { input <- s.readFrames(ctx, rt) }()

	var p *process
	if s.spawn {
		// Catch SIGTERM/SIGINT before the runtime exists, to relay them to it.
		sigs := make(chan os.Signal, 4)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		defer signal.Stop(sigs)
		if p, err = s.start(addr, g, out); err != nil {
			s.log.Error("start runtime", "err", err)
			_ = out.Write(exitFrame(startExitCode(err), err.Error()))
			return fmt.Errorf("%w: %w", ErrStart, err)
		}
		go s.relaySignals(ctx, sigs, p)
	}
	if g != nil {
		if err := g.lockDown(); err != nil {
			s.log.Error("guard", "err", err)
			if p != nil {
				p.Kill(killWait)
			}
			_ = out.Write(exitFrame(1, err.Error()))
			return err
		}
	}
	return s.wait(ctx, input, p, out)
}

// wait blocks until something ends the instance and cleans up after it.
func (s *Server) wait(ctx context.Context, input <-chan error, p *process, out FrameSender) error {
	var exited <-chan struct{}
	if p != nil {
		exited = p.Done()
	}
	select {
	case <-exited:
		f := p.ExitFrame(s.exitGrace)
		s.log.Info("runtime exited", "reason", f.Meta.Reason, "code", f.Meta.ExitCode)
		_ = out.Write(f)
		return &ExitError{Code: f.Meta.ExitCode, Reason: f.Meta.Reason}
	case err := <-input:
		if p != nil {
			p.Kill(killWait)
		}
		return err
	case <-ctx.Done():
		if p != nil {
			p.Kill(killWait)
		}
		return context.Cause(ctx)
	}
}

// Runtime API server timeouts (see httpServer).
const (
	runtimeBodyTimeout = 60 * time.Second
	runtimeIdleTimeout = api.MaxTimeout + time.Minute
)

func (s *Server) httpServer(ctx context.Context, h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 30 * time.Second, // counted from a request's first byte, not while idle
		// Headers and body of one request (a response or error of at most
		// 6 MB over loopback). net/http lifts it once the body has been
		// read, so a /next long poll (a GET) is never cut by it.
		ReadTimeout: runtimeBodyTimeout,
		// Longer than any invocation: a runtime keeps its connection idle
		// while its handler runs, then posts the response on it, and a
		// POST sent as the server closes the connection is not retried.
		IdleTimeout: runtimeIdleTimeout,
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
}

// readFrames hands invoke frames to rt until stdin ends (nil) or breaks.
func (s *Server) readFrames(ctx context.Context, rt *RuntimeAPI) error {
	in := bufio.NewReaderSize(s.in, 64<<10) // a frame's header and body in one read
	for {
		f, err := api.ReadFrame(in)
		if errors.Is(err, io.EOF) {
			s.log.Info("stdin closed; shutting down")
			return nil
		}
		if err != nil {
			s.log.Error("bad input frame; the instance is broken", "err", err)
			return fmt.Errorf("read frame: %w", err)
		}
		if f.Kind != api.FrameInvoke {
			s.log.Warn("ignoring unexpected frame", "kind", string(rune(f.Kind)))
			continue
		}
		if f.Meta.RequestID == "" {
			s.log.Warn("ignoring invoke frame without a request id")
			continue
		}
		if err := rt.Deliver(ctx, f); err != nil {
			return nil // shutting down
		}
	}
}

// start finds and starts the runtime process, as the user g recorded if
// amber-init is guarded.
func (s *Server) start(addr net.Addr, g *guard, out FrameSender) (*process, error) {
	taskRoot := envValue(s.env, "LAMBDA_TASK_ROOT")
	if taskRoot == "" {
		taskRoot = defaultTaskRoot
	}
	argv, err := resolveCommand(s.command, bootstrapCandidates(taskRoot, s.fallbacks))
	if err != nil {
		return nil, err
	}
	dir := ""
	if fi, err := os.Stat(taskRoot); err == nil && fi.IsDir() {
		dir = taskRoot
	}
	spec := startSpec{argv: argv, env: childEnv(s.env, addr.String()), dir: dir, reapAll: s.reapAll}
	if g != nil {
		spec.cred = g.runtime
	}
	return startProcess(spec, out, s.log)
}

// relaySignals forwards the signals on sigs to the runtime until ctx ends.
func (s *Server) relaySignals(ctx context.Context, sigs <-chan os.Signal, p *process) {
	for {
		select {
		case sig := <-sigs:
			s.log.Info("forwarding signal to runtime", "signal", sig.String())
			p.Signal(sig)
		case <-ctx.Done():
			return
		}
	}
}

func exitFrame(code int, reason string) api.Frame {
	return api.Frame{Kind: api.FrameExit, Meta: api.FrameMeta{ExitCode: code, Reason: reason}}
}

// childEnv is env with AWS_LAMBDA_RUNTIME_API set to addr.
func childEnv(env []string, addr string) []string {
	const key = "AWS_LAMBDA_RUNTIME_API="
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, key) {
			out = append(out, kv)
		}
	}
	return append(out, key+addr)
}

// envValue returns the last value of key in env, or "".
func envValue(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}

// frameOut writes frames to the agent; the first write failure ends Run.
type frameOut struct {
	fw   *api.FrameWriter
	fail context.CancelCauseFunc
	once sync.Once
}

// Write sends f. Only ErrFrameTooLarge leaves the stream usable.
func (o *frameOut) Write(f api.Frame) error {
	err := o.fw.Write(f)
	if err != nil && !errors.Is(err, api.ErrFrameTooLarge) {
		o.once.Do(func() { o.fail(fmt.Errorf("%w: %w", ErrOutput, err)) })
	}
	return err
}
