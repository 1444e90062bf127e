// Package agent is amber's node agent: it runs function instances as
// containerd tasks, keeps them warm between invocations, and reports its
// capacity, node figures and instances to the scheduler.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/amberfn/amber/api"
)

// Registry is what the agent needs from the scheduler.
type Registry interface {
	ImageSource
	FunctionVersion(ctx context.Context, name string, version int) (*api.Function, error)
	Heartbeat(ctx context.Context, hb api.Heartbeat) (*api.HeartbeatReply, error)
}

// kickSpacing is the least time between heartbeats sent early because an
// instance changed state.
const kickSpacing = 100 * time.Millisecond

// Agent runs function instances and serves invocations.
type Agent struct {
	name         string
	url          string
	token        string
	capacityMB   int
	keepAlive    time.Duration
	interval     time.Duration
	reg          Registry
	launch       launcher
	log          *slog.Logger
	stats        func() api.NodeStats
	kick         chan struct{}
	drainTimeout time.Duration
	logs         *logStore
	initWait     time.Duration // bound on a cold start's init (InitTimeout)
	snaps        *snapManager  // snapshot store and decisions (snapshot.go)
	snapOff      bool
	snapBudget   int64
	freezeAfter  time.Duration // idle time before an instance is frozen; < 0: never
	// shuttingDown is set once Run's context ends; heartbeats carry it.
	shuttingDown atomic.Bool
	// closingN counts instances being removed in the background
	// (closeLater); Shutdown waits for them.
	closingMu sync.Mutex
	closingN  int

	mu    sync.Mutex
	fns   map[fnKey]*api.Function
	idle  map[fnKey][]*instance // most recently used last
	all   map[string]*instance
	busy  int
	close bool
	// Pools: the scheduler's targets, instances being prewarmed, cold
	// starts admitted under a cap, and a channel closed when an instance
	// comes back idle or goes away.
	targets  map[string]api.PoolTarget
	warming  map[fnKey]int
	starting map[string]int
	freed    chan struct{}
}

type fnKey struct {
	name    string
	version int
}

// Option configures an Agent.
type Option func(*Agent)

// WithName sets the agent's name (default "agent").
func WithName(n string) Option { return func(a *Agent) { a.name = n } }

// WithAdvertiseURL sets the URL the scheduler uses to reach this agent.
func WithAdvertiseURL(u string) Option { return func(a *Agent) { a.url = u } }

// WithToken sets the bearer token the agent's API requires.
func WithToken(t string) Option { return func(a *Agent) { a.token = t } }

// WithCapacityMB sets how much memory instances may use on this node.
func WithCapacityMB(mb int) Option { return func(a *Agent) { a.capacityMB = mb } }

// WithKeepAlive sets how long an idle instance lives (default 10 minutes).
func WithKeepAlive(d time.Duration) Option { return func(a *Agent) { a.keepAlive = d } }

// WithHeartbeatInterval sets how often the agent reports (default 1 s).
func WithHeartbeatInterval(d time.Duration) Option { return func(a *Agent) { a.interval = d } }

// WithDrainTimeout bounds how long a stopping agent waits for invocations
// in flight (default 30 s).
func WithDrainTimeout(d time.Duration) Option { return func(a *Agent) { a.drainTimeout = d } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(a *Agent) { a.log = l } }

// withLauncher replaces the containerd launcher (unit tests only).
func withLauncher(l launcher) Option { return func(a *Agent) { a.launch = l } }

// withInitTimeout shortens InitTimeout (unit tests only).
func withInitTimeout(d time.Duration) Option { return func(a *Agent) { a.initWait = d } }

// WithLauncher runs instances through containerd.
func WithLauncher(c *Containerd) Option { return func(a *Agent) { a.launch = c } }

