package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/amberfn/amber/api"
)

// InitTimeout bounds a cold start's init phase, as Lambda's 10 s does.
const InitTimeout = 10 * time.Second

// launchSpec is what a launcher needs to start one instance.
type launchSpec struct {
	ID     string
	Fn     *api.Function
	Stdin  io.Reader // frames to amber-init
	Stdout io.Writer // frames from amber-init
	Stderr io.Writer // amber-init's own diagnostics
	// Snapshot: the instance will be checkpointed (CRIU options on).
	Snapshot bool
	// RestoreFrom, when set, is the CRIU image to restore the instance from.
	RestoreFrom string
}

// process is one running instance as its launcher sees it.
type process interface {
	Exited() <-chan struct{}
	Kill(ctx context.Context) error
	Close(ctx context.Context) error // kill and remove everything
}

// launcher starts instances. The containerd one is the real thing.
type launcher interface {
	Launch(ctx context.Context, spec launchSpec) (process, error)
}

// Errors an invocation can end with that are not the function's own.
var (
	errInstanceDead = errors.New("instance exited")
	errTimedOut     = errors.New("task timed out")
	// errNotStarted: the instance ended before its runtime took the
	// invocation (a runtime exits after a panic, for one): safe to retry.
	errNotStarted = errors.New("instance ended before the invocation started")
)

// parkTimeout bounds the wait for a warm runtime to come back to /next.
const parkTimeout = 2 * time.Second

type callResult struct {
	kind api.FrameKind // FrameResponse or FrameError
	body []byte
}

type pendingCall struct {
	id   string
	done chan callResult
}

// instance is the agent's side of one function instance: the frame
// stream to and from its amber-init and its lifecycle state.
type instance struct {
	id    string
	fn    *api.Function
	agent string
	logs  func(api.LogRecord)
	kind  api.StartKind
	log   *slog.Logger
	proc  process
	w     *api.FrameWriter

	stdinW  *io.PipeWriter
	stdoutR *io.PipeReader

	initDone chan struct{} // closed on the runtime's first /next
	parked   chan struct{} // holds a token while the runtime waits on /next
	initOnce sync.Once
	dead     chan struct{} // closed when the frame stream ends
	deadMsg  string        // why, with the runtime's last output

	mu    sync.Mutex
	state api.InstanceState
	// oomSeen is the cgroup's OOM-kill count after the last invocation;
	// only the invocation holding the instance touches it.
	oomSeen     uint64
	oomKnown    bool
	pending     *pendingCall
	current     string // request id of the invocation in flight, for log lines
	initErr     *api.FunctionError
	exitReason  string
	exitOutput  string
	createdAt   time.Time
	lastUsed    time.Time
	invocations int64
	initTime    time.Duration
	restoreTime time.Duration // a restored instance's time to restore

	freeze idleFreeze // frozen while idle (idlefreeze.go)
}

// instanceConfig is what startInstance needs.
type instanceConfig struct {
	launcher    launcher
	id          string
	fn          *api.Function
	agent       string
	initTimeout time.Duration
	log         *slog.Logger
	logs        func(api.LogRecord) // where the runtime's output goes
	snapshot    bool                // to be checkpointed (launchSpec.Snapshot)
}

// startInstance launches an instance and waits for its runtime to finish
// init. On failure the instance is already cleaned up and the error is a
// *api.FunctionError the invoker should see, or a platform error.
func startInstance(ctx context.Context, cfg instanceConfig) (*instance, error) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	fn, id, initTimeout := cfg.fn, cfg.id, cfg.initTimeout
	in := &instance{
		id: id, fn: fn, agent: cfg.agent, kind: api.StartCold, log: cfg.log.With("instance", id, "function", fn.Name),
		logs: cfg.logs, w: api.NewFrameWriter(inW), stdinW: inW, stdoutR: outR,
		initDone: make(chan struct{}), parked: make(chan struct{}, 1), dead: make(chan struct{}),
		state: api.StateCreating, createdAt: time.Now(),
	}
	if in.logs == nil {
		in.logs = func(api.LogRecord) {}
	}
	start := time.Now()
	proc, err := cfg.launcher.Launch(ctx, launchSpec{ID: id, Fn: fn, Stdin: inR, Stdout: outW, Stderr: &lineLogger{log: in.log}, Snapshot: cfg.snapshot})
	if err != nil {
		inW.Close()
		outW.Close()
		return nil, fmt.Errorf("launch instance of %s: %w", fn.Name, err)
	}
	in.proc = proc
	in.freeze.frz, _ = proc.(freezer)
	go in.readLoop()
	go func() { // the task ended and its output is copied: end the frame stream
		<-proc.Exited()
		outW.Close()
	}()
	in.setState(api.StateInitializing)
	timer := time.NewTimer(initTimeout)
	defer timer.Stop()
	select {
	case <-in.initDone:
		if err := in.reportedInitError(); err != nil {
			// The runtime said init failed yet asked for work: Lambda ends it there.
			in.close(context.WithoutCancel(ctx))
			return nil, err
		}
		in.mu.Lock()
		in.initTime = time.Since(start)
		in.state = api.StateIdle
		in.mu.Unlock()
		return in, nil
	case <-in.dead:
		in.close(context.WithoutCancel(ctx))
		return nil, in.initFailure()
	case <-timer.C:
		in.close(context.WithoutCancel(ctx))
		if err := in.reportedInitError(); err != nil {
			return nil, err
		}
		return nil, &api.FunctionError{ErrorType: "Runtime.InitTimeout",
			ErrorMessage: fmt.Sprintf("init did not finish within %s (the runtime never called /next)%s", initTimeout, in.lastOutput())}
	case <-ctx.Done():
		in.close(context.WithoutCancel(ctx))
		return nil, ctx.Err()
	}
}

