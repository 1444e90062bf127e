// Package api holds amber's wire types, the agent–init framing and the Go
// clients shared by the scheduler, the agent, the console and amber-init.
// It is the one source of truth for the JSON on the wire and imports the
// standard library only, because amber-init links it.
package api

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// StartKind says how the instance that served an invocation came to be.
type StartKind string

const (
	StartWarm    StartKind = "warm"    // an idle instance was waiting
	StartRestore StartKind = "restore" // restored from a snapshot
	StartCold    StartKind = "cold"    // created and initialised
)

// InstanceState is the lifecycle state of one function instance.
type InstanceState string

const (
	StateCreating     InstanceState = "creating"
	StateInitializing InstanceState = "initializing"
	StateIdle         InstanceState = "idle"
	StateBusy         InstanceState = "busy"
	StateDraining     InstanceState = "draining"
	StateGone         InstanceState = "gone"
	StateInitFailed   InstanceState = "init-failed"
)

// AgentState is the scheduler's view of an agent's health.
type AgentState string

const (
	AgentReady   AgentState = "ready"
	AgentSuspect AgentState = "suspect"
	AgentGone    AgentState = "gone"
	// AgentDraining takes no new placements; work in flight finishes.
	AgentDraining AgentState = "draining"
)

// Duration is a time.Duration that travels as a Go duration string ("30s").
type Duration time.Duration

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a string such as "3s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON accepts a duration string ("3s") or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("duration: want a string like \"30s\", got %s", b)
	}
	*d = Duration(n)
	return nil
}

// FunctionSpec is what an operator deploys.
type FunctionSpec struct {
	Name string `json:"name"`
	// Image is what instances run: the digest of an uploaded archive in
	// the scheduler's store ("sha256:<hex>"), or a registry reference
	// pinned to its manifest digest ("host/repo@sha256:<hex>"). A deploy
	// may send a tag ("host/repo:tag"): the scheduler resolves and pins it.
	Image string `json:"image"`
	// ImageRef is the registry reference as the operator gave it
	// ("host/repo:tag"), kept for people; set by the scheduler when empty.
	ImageRef string            `json:"image_ref,omitempty"`
	MemoryMB int               `json:"memory_mb"`
	Timeout  Duration          `json:"timeout"`
	Env      map[string]string `json:"env,omitempty"`
}

// Function is one deployed version of a function as the registry keeps it.
type Function struct {
	FunctionSpec
	Version   int       `json:"version"`
	UpdatedAt time.Time `json:"updated_at"`
}

// FunctionStats are the scheduler's running counters for a function.
type FunctionStats struct {
	Invocations int64 `json:"invocations"`
	Errors      int64 `json:"errors"`
	ColdStarts  int64 `json:"cold_starts"` // invocations that started an instance: cold, or restored from a snapshot
	WarmStarts  int64 `json:"warm_starts"`
	Throttles   int64 `json:"throttles"`     // 429s at max_instances
	QueueWaitMs int64 `json:"queue_wait_ms"` // total wait for a slot under max_instances
	// WarmHitRatio is the share of invocations that found a warm instance.
	WarmHitRatio float64 `json:"warm_hit_ratio"`
	// ColdStartsPerMinute over the last five minutes.
	ColdStartsPerMinute float64 `json:"cold_starts_per_minute"`
	// IdleInstanceSeconds is instance time spent idle (warmth), from heartbeats.
	IdleInstanceSeconds float64   `json:"idle_instance_seconds"`
	BilledMs            int64     `json:"billed_ms"`  // sum of billed durations
	GBSeconds           float64   `json:"gb_seconds"` // sum of billed duration × memory
	LastStartKind       StartKind `json:"last_start_kind,omitempty"`
	LastInvokedAt       time.Time `json:"last_invoked_at,omitzero"`
}

// FunctionStatus is a function with its live instances and counters, as
// listed by `amber ls` and shown by the console.
type FunctionStatus struct {
	Function
	Instances []Instance    `json:"instances"`
	Stats     FunctionStats `json:"stats"`
	Pool      PoolStatus    `json:"pool"`
	// Latency holds, per start kind, the latency the scheduler saw from
	// admission to the answer, in log-scaled buckets (mergeable).
	Latency map[StartKind]*Histogram `json:"latency"`
}

