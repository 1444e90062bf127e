package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/snapshots"
)

// Snapshots (issue 4): after a function version's first cold start on
// this agent, a dedicated instance is started in the background and
// checkpointed with CRIU the moment its runtime first parks on /next; new
// instances are then restored from that image when restoring has been
// measured to be faster than init. A snapshot that is missing, corrupt,
// from another CRIU or kernel, or fails to restore is discarded and the
// start falls back to cold: a bad snapshot never fails an invocation.

// snapshotLauncher is a launcher whose instances can be checkpointed and
// restored (Containerd).
type snapshotLauncher interface {
	launcher
	canSnapshot() bool
	snapshotDir() string
}

// checkpointer is a process that can be checkpointed into a folder; the
// process ends with the checkpoint.
type checkpointer interface {
	Checkpoint(ctx context.Context, imagePath string) error
}

// Tuning of snapshots.
const (
	// snapshotQuiet is how long the snapshot instance must stay parked
	// before its checkpoint, so its stdio pipes are idle.
	snapshotQuiet = 50 * time.Millisecond
	// snapshotTakeTimeout bounds taking one snapshot.
	snapshotTakeTimeout = 2 * time.Minute
	// snapshotMaxFailures: after this many failed attempts to take a
	// snapshot of a version, the agent stops trying.
	snapshotMaxFailures = 2
	// retrialEvery: when cold starts won, every this many cold starts a
	// restore is tried again, in case the figures changed.
	retrialEvery = 20
	// collectEvery is how often snapshots of gone versions are collected.
	collectEvery = 5 * time.Minute
)

// WithSnapshots turns snapshots on or off (default on when the launcher
// and the node's CRIU can do them).
func WithSnapshots(on bool) Option { return func(a *Agent) { a.snapOff = !on } }

// WithSnapshotBudget caps the agent's snapshot store (default
// snapshots.DefaultBudget).
func WithSnapshotBudget(bytes int64) Option { return func(a *Agent) { a.snapBudget = bytes } }

// snapManager holds the agent's snapshot store and, per function version,
// what it measured and decided.
type snapManager struct {
	store *snapshots.Store // nil when snapshots cannot work here
	env   snapshots.Env
	off   string // why snapshots are off ("" when on)
	log   *slog.Logger

	mu          sync.Mutex
	fns         map[fnKey]*snapFn
	lastCollect time.Time
	stopped     bool
	takes       sync.WaitGroup     // snapshots being taken
	ctx         context.Context    // ends their work on stop
	cancel      context.CancelFunc //
}

// stop cancels the snapshots being taken and waits until their instances
// are removed; no new ones start.
func (m *snapManager) stop() {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.stopped = true
	m.mu.Unlock()
	m.cancel()
	m.takes.Wait()
}

type snapFn struct {
	taking      bool
	failures    int
	lastErr     string
	initTime    time.Duration // the last cold init measured here
	restoreTime time.Duration // the last restore measured here (0: never)
	coldSince   int           // cold starts since restore last lost
}

// coldIsFaster reports whether both were measured here and a cold init
// beat the last restore.
func (f *snapFn) coldIsFaster() bool {
	return f.restoreTime > 0 && f.initTime > 0 && f.restoreTime >= f.initTime
}

// newSnapManager probes CRIU and opens the store when launch can snapshot.
func newSnapManager(ctx context.Context, launch launcher, off bool, budget int64, log *slog.Logger) *snapManager {
	m := &snapManager{log: log, fns: map[fnKey]*snapFn{}}
	m.ctx, m.cancel = context.WithCancel(context.WithoutCancel(ctx))
	sl, ok := launch.(snapshotLauncher)
	switch {
	case off:
		m.off = "snapshots turned off"
	case !ok || !sl.canSnapshot():
		m.off = "this launcher cannot checkpoint instances"
	}
	if m.off != "" {
		return m
	}
	env, err := snapshots.Probe(ctx)
	if err != nil {
		m.off = err.Error()
		log.Warn("snapshots off: cold starts only", "reason", m.off)
		return m
	}
	store, err := snapshots.Open(sl.snapshotDir(), budget)
	if err != nil {
		m.off = err.Error()
		log.Warn("snapshots off: cold starts only", "reason", m.off)
		return m
	}
	m.store, m.env = store, env
	log.Info("snapshots on", "criu", env.CRIUVersion, "kernel", env.Kernel, "store", store.Dir(), "stored_bytes", store.Size())
	return m
}

