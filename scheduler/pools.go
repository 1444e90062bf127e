package scheduler

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/scheduler/internal/placement"
)

// Pool settings live in the function's head key (registry.go); a
// function never tuned has none and the defaults apply.

// Bounds on the wait for a slot under a function's max_instances.
const (
	maxQueued    = 64              // invocations waiting per function
	maxQueueWait = 5 * time.Second // then 429
)

// pool reads a function's settings, from memory; a function never tuned
// (or unknown) has the defaults.
func (r *registry) pool(name string) (api.PoolSettings, error) {
	r.cache.mu.RLock()
	defer r.cache.mu.RUnlock()
	if h := r.cache.heads[name]; h != nil && h.Pool != nil {
		return *h.Pool, nil
	}
	return api.DefaultPool(), nil
}

// setPool stores a function's settings (validated already).
func (r *registry) setPool(name string, p api.PoolSettings) error {
	_, err := r.changePool(name, func(api.PoolSettings) (api.PoolSettings, error) { return p, nil })
	return err
}

// changePool applies change to a function's current settings by
// compare-and-set, so changes from several schedulers at once all land;
// change may refuse with an error (returned as is).
func (r *registry) changePool(name string, change func(api.PoolSettings) (api.PoolSettings, error)) (api.PoolSettings, error) {
	var next api.PoolSettings
	_, err := r.updateHead(name, func(h *fnHead) error {
		cur := api.DefaultPool()
		if h.Pool != nil {
			cur = *h.Pool
		}
		var err error
		if next, err = change(cur); err != nil {
			return err
		}
		h.Pool = &next
		return nil
	})
	return next, err
}

// pools reads every tuned function's settings (for heartbeat replies).
func (r *registry) pools() (map[string]api.PoolSettings, error) {
	r.cache.mu.RLock()
	defer r.cache.mu.RUnlock()
	out := map[string]api.PoolSettings{}
	for name, h := range r.cache.heads {
		if h.Pool != nil {
			out[name] = *h.Pool
		}
	}
	return out, nil
}

// spread divides n among agents: the function's home agent first (the
// rendezvous order placement also uses), one each in turn.
func spread(function string, n int, agents []string) map[string]int {
	out := make(map[string]int, len(agents))
	if len(agents) == 0 {
		return out
	}
	order := slices.Clone(agents)
	slices.SortFunc(order, func(a, b string) int {
		ha, hb := placement.HomeScore(function, a), placement.HomeScore(function, b)
		switch {
		case ha > hb:
			return -1
		case ha < hb:
			return 1
		}
		return strings.Compare(a, b)
	})
	for i := range n {
		out[order[i%len(order)]]++
	}
	return out
}