// Instance is one running function instance on an agent.
type Instance struct {
	ID          string        `json:"id"`
	Function    string        `json:"function"`
	Version     int           `json:"version"`
	Agent       string        `json:"agent"`
	State       InstanceState `json:"state"`
	StartKind   StartKind     `json:"start_kind"`
	CreatedAt   time.Time     `json:"created_at"`
	LastUsedAt  time.Time     `json:"last_used_at,omitzero"`
	Invocations int64         `json:"invocations"`
	MemoryMB    int           `json:"memory_mb"`
	MaxMemoryMB int           `json:"max_memory_mb"` // peak use, from the instance's cgroup
	// Frozen: the instance is idle and its processes are stopped by the
	// cgroup freezer until an invocation takes it (State stays idle).
	Frozen bool `json:"frozen,omitempty"`
	// CPUMs is the CPU time the instance's processes have used, from its
	// cgroup (0 when unknown).
	CPUMs int64  `json:"cpu_ms,omitempty"`
	Error string `json:"error,omitempty"`
	// Snapshot is how this agent starts new instances of the function
	// version, and why: "restore 95 ms < init 1520 ms", "cold: init 80 ms <
	// restore 300 ms", "no CRIU: <reason>" …
	Snapshot string `json:"snapshot,omitempty"`
}

// NodeStats are an agent's host figures, read with gopsutil.
type NodeStats struct {
	CPUPercent    float64 `json:"cpu_percent"`
	MemUsedBytes  uint64  `json:"mem_used_bytes"`
	MemTotalBytes uint64  `json:"mem_total_bytes"`
	Load1         float64 `json:"load1"`
}

// Heartbeat is what an agent sends the scheduler every interval. The first
// one registers the agent.
type Heartbeat struct {
	Name       string     `json:"name"`
	URL        string     `json:"url"` // where the scheduler reaches the agent's API
	CapacityMB int        `json:"capacity_mb"`
	Stats      NodeStats  `json:"stats"`
	Instances  []Instance `json:"instances"`
	// ShuttingDown is set by an agent that is stopping: no new work is
	// placed on it while it finishes what it holds. A restarted agent's
	// heartbeats no longer carry it.
	ShuttingDown bool `json:"shutting_down,omitempty"`
	// Snapshots are the function versions this agent holds a snapshot of
	// and would restore new instances from (placement prefers them).
	Snapshots []SnapshotRef `json:"snapshots,omitempty"`
}

// SnapshotRef names a function version an agent can restore.
type SnapshotRef struct {
	Function string `json:"function"`
	Version  int    `json:"version"`
}

// AgentStatus is the scheduler's view of one agent.
type AgentStatus struct {
	Heartbeat
	State      AgentState `json:"state"`
	LastSeen   time.Time  `json:"last_seen"`
	ReservedMB int        `json:"reserved_mb"` // memory held by invocations in flight and instances
}

// ClusterState is the whole picture the console draws.
type ClusterState struct {
	Time      time.Time        `json:"time"`
	Agents    []AgentStatus    `json:"agents"`
	Functions []FunctionStatus `json:"functions"`
}

// FunctionError is the Lambda error shape a runtime reports, and the shape
// amber uses for platform-made errors an invoker should see (timeouts,
// init failures, runtime exits).
type FunctionError struct {
	ErrorMessage string   `json:"errorMessage"`
	ErrorType    string   `json:"errorType"`
	StackTrace   []string `json:"stackTrace,omitempty"`
}

func (e *FunctionError) Error() string { return e.ErrorType + ": " + e.ErrorMessage }