func (m *snapManager) fn(k fnKey) *snapFn {
	f := m.fns[k]
	if f == nil {
		f = &snapFn{}
		m.fns[k] = f
	}
	return f
}

// status says how new instances of the version start here, and why.
func (m *snapManager) status(k fnKey) string {
	if m == nil {
		return ""
	}
	if m.store == nil {
		return "no CRIU: " + m.off
	}
	m.mu.Lock()
	f := m.fns[k]
	var st snapFn
	if f != nil {
		st = *f
	}
	m.mu.Unlock()
	ms := func(d time.Duration) string { return fmt.Sprintf("%d ms", d.Round(time.Millisecond).Milliseconds()) }
	e, err := m.store.Get(k.name, k.version)
	has := err == nil
	switch {
	case st.taking:
		return fmt.Sprintf("cold: taking a snapshot (init %s)", ms(st.initTime))
	case !has && st.failures >= snapshotMaxFailures:
		return "cold: no snapshot: taking one failed: " + st.lastErr
	case !has && st.lastErr != "":
		return "cold: no snapshot yet: " + st.lastErr
	case !has:
		return "cold: no snapshot yet"
	case st.restoreTime == 0:
		return fmt.Sprintf("restore: snapshot ready, not yet restored (init %s)", ms(st.initTime))
	case st.initTime == 0:
		// A snapshot kept from an earlier run of this agent.
		return fmt.Sprintf("restore %s; the snapshot stands in for an init of %s", ms(st.restoreTime), ms(e.InitTime))
	case st.restoreTime < st.initTime:
		return fmt.Sprintf("restore %s < init %s", ms(st.restoreTime), ms(st.initTime))
	default:
		return fmt.Sprintf("cold: init %s < restore %s", ms(st.initTime), ms(st.restoreTime))
	}
}

// restorable lists the versions whose new instances start here by
// restoring a stored snapshot (for heartbeats: placement prefers them).
func (m *snapManager) restorable() []api.SnapshotRef {
	if m == nil || m.store == nil {
		return nil
	}
	entries := m.store.List()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []api.SnapshotRef
	for _, e := range entries {
		if e.Function == "" {
			continue // unreadable metadata
		}
		if f := m.fns[fnKey{e.Function, e.Version}]; f != nil && f.coldIsFaster() {
			continue // cold starts are faster here
		}
		out = append(out, api.SnapshotRef{Function: e.Function, Version: e.Version})
	}
	return out
}

// chooseRestore returns the snapshot to restore the version from, when
// there is one and restoring is (or may be) faster than init. A snapshot
// that does not verify is discarded here.
func (m *snapManager) chooseRestore(k fnKey) *snapshots.Entry {
	if m == nil || m.store == nil {
		return nil
	}
	m.mu.Lock()
	f := m.fn(k)
	useCold := f.coldIsFaster() && f.coldSince < retrialEvery
	m.mu.Unlock()
	if useCold {
		return nil
	}
	e, err := m.store.Get(k.name, k.version)
	if errors.Is(err, snapshots.ErrNotFound) {
		return nil
	}
	if err == nil {
		err = m.store.Verify(e, m.env)
	}
	if err != nil {
		m.discard(k, "verify", err)
		return nil
	}
	return e
}

// discard removes a bad snapshot and raises the event.
func (m *snapManager) discard(k fnKey, stage string, err error) {
	reason := "corrupt"
	switch {
	case errors.Is(err, snapshots.ErrForeign):
		reason = "foreign"
	case stage == "restore":
		reason = "restore-failed"
	}
	m.log.Warn("snapshot discarded; starting cold", "event", "snapshot_discarded", "function", k.name, "version", k.version,
		"stage", stage, "reason", reason, "err", err)
	if rerr := m.store.Remove(k.name, k.version); rerr != nil {
		m.log.Warn("remove snapshot", "function", k.name, "version", k.version, "err", rerr)
	}
	m.mu.Lock()
	f := m.fn(k)
	f.lastErr = fmt.Sprintf("%s (%s)", reason, stage)
	f.restoreTime = 0
	m.mu.Unlock()
}

// observeCold records a cold init and says whether to take a snapshot now.
func (m *snapManager) observeCold(k fnKey, init time.Duration) bool {
	if m == nil || m.store == nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.fn(k)
	f.initTime = init
	f.coldSince++
	if f.taking || f.failures >= snapshotMaxFailures || m.stopped {
		return false
	}
	if _, err := m.store.Get(k.name, k.version); err == nil {
		return false
	}
	f.taking = true
	m.takes.Add(1) // under mu with the stopped check: stop waits for it
	return true
}