func (in *instance) lastOutput() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.exitOutput == "" {
		return ""
	}
	return "; last output:\n" + in.exitOutput
}

// reportedInitError is the error the runtime posted to /runtime/init/error, if any.
func (in *instance) reportedInitError() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.initErr == nil {
		return nil
	}
	fe := *in.initErr
	return &fe
}

// initFailure explains why an instance died before init finished.
func (in *instance) initFailure() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.initErr != nil {
		fe := *in.initErr
		if in.exitOutput != "" {
			fe.ErrorMessage += "; last output:\n" + in.exitOutput
		}
		return &fe
	}
	return &api.FunctionError{ErrorType: "Runtime.ExitError", ErrorMessage: in.deadMsg}
}

// alive reports whether the instance's frame stream is still open.
func (in *instance) alive() bool {
	select {
	case <-in.dead:
		return false
	default:
		return true
	}
}

func (in *instance) setState(s api.InstanceState) {
	in.mu.Lock()
	in.state = s
	in.mu.Unlock()
}

// readLoop dispatches frames from amber-init until the stream ends.
func (in *instance) readLoop() {
	r := bufio.NewReaderSize(in.stdoutR, 64<<10)
	var readErr error
	for {
		f, err := api.ReadFrame(r)
		if err != nil {
			readErr = err
			break
		}
		in.freeze.lastFrame.Store(time.Now().UnixNano())
		switch f.Kind {
		case api.FrameReady:
			// Output read after the response but before the runtime came
			// back to /next still belongs to the invocation it answered.
			in.mu.Lock()
			if in.pending == nil {
				in.current = ""
			}
			in.mu.Unlock()
			in.initOnce.Do(func() { close(in.initDone) })
			select {
			case in.parked <- struct{}{}:
			default:
			}
		case api.FrameResponse, api.FrameError:
			in.mu.Lock()
			p := in.pending
			if p != nil && p.id == f.Meta.RequestID {
				in.pending = nil
			} else {
				p = nil
			}
			in.mu.Unlock()
			if p == nil {
				in.log.Warn("result for a request that is not pending", "request_id", f.Meta.RequestID)
				continue
			}
			p.done <- callResult{kind: f.Kind, body: f.Body}
		case api.FrameInitError:
			var fe api.FunctionError
			if json.Unmarshal(f.Body, &fe) != nil || fe.ErrorType == "" {
				fe = api.FunctionError{ErrorType: "Runtime.InitError", ErrorMessage: strings.TrimSpace(string(f.Body))}
			}
			in.mu.Lock()
			in.initErr = &fe
			in.mu.Unlock()
		case api.FrameLog:
			in.mu.Lock()
			req := in.current
			in.mu.Unlock()
			now := time.Now()
			for _, line := range lines(f.Body) {
				in.logs(api.LogRecord{Time: now, Function: in.fn.Name, Version: in.fn.Version, Agent: in.agent,
					Instance: in.id, RequestID: req, Stream: f.Meta.Stream, Text: line})
			}
		case api.FrameExit:
			in.mu.Lock()
			in.exitReason = f.Meta.Reason
			in.exitOutput = strings.ToValidUTF8(string(f.Body), "\uFFFD")
			in.mu.Unlock()
		}
	}
	in.mu.Lock()
	reason := in.exitReason
	if reason == "" {
		reason = "instance stopped"
		if !errors.Is(readErr, io.EOF) && !errors.Is(readErr, io.ErrClosedPipe) {
			reason = fmt.Sprintf("broken frame stream: %v", readErr)
		}
	}
	in.deadMsg = "Runtime exited: " + reason
	if in.exitOutput != "" {
		in.deadMsg += "; last output:\n" + in.exitOutput
	}
	in.state = api.StateGone
	in.mu.Unlock()
	close(in.dead)
}