// New returns an agent that gets functions and images from reg.
func New(reg Registry, opts ...Option) (*Agent, error) {
	a := &Agent{
		name: "agent", capacityMB: 4096, keepAlive: 10 * time.Minute, interval: time.Second,
		reg: reg, log: slog.Default(), stats: nodeStats, kick: make(chan struct{}, 1), logs: newLogStore(), initWait: InitTimeout, drainTimeout: 30 * time.Second, freezeAfter: DefaultFreezeAfter,
		fns: map[fnKey]*api.Function{}, idle: map[fnKey][]*instance{}, all: map[string]*instance{},
		targets: map[string]api.PoolTarget{}, warming: map[fnKey]int{}, starting: map[string]int{}, freed: make(chan struct{}),
	}
	for _, o := range opts {
		o(a)
	}
	if err := api.ValidateName("agent name", a.name); err != nil {
		return nil, err
	}
	if a.launch == nil {
		return nil, errors.New("agent: no launcher configured")
	}
	a.log = a.log.With("agent", a.name)
	a.snaps = newSnapManager(context.Background(), a.launch, a.snapOff, a.snapBudget, a.log)
	return a, nil
}

// Name is the agent's name.
func (a *Agent) Name() string { return a.name }

// Run sends heartbeats and retires expired idle instances until ctx ends,
// then stops every instance.
func (a *Agent) Run(ctx context.Context) error {
	t := time.NewTicker(a.interval)
	defer t.Stop()
	for {
		a.heartbeat(ctx)
		a.reap(time.Now())
		a.reconcile(ctx)
		a.collectSnapshots(ctx)
		select {
		case <-ctx.Done():
			// Tell the scheduler first, so no new work is placed here:
			// a last heartbeat that says so. (Not an operator's drain,
			// which the scheduler keeps across this agent's restarts.)
			a.shuttingDown.Store(true)
			a.heartbeat(context.WithoutCancel(ctx))
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.drainTimeout)
			a.Shutdown(sctx)
			cancel()
			return nil
		case <-t.C:
		case <-a.kick:
			// An early heartbeat after a change, but at most every
			// kickSpacing: under load every invocation kicks.
			select {
			case <-time.After(kickSpacing):
			case <-ctx.Done():
			}
		}
	}
}

func (a *Agent) heartbeat(ctx context.Context) {
	hb := api.Heartbeat{Name: a.name, URL: a.url, CapacityMB: a.capacityMB, Stats: a.stats(), Instances: a.Instances(),
		ShuttingDown: a.shuttingDown.Load(), Snapshots: a.snaps.restorable()}
	hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	reply, err := a.reg.Heartbeat(hctx, hb)
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("heartbeat failed", "err", err)
		}
		return
	}
	a.setTargets(reply.Targets)
}

// notify asks for an early heartbeat after a change of instance state.
func (a *Agent) notify() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Instances lists every instance, sorted by function and id.
func (a *Agent) Instances() []api.Instance {
	a.mu.Lock()
	list := make([]*instance, 0, len(a.all))
	for _, in := range a.all {
		list = append(list, in)
	}
	a.mu.Unlock()
	out := make([]api.Instance, 0, len(list))
	decisions := map[fnKey]string{} // one store look-up per version, not per instance
	for _, in := range list {
		inst := in.snapshot(a.name)
		k := fnKey{inst.Function, inst.Version}
		d, ok := decisions[k]
		if !ok {
			d = a.snaps.status(k)
			decisions[k] = d
		}
		inst.Snapshot = d
		out = append(out, inst)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Function != out[j].Function {
			return out[i].Function < out[j].Function
		}
		return out[i].ID < out[j].ID
	})
	return out
}

func (a *Agent) function(ctx context.Context, name string, version int) (*api.Function, error) {
	k := fnKey{name, version}
	a.mu.Lock()
	fn := a.fns[k]
	a.mu.Unlock()
	if fn != nil {
		return fn, nil
	}
	fn, err := a.reg.FunctionVersion(ctx, name, version)
	if err != nil {
		return nil, fmt.Errorf("function %s version %d: %w", name, version, err)
	}
	a.mu.Lock()
	a.fns[k] = fn
	a.mu.Unlock()
	return fn, nil
}