func (m *snapManager) observeRestore(k fnKey, d time.Duration) {
	m.mu.Lock()
	f := m.fn(k)
	f.restoreTime = d
	if d < f.initTime || f.initTime == 0 {
		f.coldSince = 0
	} else {
		f.coldSince = 0 // restore lost: the next retrialEvery starts are cold
	}
	m.mu.Unlock()
}

// takeSnapshot starts a dedicated instance of fn, checkpoints it once
// its runtime has parked on /next after init, and stores the image. It
// runs in the background and never touches the pools.
func (a *Agent) takeSnapshot(k fnKey, fn *api.Function) {
	m := a.snaps
	defer m.takes.Done()
	ctx, cancel := context.WithTimeout(m.ctx, snapshotTakeTimeout)
	defer cancel()
	err := a.doTakeSnapshot(ctx, k, fn)
	m.mu.Lock()
	f := m.fn(k)
	f.taking = false
	if err != nil {
		f.failures++
		msg := err.Error()
		if ce := (*snapshots.CRIUError)(nil); errors.As(err, &ce) {
			msg = ce.Error() // the one-line cause and the kept log, not the runtime's wrapping
		}
		f.lastErr = "snapshot failed: " + msg
	} else {
		f.lastErr = ""
	}
	m.mu.Unlock()
	if err != nil {
		m.log.Warn("snapshot not taken", "event", "snapshot_failed", "function", fn.Name, "version", fn.Version, "err", err)
	}
	a.notify()
}

func (a *Agent) doTakeSnapshot(ctx context.Context, k fnKey, fn *api.Function) error {
	m := a.snaps
	img, err := m.store.Prepare(fn.Name, fn.Version)
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			m.store.Discard(img)
		}
	}()
	in, err := startInstance(ctx, instanceConfig{launcher: a.launch, id: newID(fn.Name + "-snap"), fn: fn, agent: a.name,
		initTimeout: a.initWait, log: a.log, snapshot: true})
	if err != nil {
		return fmt.Errorf("start the instance to snapshot: %w", err)
	}
	defer in.close(context.WithoutCancel(ctx))
	cp, ok := in.proc.(checkpointer)
	if !ok {
		return errors.New("instance cannot be checkpointed")
	}
	// The runtime is parked on /next. Let any output still in the pipes
	// reach the agent: unread pipe data would be saved in the image.
	time.Sleep(snapshotQuiet)
	if !in.alive() {
		return fmt.Errorf("instance ended before its checkpoint: %s", in.deadMsg)
	}
	start := time.Now()
	if err := cp.Checkpoint(ctx, img); err != nil {
		return err
	}
	checkpointed := time.Since(start)
	e, evicted, err := m.store.Commit(img, snapshots.Meta{
		Function: fn.Name, Version: fn.Version, ImageDigest: fn.Image,
		CRIUVersion: m.env.CRIUVersion, Kernel: m.env.Kernel,
		TakeTime: time.Since(start), InitTime: in.initTime,
	})
	if err != nil {
		return err
	}
	committed = true
	m.log.Info("snapshot taken", "event", "snapshot_taken", "function", fn.Name, "version", fn.Version,
		"bytes", e.Size, "files", e.Files, "checkpoint", checkpointed.Round(time.Millisecond),
		"take", e.TakeTime.Round(time.Millisecond), "init", in.initTime.Round(time.Millisecond))
	for _, ev := range evicted {
		m.log.Info("snapshot evicted: store over budget", "event", "snapshot_evicted", "function", ev.Function, "version", ev.Version, "bytes", ev.Size)
	}
	return nil
}

