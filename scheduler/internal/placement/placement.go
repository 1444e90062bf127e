// Package placement is how the scheduler chooses an agent for an
// invocation (Place) and how its auto mode sizes a warm pool (Recommend):
// pure functions over values, shared by the scheduler and its simulator
// (scheduler/sim), which replays the very rules the scheduler runs.
package placement

import (
	"fmt"
	"hash/fnv"

	"github.com/amberfn/amber/api"
)

// Candidate is one agent as placement sees it: a pure value built from the
// membership table, so placement is tested over in-memory state alone.
type Candidate struct {
	Name       string
	State      api.AgentState
	CapacityMB int
	ReservedMB int // memory held by invocations in flight on this agent
	// IdleInstances is how many idle instances of the requested function
	// version the agent's last heartbeat showed, minus those the scheduler
	// has handed out since that heartbeat.
	IdleInstances int
	// AtCap is set when the agent already runs its share of the function's
	// max_instances: it may take the invocation only on an idle instance.
	AtCap bool
	// Snapshot is set when the agent holds a snapshot of the version and
	// would restore a new instance from it.
	Snapshot bool
}

// FreeMB is the memory left for new invocations.
func (c Candidate) FreeMB() int { return c.CapacityMB - c.ReservedMB }

// Request is what is being placed.
type Request struct {
	Function string
	Version  int
	MemoryMB int
	// Exclude names agents not to use (they refused a connection for this
	// request already).
	Exclude map[string]bool
}

// Placement reasons.
const (
	ReasonIdleInstance = "idle-instance" // an idle warm instance is waiting there
	ReasonSnapshot     = "snapshot"      // it restores the version from a snapshot it holds
	ReasonFreeMemory   = "free-memory"   // the ready agent with the most free memory
)

// Placement is where an invocation goes, and why.
type Placement struct {
	Agent  string
	Reason string
}

// Place picks an agent for req among cands:
//
//  1. a ready agent with an unclaimed idle instance of the function version
//     (the most unclaimed idle instances first; its memory is already
//     allocated, so no free memory is required);
//  2. else a ready agent holding a snapshot of the version, with at least
//     req.MemoryMB free (the most free memory first);
//  3. else the ready agent with the most free memory, if it has at least
//     req.MemoryMB free.
//
// Ties go to the function's home agent: the highest rendezvous hash of
// (function, agent), which is stable for a function and moves only the
// functions homed on an agent when that agent joins or leaves. Suspect and
// gone agents are never chosen. It returns an error wrapping
// api.ErrUnavailable when no agent fits.
func Place(req Request, cands []Candidate) (Placement, error) {
	// rank orders the reasons: 0 idle instance, 1 snapshot, 2 free memory.
	reasons := [...]string{ReasonIdleInstance, ReasonSnapshot, ReasonFreeMemory}
	var best *Candidate
	bestRank := 0
	better := func(c *Candidate, rank int) bool {
		if best == nil {
			return true
		}
		if rank != bestRank {
			return rank < bestRank
		}
		if rank == 0 && c.IdleInstances != best.IdleInstances {
			return c.IdleInstances > best.IdleInstances
		}
		if c.FreeMB() != best.FreeMB() {
			return c.FreeMB() > best.FreeMB()
		}
		return HomeScore(req.Function, c.Name) > HomeScore(req.Function, best.Name)
	}
	for i := range cands {
		c := &cands[i]
		if c.State != api.AgentReady || req.Exclude[c.Name] {
			continue
		}
		var rank int
		switch {
		case c.IdleInstances > 0:
			rank = 0
		case c.AtCap || c.FreeMB() < req.MemoryMB:
			continue
		case c.Snapshot:
			rank = 1
		default:
			rank = 2
		}
		if better(c, rank) {
			best, bestRank = c, rank
		}
	}
	if best == nil {
		return Placement{}, fmt.Errorf("no ready agent with %d MB free for function %s: %w", req.MemoryMB, req.Function, api.ErrUnavailable)
	}
	return Placement{Agent: best.Name, Reason: reasons[bestRank]}, nil
}

// HomeScore is the rendezvous (highest random weight) hash of a function on
// an agent: the agent with the highest score is the function's home.
func HomeScore(function, agent string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(function))
	h.Write([]byte{0})
	h.Write([]byte(agent))
	// fnv's low bits mix poorly for short inputs; finish with a 64-bit mixer.
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// Home is function's home among agents: the one with the highest
// HomeScore ("" when there are none).
func Home(function string, agents ...string) string {
	best := ""
	for _, a := range agents {
		if best == "" || HomeScore(function, a) > HomeScore(function, best) {
			best = a
		}
	}
	return best
}