// acquire takes the most recently used idle instance of the version, and
// retires idle instances of older versions of the function.
func (a *Agent) acquire(k fnKey) *instance {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.close {
		return nil // draining: no new work
	}
	var stale []*instance
	for other, list := range a.idle {
		if other.name == k.name && other.version != k.version {
			stale = append(stale, list...)
			delete(a.idle, other)
		}
	}
	for _, in := range stale {
		delete(a.all, in.id)
		a.closeLater(in)
	}
	for list := a.idle[k]; len(list) > 0; list = a.idle[k] {
		in := list[len(list)-1]
		a.idle[k] = list[:len(list)-1]
		if in.alive() {
			a.busy++
			return in
		}
		delete(a.all, in.id) // died while idle
		a.closeLater(in)
	}
	return nil
}

// forgetWhenDead drops an instance from the pool once it dies (a crash
// or an OOM kill while idle), so listings and placement stop counting it.
func (a *Agent) forgetWhenDead(k fnKey, in *instance) {
	<-in.dead
	a.mu.Lock()
	if _, ok := a.all[in.id]; !ok {
		a.mu.Unlock()
		return
	}
	delete(a.all, in.id)
	list := a.idle[k]
	for i, x := range list {
		if x == in {
			a.idle[k] = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	a.mu.Unlock()
	in.log.Info("instance exited while idle", "reason", in.deadMsg)
	in.close(context.Background())
	a.notify()
}

func (a *Agent) release(k fnKey, in *instance, healthy bool) {
	a.mu.Lock()
	a.busy--
	if healthy && !a.close {
		in.mu.Lock() // snapshot reads kind under in.mu
		in.kind = api.StartWarm
		in.mu.Unlock()
		a.idle[k] = append(a.idle[k], in)
		// Under a.mu: the freeze is scheduled before any acquire can take
		// the instance, so that taker's thaw always cancels it.
		in.scheduleFreeze(a.freezeAfter)
		a.signalFreedLocked()
		a.mu.Unlock()
		a.notify()
		return
	}
	delete(a.all, in.id)
	a.signalFreedLocked()
	a.mu.Unlock()
	a.closeLater(in)
	a.notify()
}

func newID(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// memoryReader is what a launcher's process may report of its cgroup:
// peak use and OOM kills, read together.
type memoryReader interface {
	Memory() (MemoryUsage, error)
}

// adopt lists a newly started instance as the agent's (unstart ends its
// start's bookkeeping) and watches for its end.
func (a *Agent) adopt(k fnKey, in *instance, unstart func()) {
	a.mu.Lock()
	a.all[in.id] = in
	unstart()
	a.mu.Unlock()
	go a.forgetWhenDead(k, in)
	a.notify()
}

// Invoke runs one invocation of name at version, warm when an idle
// instance waits and cold otherwise. Function errors, timeouts, runtime
// exits and out-of-memory kills come back as a result with FunctionError
// set; a returned error is a platform failure.
func (a *Agent) Invoke(ctx context.Context, name string, version int, reqID string, payload []byte) (*api.InvokeResult, error) {
	if reqID == "" {
		reqID = newID("req")
	}
	fn, err := a.function(ctx, name, version)
	if err != nil {
		return nil, err
	}
	k := fnKey{name, version}
	for attempt := 1; ; attempt++ {
		res := &api.InvokeResult{RequestID: reqID, Function: name, Version: version, Agent: a.name, MemoryMB: fn.MemoryMB}
		in, failed, err := a.instanceFor(ctx, k, fn, res)
		if err != nil || failed != nil {
			return failed, err
		}
		res.Instance = in.id
		if err := in.thaw(ctx); err != nil {
			// Nothing ran: replace the instance and try again.
			a.release(k, in, false)
			if attempt < 3 {
				a.log.Warn("thaw failed; retrying", "instance", in.id, "request_id", reqID, "err", err)
				continue
			}
			return nil, fmt.Errorf("invoke %s (request %s): %w", name, reqID, err)
		}
		mem, _ := in.proc.(memoryReader)
		if mem != nil && !in.oomKnown {
			// Later invocations start from the count read after the last one.
			u, _ := mem.Memory()
			in.oomSeen, in.oomKnown = u.OOMKills, true
		}
		a.platformLog(in, reqID, fmt.Sprintf("START RequestId: %s Version: %d", reqID, version))
		start := time.Now()
		out, err := in.invoke(ctx, reqID, payload, time.Duration(fn.Timeout))
		res.Duration = time.Since(start)
		res.BilledMs = api.BilledMillis(res.Duration)
		oom := false
		if mem != nil {
			u, merr := mem.Memory()
			oom = u.OOMKills > in.oomSeen
			in.oomSeen = u.OOMKills
			if merr == nil {
				res.MaxMemoryMB = int((u.PeakBytes + 1<<20 - 1) >> 20)
			}
		}
		if res.StartKind == api.StartRestore && (errors.Is(err, errNotStarted) || errors.Is(err, errInstanceDead)) && attempt < 3 {
			// A bad snapshot never fails an invocation: discard it, start cold.
			a.restoredFailed(k, err)
			a.release(k, in, false)
			continue
		}
		if errors.Is(err, errNotStarted) && attempt < 3 {
			// The runtime went away before it took the work: nothing ran, try again.
			a.release(k, in, false)
			a.log.Info("instance ended before taking the invocation; retrying", "instance", in.id, "request_id", reqID)
			continue
		}
		a.platformLog(in, reqID, "END RequestId: "+reqID)
		a.platformLog(in, reqID, reportLine(res))
		a.release(k, in, err == nil && !oom)
		switch {
		case oom:
			return a.failed(res, &api.FunctionError{ErrorType: "Runtime.OutOfMemory",
				ErrorMessage: fmt.Sprintf("Runtime exited: out of memory: the function reached its %d MB limit and was killed", fn.MemoryMB)}), nil
		case err == nil && out.kind == api.FrameError:
			res.FunctionError = "Unhandled"
			res.Payload = out.body
		case err == nil:
			res.Payload = out.body
		case errors.Is(err, errTimedOut):
			t := time.Duration(fn.Timeout).Seconds()
			return a.failed(res, &api.FunctionError{ErrorType: "Sandbox.Timedout",
				ErrorMessage: fmt.Sprintf("Task timed out after %.2f seconds", t)}), nil
		case errors.Is(err, errInstanceDead), errors.Is(err, errNotStarted):
			return a.failed(res, &api.FunctionError{ErrorType: "Runtime.ExitError", ErrorMessage: err.Error()}), nil
		default:
			return nil, fmt.Errorf("invoke %s (request %s): %w", name, reqID, err)
		}
		a.log.Debug("invoked", "function", name, "request_id", reqID, "start", res.StartKind, "duration", res.Duration)
		return res, nil
	}
}

// instanceFor finds an idle instance of the version or starts one. An init
// failure is returned as a finished result for the invoker.
func (a *Agent) instanceFor(ctx context.Context, k fnKey, fn *api.Function, res *api.InvokeResult) (*instance, *api.InvokeResult, error) {
	if in, err := a.waitForCap(ctx, k); err != nil || in != nil {
		res.StartKind = api.StartWarm
		return in, nil, err
	}
	// waitForCap counted this start in a.starting: it stays counted until
	// the instance is in a.all or has failed, so a cap is never overrun.
	unstart := func() { a.starting[k.name]-- }
	a.mu.Lock()
	if a.close {
		unstart()
		a.mu.Unlock()
		return nil, nil, fmt.Errorf("agent %s is shutting down: %w", a.name, api.ErrUnavailable)
	}
	a.busy++
	a.mu.Unlock()
	if in := a.tryRestore(ctx, k, fn, res); in != nil {
		a.adopt(k, in, unstart)
		return in, nil, nil
	}
	res.StartKind = api.StartCold
	started := time.Now()
	in, err := startInstance(ctx, instanceConfig{launcher: a.launch, id: newID(fn.Name), fn: fn, agent: a.name,
		initTimeout: a.initWait, log: a.log, logs: a.functionOutput})
	if err != nil {
		a.mu.Lock()
		a.busy--
		unstart()
		a.signalFreedLocked()
		a.mu.Unlock()
		var fe *api.FunctionError
		if errors.As(err, &fe) {
			a.log.Warn("init failed", "function", fn.Name, "request_id", res.RequestID, "error_type", fe.ErrorType)
			res.InitDuration = time.Since(started)
			return nil, a.failed(res, fe), nil
		}
		return nil, nil, err
	}
	a.adopt(k, in, unstart)
	res.InitDuration = in.initTime
	a.afterCold(k, fn, in.initTime)
	return in, nil, nil
}

// platformLog adds a START, END or REPORT line to the function's log.
func (a *Agent) platformLog(in *instance, reqID, text string) {
	a.logs.add(api.LogRecord{Time: time.Now(), Function: in.fn.Name, Version: in.fn.Version, Agent: a.name,
		Instance: in.id, RequestID: reqID, Stream: api.StreamPlatform, Text: text})
}

// reportLine is Lambda's REPORT line for a finished invocation.
func reportLine(r *api.InvokeResult) string {
	line := fmt.Sprintf("REPORT RequestId: %s\tDuration: %.2f ms\tBilled Duration: %d ms\tMemory Size: %d MB\tMax Memory Used: %d MB",
		r.RequestID, float64(r.Duration.Microseconds())/1000, r.BilledMs, r.MemoryMB, r.MaxMemoryMB)
	if r.StartKind == api.StartCold {
		line += fmt.Sprintf("\tInit Duration: %.2f ms", float64(r.InitDuration.Microseconds())/1000)
	}
	if r.StartKind == api.StartRestore {
		line += fmt.Sprintf("\tRestore Duration: %.2f ms", float64(r.RestoreDuration.Microseconds())/1000)
	}
	return line
}

// LogTail returns the last max bytes of one invocation's log lines (its
// START, output, END and REPORT lines, newline-terminated), cut at a line
// or character boundary where it can: what Lambda returns for
// X-Amz-Log-Type: Tail.
func (a *Agent) LogTail(function, reqID string, max int) []byte {
	if reqID == "" || max <= 0 {
		return nil
	}
	a.logs.mu.Lock()
	var picked []string
	size := 0
	if ring := a.logs.fns[function]; ring != nil {
		for i := len(ring.recs) - 1; i >= 0 && size < max; i-- {
			if ring.recs[i].RequestID == reqID {
				picked = append(picked, ring.recs[i].Text)
				size += len(ring.recs[i].Text) + 1
			}
		}
	}
	a.logs.mu.Unlock()
	out := make([]byte, 0, size)
	for i := len(picked) - 1; i >= 0; i-- {
		out = append(out, picked[i]...)
		out = append(out, '\n')
	}
	if len(out) > max {
		out = out[len(out)-max:]
		// Do not start inside a UTF-8 sequence.
		for len(out) > 0 && out[0]&0xC0 == 0x80 {
			out = out[1:]
		}
	}
	return out
}

// Logs returns up to limit of the newest log lines of a function after since.
func (a *Agent) Logs(function string, since time.Time, limit int) []api.LogRecord {
	return a.logs.since(function, since, limit)
}

func (a *Agent) failed(res *api.InvokeResult, fe *api.FunctionError) *api.InvokeResult {
	res.FunctionError = "Unhandled"
	res.Payload = mustJSON(fe)
	if res.BilledMs == 0 {
		res.BilledMs = api.BilledMillis(res.Duration)
	}
	return res
}

// reap retires idle instances unused for longer than the keep-alive.
func (a *Agent) reap(now time.Time) {
	a.mu.Lock()
	var old []*instance
	for k, list := range a.idle {
		keepAlive := a.keepAliveLocked(k.name)
		floor := 0 // the pool's min_warm is never reaped
		if t, ok := a.targets[k.name]; ok && t.Version == k.version {
			floor = t.MinWarm
		}
		keep := list[:0]
		for i, in := range list {
			in.mu.Lock()
			expired := now.Sub(in.lastUsed) > keepAlive && len(list)-i > floor
			in.mu.Unlock()
			if expired {
				old = append(old, in)
				delete(a.all, in.id)
			} else {
				keep = append(keep, in)
			}
		}
		a.idle[k] = keep
	}
	a.mu.Unlock()
	for _, in := range old {
		a.log.Info("keep-alive expired", "instance", in.id)
		a.closeLater(in) // not here: reap runs in the heartbeat loop
	}
}

// closeLater removes an instance in the background. Removing one takes a
// kill, the task's exit and containerd's deletes — up to seconds under
// load — and callers such as the heartbeat loop (reap, setTargets) must
// not wait for it: heartbeats held up for suspectAfter (5 s) by a batch of
// removals made the scheduler take a healthy agent for suspect and refuse
// invocations ("no ready agent"). Shutdown waits for these removals.
func (a *Agent) closeLater(in *instance) {
	a.closingMu.Lock()
	a.closingN++
	a.closingMu.Unlock()
	go func() {
		in.close(context.Background())
		a.closingMu.Lock()
		a.closingN--
		a.closingMu.Unlock()
	}()
}

// waitClosing waits until no instance is being removed in the background,
// for up to a minute.
func (a *Agent) waitClosing() {
	deadline := time.Now().Add(time.Minute)
	for {
		a.closingMu.Lock()
		n := a.closingN
		a.closingMu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			a.log.Warn("instances still being removed at shutdown", "count", n)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Shutdown stops every instance and refuses new invocations.
func (a *Agent) Shutdown(ctx context.Context) {
	a.mu.Lock()
	a.close = true
	a.mu.Unlock()
	a.snaps.stop() // snapshots being taken: stop and remove their instances
	// Invocations in flight finish, until ctx's deadline.
	for {
		a.mu.Lock()
		busy := a.busy
		a.mu.Unlock()
		if busy <= 0 {
			break
		}
		select {
		case <-ctx.Done():
			a.log.Warn("drain deadline passed; stopping instances still busy", "busy", busy)
			busy = 0
		case <-time.After(20 * time.Millisecond):
		}
		if busy == 0 {
			break
		}
	}
	ctx = context.WithoutCancel(ctx)
	a.mu.Lock()
	list := make([]*instance, 0, len(a.all))
	for _, in := range a.all {
		list = append(list, in)
	}
	a.all = map[string]*instance{}
	a.idle = map[fnKey][]*instance{}
	a.mu.Unlock()
	var wg sync.WaitGroup
	for _, in := range list {
		wg.Add(1)
		go func() { defer wg.Done(); in.close(ctx) }()
	}
	wg.Wait()
	a.waitClosing() // instances already being removed in the background
	// Whatever a start cut short by the shutdown left (a container, a
	// network namespace) goes too: a stopped agent leaves nothing behind.
	if c, ok := a.launch.(interface {
		Cleanup(context.Context) (int, error)
	}); ok {
		if n, err := c.Cleanup(ctx); err != nil || n > 0 {
			a.log.Warn("removed leftovers at shutdown", "containers", n, "err", err)
		}
	}
}