// restoreInstance starts an instance from a snapshot. Its runtime was
// parked on /next when the snapshot was taken, so it is ready at once.
func restoreInstance(ctx context.Context, cfg instanceConfig, imagePath string) (*instance, error) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	fn, id := cfg.fn, cfg.id
	in := &instance{
		id: id, fn: fn, agent: cfg.agent, kind: api.StartRestore, log: cfg.log.With("instance", id, "function", fn.Name),
		logs: cfg.logs, w: api.NewFrameWriter(inW), stdinW: inW, stdoutR: outR,
		initDone: make(chan struct{}), parked: make(chan struct{}, 1), dead: make(chan struct{}),
		state: api.StateCreating, createdAt: time.Now(),
	}
	if in.logs == nil {
		in.logs = func(api.LogRecord) {}
	}
	proc, err := cfg.launcher.Launch(ctx, launchSpec{ID: id, Fn: fn, Stdin: inR, Stdout: outW,
		Stderr: &lineLogger{log: in.log}, RestoreFrom: imagePath})
	if err != nil {
		inW.Close()
		outW.Close()
		return nil, err
	}
	in.proc = proc
	in.freeze.frz, _ = proc.(freezer)
	in.initOnce.Do(func() { close(in.initDone) })
	in.parked <- struct{}{}
	go in.readLoop()
	go func() {
		<-proc.Exited()
		outW.Close()
	}()
	in.mu.Lock()
	in.state = api.StateIdle
	in.mu.Unlock()
	return in, nil
}

// tryRestore restores an instance of the version when a good snapshot
// exists and restoring pays. nil means: start cold.
func (a *Agent) tryRestore(ctx context.Context, k fnKey, fn *api.Function, res *api.InvokeResult) *instance {
	e := a.snaps.chooseRestore(k)
	if e == nil {
		return nil
	}
	start := time.Now()
	in, err := restoreInstance(ctx, instanceConfig{launcher: a.launch, id: newID(fn.Name), fn: fn, agent: a.name,
		log: a.log, logs: a.functionOutput}, e.ImagePath())
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		a.snaps.discard(k, "restore", err)
		return nil
	}
	d := time.Since(start)
	in.mu.Lock()
	in.restoreTime = d
	in.mu.Unlock()
	a.snaps.observeRestore(k, d)
	res.StartKind = api.StartRestore
	res.RestoreDuration = d
	return in
}

// afterCold records a cold start and takes a snapshot in the background
// after the version's first one here.
func (a *Agent) afterCold(k fnKey, fn *api.Function, init time.Duration) {
	if a.snaps.observeCold(k, init) {
		go a.takeSnapshot(k, fn)
	}
}

// restoredFailed: a restored instance died before it answered its first
// invocation. The snapshot is discarded; the caller retries cold.
func (a *Agent) restoredFailed(k fnKey, err error) {
	if a.snaps == nil || a.snaps.store == nil {
		return
	}
	a.snaps.discard(k, "restore", fmt.Errorf("restored instance failed its first invocation: %w", err))
}

// collectSnapshots removes snapshots of versions the registry no longer has.
func (a *Agent) collectSnapshots(ctx context.Context) {
	m := a.snaps
	if m == nil || m.store == nil {
		return
	}
	m.mu.Lock()
	due := time.Since(m.lastCollect) >= collectEvery
	if due {
		m.lastCollect = time.Now()
	}
	m.mu.Unlock()
	if !due {
		return
	}
	go func() {
		removed := m.store.Collect(func(name string, version int) bool {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			_, err := a.reg.FunctionVersion(cctx, name, version)
			return err == nil || !errors.Is(err, api.ErrNotFound)
		})
		for _, r := range removed {
			m.log.Info("snapshot collected: version gone", "event", "snapshot_collected", "function", r.Function, "version", r.Version, "bytes", r.Size)
		}
	}()
}

// Snapshot returns this agent's stored snapshot of a function version
// (snapshots.ErrNotFound when there is none or snapshots are off).
func (a *Agent) Snapshot(name string, version int) (*snapshots.Entry, error) {
	if a.snaps == nil || a.snaps.store == nil {
		return nil, snapshots.ErrNotFound
	}
	return a.snaps.store.Get(name, version)
}

// SnapshotDecision says how this agent starts new instances of a
// function version, and why (the text api.Instance.Snapshot carries).
func (a *Agent) SnapshotDecision(name string, version int) string {
	return a.snaps.status(fnKey{name, version})
}

// RetireIdle stops every idle instance of a function, so its next
// invocation here is not warm; it returns how many it stopped.
func (a *Agent) RetireIdle(function string) int {
	a.mu.Lock()
	var list []*instance
	for k, idle := range a.idle {
		if k.name == function {
			list = append(list, idle...)
			delete(a.idle, k)
		}
	}
	for _, in := range list {
		delete(a.all, in.id)
	}
	a.mu.Unlock()
	for _, in := range list {
		in.close(context.Background())
	}
	if len(list) > 0 {
		a.notify()
	}
	return len(list)
}