// invoke runs one invocation. A function error comes back as a result
// of kind FrameError; errInstanceDead and errTimedOut mean the instance
// must not be reused.
func (in *instance) invoke(ctx context.Context, reqID string, payload []byte, timeout time.Duration) (callResult, error) {
	p := &pendingCall{id: reqID, done: make(chan callResult, 1)}
	// Send work only to a runtime parked on /next: one that is about to
	// exit (after a panic, say) never gets an invocation it cannot answer.
	park := time.NewTimer(parkTimeout)
	select {
	case <-in.parked:
		park.Stop()
	case <-in.dead:
		park.Stop()
		return callResult{}, errNotStarted
	case <-park.C:
		return callResult{}, fmt.Errorf("%w: the runtime did not return to /next within %s", errNotStarted, parkTimeout)
	case <-ctx.Done():
		park.Stop()
		return callResult{}, ctx.Err()
	}
	in.mu.Lock()
	if in.pending != nil || in.state == api.StateGone {
		in.mu.Unlock()
		return callResult{}, fmt.Errorf("instance %s is not idle (state %s, pending %v)", in.id, in.state, in.pending != nil)
	}
	in.pending = p
	in.current = reqID
	in.state = api.StateBusy
	in.invocations++
	in.lastUsed = time.Now()
	in.mu.Unlock()
	deadline := time.Now().Add(timeout)
	werr := make(chan error, 1)
	go func() {
		werr <- in.w.Write(api.Frame{Kind: api.FrameInvoke, Meta: api.FrameMeta{
			RequestID:   reqID,
			DeadlineMs:  deadline.UnixMilli(),
			FunctionARN: "arn:aws:lambda:us-east-1:000000000000:function:" + in.fn.Name,
			TraceID:     "Root=1-" + reqID,
		}, Body: payload})
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	finish := func(s api.InstanceState) {
		in.mu.Lock()
		in.pending = nil
		if in.state != api.StateGone {
			in.state = s
		}
		in.lastUsed = time.Now()
		in.mu.Unlock()
	}
	for {
		select {
		case err := <-werr:
			if err != nil {
				finish(api.StateGone)
				return callResult{}, fmt.Errorf("%w: send invocation: %v", errInstanceDead, err)
			}
		case r := <-p.done:
			finish(api.StateIdle)
			return r, nil
		case <-in.dead:
			finish(api.StateGone)
			return callResult{}, fmt.Errorf("%w: %s", errInstanceDead, in.deadMsg)
		case <-timer.C:
			finish(api.StateGone)
			return callResult{}, errTimedOut
		case <-ctx.Done():
			finish(api.StateGone)
			return callResult{}, ctx.Err()
		}
	}
}

// snapshot describes the instance for heartbeats and listings.
func (in *instance) snapshot(agent string) api.Instance {
	peakMB := 0
	if m, ok := in.proc.(memoryReader); ok {
		if u, err := m.Memory(); err == nil {
			peakMB = int((u.PeakBytes + 1<<20 - 1) >> 20)
		}
	}
	var cpuMs int64
	if c, ok := in.proc.(cpuReader); ok {
		if d, err := c.CPU(); err == nil {
			cpuMs = d.Milliseconds()
		}
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return api.Instance{
		MaxMemoryMB: peakMB, CPUMs: cpuMs,
		ID: in.id, Function: in.fn.Name, Version: in.fn.Version, Agent: agent,
		State: in.state, StartKind: in.kind, CreatedAt: in.createdAt, LastUsedAt: in.lastUsed,
		Invocations: in.invocations, MemoryMB: in.fn.MemoryMB,
		Frozen: in.freeze.frozen.Load(),
	}
}

// cpuReader is a process that can say how much CPU time it has used.
type cpuReader interface {
	CPU() (time.Duration, error)
}

// close stops the instance and removes its container.
func (in *instance) close(ctx context.Context) {
	in.stopFreezing()
	in.setState(api.StateGone)
	in.stdinW.Close()
	if in.proc != nil {
		if err := in.proc.Close(ctx); err != nil {
			in.log.Warn("remove instance", "err", err)
		}
	}
	in.stdoutR.Close()
}

// lineLogger logs amber-init's own stderr line by line.
type lineLogger struct {
	log *slog.Logger
	mu  sync.Mutex
	buf []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := strings.IndexByte(string(l.buf), '\n')
		if i < 0 {
			break
		}
		l.log.Debug("amber-init", "line", string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > 4096 {
		l.buf = l.buf[:0]
	}
	return len(p), nil
}