// InvokeResult describes one finished invocation. Its Payload is the
// function's response, or the FunctionError JSON when FunctionError is set.
type InvokeResult struct {
	RequestID    string
	Function     string
	Version      int
	Agent        string
	Instance     string
	StartKind    StartKind
	InitDuration time.Duration // cold start: until the runtime's first /next
	// RestoreDuration is a restored start's time to restore the instance
	// from its snapshot (StartRestore only).
	RestoreDuration time.Duration
	Duration        time.Duration // the invocation itself
	BilledMs        int64         // Duration rounded up to whole milliseconds
	MemoryMB        int
	MaxMemoryMB     int    // peak memory of the instance so far (its cgroup)
	FunctionError   string // "" on success, else "Unhandled" (the Lambda header value)
	Payload         []byte
}

// GBSeconds is the invocation's billed compute: billed time × memory.
func (r *InvokeResult) GBSeconds() float64 {
	return float64(r.BilledMs) / 1000 * float64(r.MemoryMB) / 1024
}

// BilledMillis rounds a duration up to whole milliseconds (at least 1).
func BilledMillis(d time.Duration) int64 {
	ms := int64((d + time.Millisecond - 1) / time.Millisecond)
	if ms < 1 {
		ms = 1
	}
	return ms
}

// ErrorBody is the JSON every API error carries.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail names the problem: Code is stable for scripts, Message is
// for people, Field names the offending input field when there is one.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// Log streams of a LogRecord.
const (
	StreamStdout   = "stdout"
	StreamStderr   = "stderr"
	StreamPlatform = "platform" // START, END and REPORT lines
)

// LogRecord is one line of a function's log: the runtime's output, or a
// platform line (START, END, REPORT) as Lambda writes them.
type LogRecord struct {
	Time      time.Time `json:"time"`
	Function  string    `json:"function"`
	Version   int       `json:"version"`
	Agent     string    `json:"agent"`
	Instance  string    `json:"instance"`
	RequestID string    `json:"request_id,omitempty"`
	Stream    string    `json:"stream"`
	Text      string    `json:"text"`
}

// Bounds on a logs request (GET /v1/functions/{name}/logs?limit=N), the
// same on the scheduler, the agents and the command line. An agent keeps
// at most MaxLogLines records per function, so no agent could answer more.
const (
	DefaultLogLines = 200
	MaxLogLines     = 2000
)