// readyAgentsLocked lists the agents placement may use.
func (s *Scheduler) readyAgentsLocked() []string {
	var out []string
	for name, e := range s.agents {
		if s.stateLocked(e) == api.AgentReady && !e.unreachable {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// effectiveMinWarm is min_warm, or the recommendation in auto mode.
func (s *Scheduler) effectiveMinWarm(name string, p api.PoolSettings) int {
	if !p.Auto {
		return p.MinWarm
	}
	n := s.recommend(name, p).MinWarm
	if p.MaxInstances > 0 {
		n = min(n, p.MaxInstances)
	}
	return n
}

// capShares is each ready agent's share of a function's max_instances;
// nil when the function has no cap.
func (s *Scheduler) capSharesLocked(name string, p api.PoolSettings) map[string]int {
	if p.MaxInstances == 0 {
		return nil
	}
	return spread(name, p.MaxInstances, s.readyAgentsLocked())
}

// targetsFor is what one agent should keep, for every tuned function.
func (s *Scheduler) targetsFor(agent string) ([]api.PoolTarget, error) {
	pools, err := s.reg.pools()
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(pools))
	for n := range pools {
		names = append(names, n)
	}
	slices.Sort(names)
	targets := []api.PoolTarget{}
	for _, name := range names {
		p := pools[name]
		fn, err := s.reg.latest(name)
		if err != nil {
			continue // deleted
		}
		minWarm := s.effectiveMinWarm(name, p)
		s.mu.Lock()
		ready := s.readyAgentsLocked()
		warm := spread(name, minWarm, ready)
		caps := s.capSharesLocked(name, p)
		s.mu.Unlock()
		t := api.PoolTarget{Function: name, Version: fn.Version, MinWarm: warm[agent], KeepAlive: p.KeepAlive}
		if caps != nil {
			t.MaxInstances = caps[agent]
			if t.MaxInstances == 0 {
				t.MaxInstances = -1 // this agent holds no share of the cap: no new instances
			}
		}
		targets = append(targets, t)
	}
	return targets, nil
}

// poolStatus builds the pool view of one function.
func (s *Scheduler) poolStatus(name string) (*api.PoolStatus, error) {
	p, err := s.reg.pool(name)
	if err != nil {
		return nil, err
	}
	st := &api.PoolStatus{PoolSettings: p, Function: name, EffectiveMinWarm: s.effectiveMinWarm(name, p),
		Recommendation: s.recommend(name, p), Shares: []api.PoolShare{}}
	s.mu.Lock()
	ready := s.readyAgentsLocked()
	warm := spread(name, st.EffectiveMinWarm, ready)
	caps := s.capSharesLocked(name, p)
	for _, a := range ready {
		sh := api.PoolShare{Agent: a, MinWarm: warm[a], MaxInstances: caps[a]}
		for _, in := range s.agents[a].hb.Instances {
			if in.Function != name {
				continue
			}
			switch in.State {
			case api.StateIdle:
				sh.Idle++
			case api.StateBusy:
				sh.Busy++
			}
		}
		st.Shares = append(st.Shares, sh)
	}
	s.mu.Unlock()
	return st, nil
}

func (s *Scheduler) handleGetPool(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, err := s.reg.latest(name); err != nil {
		api.WriteError(w, err)
		return
	}
	st, err := s.poolStatus(name)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, st)
}

// handlePutPool applies a partial change to a function's pool. It takes
// effect at the agents' next heartbeat (within a second): growing starts
// instances, shrinking retires idle ones only.
func (s *Scheduler) handlePutPool(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var change api.PoolChange
	if err := decodeJSON(w, r, 64<<10, &change); err != nil {
		// api.Duration's own decode errors start with "duration": keep_alive is the only one.
		if fe := (*api.FieldError)(nil); errors.As(err, &fe) && fe.Field == "body" && strings.Contains(fe.Reason, ": duration") {
			fe.Field = "keep_alive"
		}
		api.WriteError(w, err)
		return
	}
	// Applied to the stored settings by compare-and-set: a change made at
	// once through another scheduler is not lost.
	next, err := s.reg.changePool(name, func(cur api.PoolSettings) (api.PoolSettings, error) {
		next := change.Apply(cur)
		return next, next.Validate()
	})
	if err != nil {
		api.WriteError(w, err)
		return
	}
	s.event(api.EventPoolChanged, name, "", "pool of %s: min warm %d, max %d, keep-alive %s, auto %v", name, next.MinWarm, next.MaxInstances, next.KeepAlive, next.Auto)
	s.log.Info("pool changed", "function", name, "min_warm", next.MinWarm, "max_instances", next.MaxInstances,
		"keep_alive", next.KeepAlive.String(), "auto", next.Auto)
	st, err := s.poolStatus(name)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, st)
}

// limiter holds a function's invocations to max_instances at once, with
// a bounded queue and a bounded wait.
type limiter struct {
	mu       sync.Mutex
	inflight map[string]int
	waiting  map[string]int
	wake     map[string]chan struct{}
	// The bounds: maxQueued and maxQueueWait, unless a test shortens them.
	maxQueued int
	maxWait   time.Duration
}

func newLimiter() *limiter {
	return &limiter{inflight: map[string]int{}, waiting: map[string]int{}, wake: map[string]chan struct{}{},
		maxQueued: maxQueued, maxWait: maxQueueWait}
}

// admit waits for a slot under max (0: no cap) and returns its release.
func (l *limiter) admit(ctx context.Context, fn string, max int) (func(), time.Duration, error) {
	start := time.Now()
	l.mu.Lock()
	if max <= 0 || l.inflight[fn] < max {
		l.inflight[fn]++
		l.mu.Unlock()
		return l.releaser(fn), 0, nil
	}
	if l.waiting[fn] >= l.maxQueued {
		l.mu.Unlock()
		return nil, 0, fmt.Errorf("function %s is at max_instances %d with %d invocations queued: %w", fn, max, l.maxQueued, api.ErrThrottled)
	}
	l.waiting[fn]++
	defer func() { l.waiting[fn]--; l.mu.Unlock() }()
	timer := time.NewTimer(l.maxWait)
	defer timer.Stop()
	for l.inflight[fn] >= max {
		ch := l.wake[fn]
		if ch == nil {
			ch = make(chan struct{})
			l.wake[fn] = ch
		}
		l.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			l.mu.Lock()
			return nil, time.Since(start), fmt.Errorf("function %s stayed at max_instances %d for %s: %w", fn, max, l.maxWait, api.ErrThrottled)
		case <-ctx.Done():
			l.mu.Lock()
			return nil, time.Since(start), ctx.Err()
		}
		l.mu.Lock()
	}
	l.inflight[fn]++
	return l.releaser(fn), time.Since(start), nil
}

func (l *limiter) releaser(fn string) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			l.inflight[fn]--
			if ch := l.wake[fn]; ch != nil {
				close(ch)
				delete(l.wake, fn)
			}
			l.mu.Unlock()
		})
	}
}

// current is how many invocations of fn are in flight.
func (l *limiter) current(fn string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inflight[fn]
}
