package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/amberfn/amber/api"
)

// capWait bounds how long an invocation waits for an instance when the
// function is at this agent's share of max_instances.
const capWait = 5 * time.Second

// setTargets takes the scheduler's pool targets. A function absent from
// them has no warm pool, no cap and the agent's default keep-alive. When a
// target shrinks, idle instances above it are retired at once; busy ones
// are never touched.
func (a *Agent) setTargets(targets []api.PoolTarget) {
	next := make(map[string]api.PoolTarget, len(targets))
	for _, t := range targets {
		next[t.Function] = t
	}
	a.mu.Lock()
	var retire []*instance
	for name, old := range a.targets {
		nt := next[name]
		if nt.MinWarm >= old.MinWarm {
			continue
		}
		k := fnKey{name, old.Version}
		list := a.idle[k]
		for extra := len(list) - nt.MinWarm; extra > 0 && len(list) > 0; extra-- {
			in := list[0] // least recently used first
			list = list[1:]
			delete(a.all, in.id)
			retire = append(retire, in)
		}
		a.idle[k] = list
	}
	a.targets = next
	a.mu.Unlock()
	for _, in := range retire {
		a.log.Info("pool shrunk: retiring idle instance", "instance", in.id)
		a.closeLater(in) // setTargets runs in the heartbeat loop
	}
	if len(retire) > 0 {
		a.notify()
	}
}

// keepAliveFor is the idle lifetime of a function's instances.
func (a *Agent) keepAliveLocked(function string) time.Duration {
	if t, ok := a.targets[function]; ok && t.KeepAlive > 0 {
		return time.Duration(t.KeepAlive)
	}
	return a.keepAlive
}

// countLocked is how many instances of a function this agent holds or is
// starting, and how many of the version are idle or being warmed.
func (a *Agent) countLocked(k fnKey) (total, idleOrWarming int) {
	for _, in := range a.all {
		if in.fn.Name == k.name {
			total++
		}
	}
	for wk, n := range a.warming {
		if wk.name == k.name {
			total += n
		}
	}
	total += a.starting[k.name]
	return total, len(a.idle[k]) + a.warming[k]
}

// reconcile starts instances until each target's idle count is reached,
// within the function's share of max_instances.
func (a *Agent) reconcile(ctx context.Context) {
	a.mu.Lock()
	if a.close {
		a.mu.Unlock()
		return
	}
	type job struct {
		k fnKey
		n int
	}
	var jobs []job
	for name, t := range a.targets {
		if t.MinWarm <= 0 {
			continue
		}
		k := fnKey{name, t.Version}
		total, ready := a.countLocked(k)
		need := t.MinWarm - ready
		if t.MaxInstances != 0 {
			need = min(need, max(0, t.MaxInstances-total))
		}
		if need > 0 {
			a.warming[k] += need
			jobs = append(jobs, job{k, need})
		}
	}
	a.mu.Unlock()
	for _, j := range jobs {
		for range j.n {
			go a.prewarm(ctx, j.k)
		}
	}
}

// prewarm starts one instance for the pool and parks it idle.
func (a *Agent) prewarm(ctx context.Context, k fnKey) {
	done := func() {
		a.mu.Lock()
		a.warming[k]--
		a.mu.Unlock()
	}
	fn, err := a.function(ctx, k.name, k.version)
	if err != nil {
		done()
		a.log.Warn("prewarm: function", "function", k.name, "version", k.version, "err", err)
		return
	}
	// Refill by restoring where that is faster than init, as invocations do.
	in := a.tryRestore(ctx, k, fn, &api.InvokeResult{})
	if in == nil {
		var err error
		in, err = startInstance(ctx, instanceConfig{launcher: a.launch, id: newID(fn.Name), fn: fn, agent: a.name,
			initTimeout: a.initWait, log: a.log, logs: a.functionOutput})
		if err != nil {
			done()
			a.log.Warn("prewarm failed", "function", k.name, "version", k.version, "err", err)
			return
		}
		a.afterCold(k, fn, in.initTime)
	}
	kind := in.kind // before the instance is shared
	in.mu.Lock()
	in.lastUsed = time.Now()
	in.mu.Unlock()
	a.mu.Lock()
	a.warming[k]--
	if a.close {
		a.mu.Unlock()
		in.close(context.Background())
		return
	}
	a.all[in.id] = in
	a.idle[k] = append([]*instance{in}, a.idle[k]...) // least recently used end
	in.scheduleFreeze(a.freezeAfter)                  // under a.mu, as in release
	a.mu.Unlock()
	go a.forgetWhenDead(k, in)
	a.log.Info("prewarmed", "function", k.name, "version", k.version, "instance", in.id, "start", kind, "init", in.initTime)
	a.notify()
}

// waitForCap blocks while the function is at this agent's share of
// max_instances and no idle instance of the version is free. It returns
// an idle instance when one comes back, nil when a new instance may be
// started, or an error wrapping api.ErrThrottled after capWait.
func (a *Agent) waitForCap(ctx context.Context, k fnKey) (*instance, error) {
	deadline := time.NewTimer(capWait)
	defer deadline.Stop()
	for {
		if in := a.acquire(k); in != nil {
			return in, nil
		}
		a.mu.Lock()
		t, ok := a.targets[k.name]
		total, _ := a.countLocked(k)
		if !ok || t.MaxInstances == 0 || (t.MaxInstances > 0 && total < t.MaxInstances) {
			a.starting[k.name]++ // counted until instanceFor has it in a.all
			a.mu.Unlock()
			return nil, nil
		}
		freed := a.freed
		a.mu.Unlock()
		select {
		case <-freed:
		case <-deadline.C:
			return nil, fmt.Errorf("function %s is at this agent's share of max_instances (%d): %w", k.name, max(0, t.MaxInstances), api.ErrThrottled)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// signalFreed wakes invocations waiting for an instance (a.mu held).
func (a *Agent) signalFreedLocked() {
	close(a.freed)
	a.freed = make(chan struct{})
}
