package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/amberfn/amber/api"
)

// Idle instances are frozen (issue 14): a function that leaves work
// running after it answers — a goroutine, a background shell loop —
// would otherwise use CPU between invocations that nobody is billed for.
// An instance back in the pool is frozen once its runtime has returned to
// /next and its frame stream has been quiet for a moment (nothing in
// flight between amber-init and the agent), and thawed when an invocation
// takes it, before the invocation is sent. Lambda does the same with its
// sandboxes.

// freezer is a process whose every task (amber-init included) can be
// stopped while it is idle and let run again. ctrProcess is one.
type freezer interface {
	Freeze(ctx context.Context) error
	Thaw(ctx context.Context) error
}

// ErrThaw wraps a failure to thaw an instance for an invocation; the
// instance is then replaced.
var ErrThaw = errors.New("thaw instance")

// Tuning of freezing.
const (
	// DefaultFreezeAfter is how long an instance stays idle before it is
	// frozen unless WithFreezeAfter says otherwise (BENCH.md: why not 0).
	DefaultFreezeAfter = 20 * time.Millisecond
	// freezeQuiet is how long the frame stream must have been quiet
	// before a freeze: log records still on their way are let through.
	freezeQuiet = 2 * time.Millisecond
	// freezeRetry is how soon a freeze is tried again when the runtime
	// had not yet parked on /next or output was still arriving.
	freezeRetry = 5 * time.Millisecond
	// freezeAnyway: an instance idle this long is frozen even if its
	// runtime never came back to /next or its processes keep writing.
	freezeAnyway = time.Second
)

// WithFreezeAfter sets how long an idle instance runs before it is frozen
// (default DefaultFreezeAfter; 0 freezes as soon as the runtime is back on
// /next; a negative duration never freezes).
func WithFreezeAfter(d time.Duration) Option { return func(a *Agent) { a.freezeAfter = d } }

// idleFreeze is an instance's freeze state.
type idleFreeze struct {
	mu     sync.Mutex
	frz    freezer // nil: this instance is never frozen
	gen    uint64  // bumped when the instance is taken, thawed or closed
	timer  *time.Timer
	failed bool        // freezing cannot work for this instance: not tried again
	frozen atomic.Bool // set and cleared under mu; read without it
	// lastFrame is when the last frame from amber-init arrived (unix ns).
	lastFrame atomic.Int64
}

// scheduleFreeze freezes the instance after it has been idle for after,
// unless it is taken (thaw) or closed first. The caller holds the agent's
// lock while it puts the instance in the idle list (lock order: a.mu,
// then freeze.mu, then in.mu).
func (in *instance) scheduleFreeze(after time.Duration) {
	f := &in.freeze
	if after < 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.frz == nil || f.failed {
		return
	}
	f.gen++
	gen, since := f.gen, time.Now()
	if f.timer != nil {
		f.timer.Stop()
	}
	f.timer = time.AfterFunc(after, func() { in.tryFreeze(gen, since) })
}

// tryFreeze freezes the instance if it has not been taken since the
// freeze was scheduled, its runtime is parked on /next and its frame
// stream is quiet; otherwise it tries again shortly.
func (in *instance) tryFreeze(gen uint64, idleSince time.Time) {
	f := &in.freeze
	f.mu.Lock()
	defer f.mu.Unlock()
	if gen != f.gen || f.frozen.Load() || f.failed || !in.alive() {
		return
	}
	in.mu.Lock()
	idle := in.state == api.StateIdle && in.pending == nil
	in.mu.Unlock()
	if !idle {
		return
	}
	parked := len(in.parked) > 0
	quiet := time.Since(time.Unix(0, f.lastFrame.Load())) >= freezeQuiet
	if (!parked || !quiet) && time.Since(idleSince) < freezeAnyway {
		f.timer = time.AfterFunc(freezeRetry, func() { in.tryFreeze(gen, idleSince) })
		return
	}
	start := time.Now()
	if err := f.frz.Freeze(context.Background()); err != nil {
		switch {
		case errors.Is(err, ErrFreezeTimeout):
			// A task that would not stop in time (in an uninterruptible
			// sleep, say): thawed again; tried again when next idle.
			in.log.Info("idle instance did not freeze in time; it stays thawed until next idle", "err", err)
		case errors.Is(err, ErrNoFreezer): // said at launch
			f.failed = true
		default:
			f.failed = true
			in.log.Warn("freeze idle instance failed; it stays thawed", "err", err)
		}
		return
	}
	f.frozen.Store(true)
	in.log.Debug("idle instance frozen", "took", time.Since(start), "parked", parked)
}

// thaw cancels a pending freeze and thaws the instance if it is frozen.
// It waits for a freeze in progress.
func (in *instance) thaw(ctx context.Context) error {
	f := &in.freeze
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gen++
	if f.timer != nil {
		f.timer.Stop()
		f.timer = nil
	}
	if !f.frozen.Load() {
		return nil
	}
	if err := f.frz.Thaw(ctx); err != nil {
		return fmt.Errorf("%w %s: %w", ErrThaw, in.id, err)
	}
	f.frozen.Store(false)
	return nil
}

// stopFreezing cancels any pending freeze for good (the instance is
// being removed; removal thaws it).
func (in *instance) stopFreezing() {
	f := &in.freeze
	f.mu.Lock()
	f.gen++
	f.failed = true
	if f.timer != nil {
		f.timer.Stop()
		f.timer = nil
	}
	f.mu.Unlock()
}
