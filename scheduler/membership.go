package scheduler

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/scheduler/internal/placement"
)

// fnKey names one function version.
type fnKey struct {
	name    string
	version int
}

// agentEntry is the scheduler's in-memory record of one agent. All fields
// are guarded by Scheduler.mu.
type agentEntry struct {
	hb       api.Heartbeat
	lastSeen time.Time
	// unreachable is set when a connection to the agent was refused; the
	// agent is not placed on again until its next heartbeat.
	unreachable bool
	reservedMB  int
	// gen counts heartbeats; claims counts, per function version, the
	// invocations handed out since heartbeat gen (they may be using idle
	// instances that heartbeat still showed as idle).
	gen    uint64
	claims map[fnKey]int
	idle   map[fnKey]int  // idle instances in the last heartbeat
	snaps  map[fnKey]bool // versions it restores from a snapshot (last heartbeat)
	// inflight counts this agent's invocations in flight, per function.
	inflight map[string]int
}

// reservation is one invocation's hold on an agent, released when it ends.
type reservation struct {
	agent    string
	key      fnKey
	memoryMB int
	gen      uint64
	claimed  bool
}

// validateHeartbeat checks what an agent sent.
func validateHeartbeat(hb *api.Heartbeat) error {
	if err := api.ValidateName("name", hb.Name); err != nil {
		return err
	}
	u, err := url.Parse(hb.URL)
	if err != nil {
		return api.Invalid("url", "%q: %v", hb.URL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return api.Invalid("url", "%q: want http://HOST:PORT or https://HOST:PORT", hb.URL)
	}
	if hb.CapacityMB < 0 {
		return api.Invalid("capacity_mb", "%d: want >= 0", hb.CapacityMB)
	}
	return nil
}

// heartbeat records an agent's heartbeat, registering it on the first one.
// The scheduler the agent sent it to bills the warmth it reports (idle
// instances since the previous heartbeat); one relayed from another
// scheduler (heartbeatRelayed) updates membership only, so warmth goes to
// the shared ledger once.
func (s *Scheduler) heartbeat(hb api.Heartbeat) error { return s.applyHeartbeat(hb, true) }

// heartbeatRelayed applies a heartbeat another scheduler received.
func (s *Scheduler) heartbeatRelayed(hb api.Heartbeat) error { return s.applyHeartbeat(hb, false) }

func (s *Scheduler) applyHeartbeat(hb api.Heartbeat, direct bool) error {
	if err := validateHeartbeat(&hb); err != nil {
		return err
	}
	hb.URL = strings.TrimRight(hb.URL, "/")
	idle := map[fnKey]int{}
	for i := range hb.Instances {
		in := &hb.Instances[i]
		if in.Agent == "" {
			in.Agent = hb.Name
		}
		if in.State == api.StateIdle {
			idle[fnKey{in.Function, in.Version}]++
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.agents[hb.Name]
	if !ok {
		e = &agentEntry{inflight: map[string]int{}}
		s.agents[hb.Name] = e
		s.log.Info("agent registered", "agent", hb.Name, "url", hb.URL, "capacity_mb", hb.CapacityMB)
		s.event(api.EventAgentRegistered, "", hb.Name, "agent %s registered at %s with %d MB", hb.Name, hb.URL, hb.CapacityMB)
	} else if st := s.stateLocked(e); st != api.AgentReady {
		s.log.Info("agent back", "agent", hb.Name, "was", string(st))
	}
	if ok {
		s.recordIdleLocked(e.hb.Instances, s.now().Sub(e.lastSeen), direct)
	}
	e.hb = hb
	e.lastSeen = s.now()
	e.unreachable = false
	e.gen++
	e.claims = map[fnKey]int{}
	e.idle = idle
	e.snaps = map[fnKey]bool{}
	for _, sr := range hb.Snapshots {
		e.snaps[fnKey{sr.Function, sr.Version}] = true
	}
	return nil
}

// stateLocked is an agent's state by the age of its last heartbeat.
func (s *Scheduler) stateLocked(e *agentEntry) api.AgentState {
	age := s.now().Sub(e.lastSeen)
	switch {
	case age >= s.goneAfter:
		return api.AgentGone
	case age >= s.suspectAfter || e.unreachable:
		return api.AgentSuspect
	case s.drains[e.hb.Name] || e.hb.ShuttingDown:
		return api.AgentDraining
	default:
		return api.AgentReady
	}
}

// forgetLocked drops agents gone for longer than forgetAfter, unless an
// invocation still holds a reservation on them.
func (s *Scheduler) forgetLocked() {
	now := s.now()
	for name, e := range s.agents {
		if now.Sub(e.lastSeen) >= s.goneAfter+s.forgetAfter && e.reservedMB == 0 {
			s.log.Info("agent forgotten", "agent", name, "last_seen", e.lastSeen)
			delete(s.agents, name)
		}
	}
}

// agentStatuses returns every known agent, sorted by name.
func (s *Scheduler) agentStatuses() []api.AgentStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forgetLocked()
	out := make([]api.AgentStatus, 0, len(s.agents))
	for _, e := range s.agents {
		hb := e.hb
		hb.Instances = slices.Clone(hb.Instances)
		if hb.Instances == nil {
			hb.Instances = []api.Instance{}
		}
		out = append(out, api.AgentStatus{
			Heartbeat:  hb,
			State:      s.stateLocked(e),
			LastSeen:   e.lastSeen,
			ReservedMB: e.reservedMB,
		})
	}
	slices.SortFunc(out, func(a, b api.AgentStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// instancesByFunction gathers the instances in the last heartbeats of
// ready and suspect agents, by function name.
func (s *Scheduler) instancesByFunction() map[string][]api.Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]api.Instance{}
	for _, e := range s.agents {
		if s.stateLocked(e) == api.AgentGone {
			continue
		}
		for _, in := range e.hb.Instances {
			out[in.Function] = append(out[in.Function], in)
		}
	}
	for _, list := range out {
		slices.SortFunc(list, func(a, b api.Instance) int {
			if c := strings.Compare(a.Agent, b.Agent); c != 0 {
				return c
			}
			return strings.Compare(a.ID, b.ID)
		})
	}
	return out
}

// candidatesLocked builds placement's view of the agents for one function
// version, sorted by name.
func (s *Scheduler) candidatesLocked(k fnKey, caps map[string]int) []placement.Candidate {
	out := make([]placement.Candidate, 0, len(s.agents))
	for name, e := range s.agents {
		capN, capped := caps[name]
		out = append(out, placement.Candidate{
			Name:          name,
			State:         s.stateLocked(e),
			CapacityMB:    e.hb.CapacityMB,
			ReservedMB:    e.reservedMB,
			IdleInstances: max(0, e.idle[k]-e.claims[k]),
			AtCap:         caps != nil && (!capped || e.inflight[k.name] >= capN),
			Snapshot:      e.snaps[k],
		})
	}
	slices.SortFunc(out, func(a, b placement.Candidate) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// reserve places one invocation of fn and holds the agent's memory (and
// an idle instance, when placed on one) until release. It returns the
// reservation and the agent's URL. pool is the function's pool, which the
// caller has read already to admit the invocation.
func (s *Scheduler) reserve(fn *api.Function, pool api.PoolSettings, exclude map[string]bool) (reservation, string, placement.Placement, error) {
	k := fnKey{fn.Name, fn.Version}
	s.mu.Lock()
	defer s.mu.Unlock()
	caps := s.capSharesLocked(fn.Name, pool)
	p, err := placement.Place(placement.Request{Function: fn.Name, Version: fn.Version, MemoryMB: fn.MemoryMB, Exclude: exclude}, s.candidatesLocked(k, caps))
	if err != nil {
		return reservation{}, "", placement.Placement{}, err
	}
	e := s.agents[p.Agent]
	r := reservation{agent: p.Agent, key: k, memoryMB: fn.MemoryMB, gen: e.gen, claimed: p.Reason == placement.ReasonIdleInstance}
	e.reservedMB += r.memoryMB
	e.inflight[k.name]++
	if r.claimed {
		e.claims[k]++
	}
	return r, e.hb.URL, p, nil
}

// release ends a reservation.
func (s *Scheduler) release(r reservation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.agents[r.agent]
	if !ok {
		return
	}
	e.reservedMB -= r.memoryMB
	e.inflight[r.key.name]--
	// The instance is idle again; if a heartbeat came in meanwhile, the
	// claims were reset with it and there is nothing to give back.
	if r.claimed && r.gen == e.gen && e.claims[r.key] > 0 {
		e.claims[r.key]--
	}
}

// markUnreachable keeps an agent out of placement until its next heartbeat.
func (s *Scheduler) markUnreachable(agent string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.agents[agent]; ok {
		e.unreachable = true
	}
}

// handleDrain stops (POST …/drain) or resumes (DELETE …/drain) new
// placements on an agent; invocations in flight finish either way.
func (s *Scheduler) handleDrain(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	drain := r.Method == http.MethodPost
	s.mu.Lock()
	_, known := s.agents[name]
	s.mu.Unlock()
	if !known && drain {
		api.WriteError(w, fmt.Errorf("agent %q %w", name, api.ErrNotFound))
		return
	}
	// On disk first: an acknowledged drain survives a scheduler restart.
	if err := s.reg.setDrain(name, drain); err != nil {
		api.WriteError(w, fmt.Errorf("agent %q: record the drain: %w", name, err))
		return
	}
	s.mu.Lock()
	if drain {
		s.drains[name] = true
	} else {
		delete(s.drains, name)
	}
	inflight := 0
	if e, ok := s.agents[name]; ok {
		for _, n := range e.inflight {
			inflight += n
		}
	}
	s.mu.Unlock()
	verb := "resumed"
	if drain {
		verb = "draining"
	}
	s.event(api.EventAgentState, "", name, "agent %s %s (%d invocations in flight)", name, verb, inflight)
	s.log.Info("agent drain", "agent", name, "draining", drain, "inflight", inflight)
	api.WriteJSON(w, http.StatusOK, map[string]any{"agent": name, "draining": drain, "inflight": inflight})
}
