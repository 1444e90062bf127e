package api

import "time"

// Event kinds.
const (
	EventAgentRegistered = "agent.registered"
	EventAgentState      = "agent.state" // suspect, gone, back
	EventDeployed        = "function.deployed"
	EventDeleted         = "function.deleted"
	EventPoolChanged     = "pool.changed"
	EventInvokeFailed    = "invoke.failed"
	EventThrottled       = "invoke.throttled"
)

// Event is something an operator watching the cluster wants to see.
type Event struct {
	Seq      int64     `json:"seq"`
	Time     time.Time `json:"time"`
	Kind     string    `json:"kind"`
	Function string    `json:"function,omitempty"`
	Agent    string    `json:"agent,omitempty"`
	Message  string    `json:"message"`
}

// StreamMessage is one message of the scheduler's event stream
// (GET /v1/stream, server-sent events): a state snapshot, new events, or both.
type StreamMessage struct {
	State  *ClusterState `json:"state,omitempty"`
	Events []Event       `json:"events,omitempty"`
}