// ParseLogLimit reads a logs request's limit: "" is DefaultLogLines; a
// value that is not 1–MaxLogLines is refused naming the limit.
func ParseLogLimit(v string) (int, error) {
	if v == "" {
		return DefaultLogLines, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxLogLines {
		return 0, Invalid("limit", "%q: want 1–%d lines (the most an agent keeps per function)", v, MaxLogLines)
	}
	return n, nil
}

// MaxAsyncPayload is Lambda's limit for an asynchronous (Event) payload.
const MaxAsyncPayload = 256 << 10

// AsyncAttempt is one failed delivery of an asynchronous event.
type AsyncAttempt struct {
	At        time.Time `json:"at"`
	RequestID string    `json:"request_id,omitempty"`
	Agent     string    `json:"agent,omitempty"`
	Error     string    `json:"error"`
}

// AsyncAccepted is the scheduler's 202 reply to an Event invocation.
type AsyncAccepted struct {
	EventID string `json:"event_id"`
}

// AsyncConfig is a function's asynchronous-invocation setting.
type AsyncConfig struct {
	// MaxRetries after the first failed delivery (default 2, at most 10).
	MaxRetries int `json:"max_retries"`
}

// DeadLetter is an asynchronous event that failed every attempt.
type DeadLetter struct {
	EventID    string          `json:"event_id"`
	Function   string          `json:"function"`
	Version    int             `json:"version"`
	Payload    json.RawMessage `json:"payload,omitempty"`
	EnqueuedAt time.Time       `json:"enqueued_at"`
	DeadAt     time.Time       `json:"dead_at"`
	Source     string          `json:"source,omitempty"`
	Attempts   []AsyncAttempt  `json:"attempts"`
}

// AsyncStatus is a function's async setting with its queue figures.
type AsyncStatus struct {
	Function string `json:"function"`
	AsyncConfig
	Pending     int `json:"pending"`
	DeadLetters int `json:"dead_letters"`
}

// Schedule is a function's cron trigger: a 5-field cron expression or a
// rate(), evaluated in UTC. Each fire queues an async event carrying an
// EventBridge "Scheduled Event".
type Schedule struct {
	Function    string    `json:"function"`
	Expression  string    `json:"expression"`
	CreatedAt   time.Time `json:"created_at"`
	NextAt      time.Time `json:"next_at"`
	LastFiredAt time.Time `json:"last_fired_at,omitzero"`
	Fired       int64     `json:"fired"`
}

// LedgerRecord is the scheduler's durable record of one finished
// invocation, from the agent's metering (the Amber-* result headers).
type LedgerRecord struct {
	Time       time.Time `json:"time"`
	RequestID  string    `json:"request_id"`
	Function   string    `json:"function"`
	Version    int       `json:"version"`
	Agent      string    `json:"agent,omitempty"`
	Source     string    `json:"source"` // sync, event, schedule
	StartKind  StartKind `json:"start_kind,omitempty"`
	DurationUs int64     `json:"duration_us"`
	BilledMs   int64     `json:"billed_ms"`
	MemoryMB   int       `json:"memory_mb"`
	GBSeconds  float64   `json:"gb_seconds"`
	Error      bool      `json:"error,omitempty"`
}

// Prices are what the bill charges; the defaults are AWS Lambda's
// published x86 prices.
type Prices struct {
	PerGBSecond        float64 `json:"per_gb_second"`        // compute
	PerMillionRequests float64 `json:"per_million_requests"` // requests
	WarmthPerGBSecond  float64 `json:"warmth_per_gb_second"` // provisioned warmth (idle instances of min_warm functions)
	FreeTier           bool    `json:"free_tier"`            // apply the monthly free tier
	FreeGBSeconds      float64 `json:"free_gb_seconds"`      // per calendar month (UTC)
	FreeRequests       int64   `json:"free_requests"`        // per calendar month (UTC)
}

// DefaultPrices are AWS Lambda's x86 prices (us-east-1) with the free tier off.
func DefaultPrices() Prices {
	return Prices{
		PerGBSecond: 0.0000166667, PerMillionRequests: 0.20, WarmthPerGBSecond: 0.0000041667,
		FreeGBSeconds: 400_000, FreeRequests: 1_000_000,
	}
}

// Usage is what a function used in a period, with its cost.
type Usage struct {
	Period          time.Time `json:"period,omitzero"` // start of the hour or day (UTC); zero in per-function totals
	Function        string    `json:"function,omitempty"`
	Requests        int64     `json:"requests"`
	Errors          int64     `json:"errors"`
	ColdStarts      int64     `json:"cold_starts"`
	BilledMs        int64     `json:"billed_ms"`
	GBSeconds       float64   `json:"gb_seconds"`
	WarmthSeconds   float64   `json:"warmth_seconds"`    // idle instance time billed as warmth
	WarmthGBSeconds float64   `json:"warmth_gb_seconds"` // that time × memory
	RequestCost     float64   `json:"request_cost"`
	ComputeCost     float64   `json:"compute_cost"`
	WarmthCost      float64   `json:"warmth_cost"`
	Cost            float64   `json:"cost"` // USD
}

// Add adds o's quantities and costs to u (Period and Function stay u's).
func (u *Usage) Add(o Usage) {
	u.Requests += o.Requests
	u.Errors += o.Errors
	u.ColdStarts += o.ColdStarts
	u.BilledMs += o.BilledMs
	u.GBSeconds += o.GBSeconds
	u.WarmthSeconds += o.WarmthSeconds
	u.WarmthGBSeconds += o.WarmthGBSeconds
	u.RequestCost += o.RequestCost
	u.ComputeCost += o.ComputeCost
	u.WarmthCost += o.WarmthCost
	u.Cost += o.Cost
}

// Price sets u's costs from its quantities at prices p (no free tier).
func (u *Usage) Price(p Prices) {
	u.RequestCost = float64(u.Requests) * p.PerMillionRequests / 1e6
	u.ComputeCost = u.GBSeconds * p.PerGBSecond
	u.WarmthCost = u.WarmthGBSeconds * p.WarmthPerGBSecond
	u.Cost = u.RequestCost + u.ComputeCost + u.WarmthCost
}

// WarmPoolCost is what a function's min_warm instances cost per hour.
type WarmPoolCost struct {
	Function    string  `json:"function"`
	MinWarm     int     `json:"min_warm"`
	MemoryMB    int     `json:"memory_mb"`
	CostPerHour float64 `json:"cost_per_hour"`
}

// Bill is the ledger aggregated over [Since, Until) (whole UTC hours).
type Bill struct {
	Since     time.Time `json:"since"`
	Until     time.Time `json:"until"`
	By        string    `json:"by,omitempty"` // "hour", "day" or "" (totals only)
	Prices    Prices    `json:"prices"`
	Periods   []Usage   `json:"periods,omitempty"` // per period and function, by period then function
	Functions []Usage   `json:"functions"`         // per function over the whole range
	Totals    Usage     `json:"totals"`            // Cost is after the free tier
	// FreeTierGBSeconds and FreeTierRequests are the free tier used in the range.
	FreeTierGBSeconds float64 `json:"free_tier_gb_seconds,omitempty"`
	FreeTierRequests  int64   `json:"free_tier_requests,omitempty"`
	FreeTierDiscount  float64 `json:"free_tier_discount,omitempty"`
	// WarmPoolsCostPerHour is what the current warm pools cost per hour:
	// the sum of min_warm × memory GB × 3600 × the warmth price.
	WarmPoolsCostPerHour float64        `json:"warm_pools_cost_per_hour"`
	WarmPools            []WarmPoolCost `json:"warm_pools"`
}

// ContentTypeNDJSON is newline-delimited JSON: a deploy by registry
// reference asked with "Accept: application/x-ndjson" streams
// DeployProgress lines while an agent pre-pulls the image.
const ContentTypeNDJSON = "application/x-ndjson"

// PullRequest asks an agent to pull a pinned registry reference
// (POST /v1/images/pull on the agent).
type PullRequest struct {
	Image string `json:"image"` // "host/repo@sha256:<hex>"
}

// PullProgress is one line of an agent's pull stream: progress (Status,
// Bytes of Total fetched so far), then a last line with Done or Error.
type PullProgress struct {
	Status string `json:"status,omitempty"`
	Bytes  int64  `json:"bytes,omitempty"`
	Total  int64  `json:"total,omitempty"`
	Done   bool   `json:"done,omitempty"`
	Error  string `json:"error,omitempty"`
}

// DeployProgress is one line of a streamed deploy: pull progress, then a
// last line with the deployed Function (Created when a new version was
// stored) or the Failure and the HTTP status it would have had.
type DeployProgress struct {
	Status   string       `json:"status,omitempty"`
	Bytes    int64        `json:"bytes,omitempty"`
	Total    int64        `json:"total,omitempty"`
	Function *Function    `json:"function,omitempty"`
	Created  bool         `json:"created,omitempty"`
	Failure  *ErrorDetail `json:"failure,omitempty"`
	HTTPCode int          `json:"http_status,omitempty"`
}

// ControlPlane is one scheduler's view of the engine under the control
// plane, NATS JetStream. GET /v1/cluster
type ControlPlane struct {
	// Scheduler is this scheduler's id (unique per process).
	Scheduler string `json:"scheduler"`
	// Embedded is true when the scheduler runs its own NATS node.
	Embedded bool `json:"embedded"`
	// Server and Cluster name the NATS server this scheduler uses and its
	// cluster ("" for a lone node).
	Server  string `json:"server"`
	Cluster string `json:"cluster,omitempty"`
	// MetaLeader is JetStream's meta leader; "" means no quorum: writes
	// are refused until one is elected.
	MetaLeader string `json:"meta_leader"`
	// Peers is how many other NATS servers this node has routes to;
	// OfflinePeers are the meta group's members it sees offline or behind.
	Peers        int      `json:"peers"`
	OfflinePeers []string `json:"offline_peers"`
	// Replicas is how many copies every stream and bucket keeps.
	Replicas int    `json:"replicas"`
	Streams  int    `json:"streams"`
	Bytes    uint64 `json:"bytes"`
}
