package api

import "time"

// Pool limits.
const (
	MaxMinWarm       = 100
	MaxInstancesCap  = 1000
	DefaultKeepAlive = 10 * time.Minute
	MinKeepAlive     = time.Second
	MaxKeepAlive     = 24 * time.Hour
)

// PoolSettings are a function's warm-pool settings. They belong to the
// function, not to a version: changing them never makes a new version.
type PoolSettings struct {
	// MinWarm instances are kept initialised and idle (Lambda's
	// provisioned concurrency); their idle time is billed as warmth.
	MinWarm int `json:"min_warm"`
	// MaxInstances caps concurrent instances (reserved concurrency); 0 is
	// no cap. Invocations beyond it wait in a bounded queue, then get 429.
	MaxInstances int `json:"max_instances"`
	// KeepAlive is how long an idle instance above MinWarm lives.
	KeepAlive Duration `json:"keep_alive"`
	// Auto sizes MinWarm from the recent arrival pattern, up to AutoMax.
	Auto    bool `json:"auto,omitempty"`
	AutoMax int  `json:"auto_max,omitempty"`
}

// DefaultPool is what a function has until an operator tunes it.
func DefaultPool() PoolSettings { return PoolSettings{KeepAlive: Duration(DefaultKeepAlive)} }

// Validate checks the settings and names the first bad field.
func (p *PoolSettings) Validate() error {
	if p.MinWarm < 0 || p.MinWarm > MaxMinWarm {
		return Invalid("min_warm", "%d: want 0–%d", p.MinWarm, MaxMinWarm)
	}
	if p.MaxInstances < 0 || p.MaxInstances > MaxInstancesCap {
		return Invalid("max_instances", "%d: want 0 (no cap) to %d", p.MaxInstances, MaxInstancesCap)
	}
	if p.MaxInstances > 0 && p.MinWarm > p.MaxInstances {
		return Invalid("min_warm", "%d is above max_instances %d", p.MinWarm, p.MaxInstances)
	}
	if k := time.Duration(p.KeepAlive); k < MinKeepAlive || k > MaxKeepAlive {
		return Invalid("keep_alive", "%s: want 1s–24h", k)
	}
	if p.AutoMax < 0 || p.AutoMax > MaxMinWarm {
		return Invalid("auto_max", "%d: want 0–%d", p.AutoMax, MaxMinWarm)
	}
	return nil
}

// PoolChange is a partial update: nil fields stay as they are.
type PoolChange struct {
	MinWarm      *int      `json:"min_warm,omitempty"`
	MaxInstances *int      `json:"max_instances,omitempty"`
	KeepAlive    *Duration `json:"keep_alive,omitempty"`
	Auto         *bool     `json:"auto,omitempty"`
	AutoMax      *int      `json:"auto_max,omitempty"`
}

// Apply returns p with the change applied.
func (c PoolChange) Apply(p PoolSettings) PoolSettings {
	if c.MinWarm != nil {
		p.MinWarm = *c.MinWarm
	}
	if c.MaxInstances != nil {
		p.MaxInstances = *c.MaxInstances
	}
	if c.KeepAlive != nil {
		p.KeepAlive = *c.KeepAlive
	}
	if c.Auto != nil {
		p.Auto = *c.Auto
	}
	if c.AutoMax != nil {
		p.AutoMax = *c.AutoMax
	}
	return p
}

// PoolStatus is a function's pool: its settings, each agent's share of
// the warm instances and of the cap, and the auto-mode recommendation.
type PoolStatus struct {
	PoolSettings
	Function string `json:"function"`
	// EffectiveMinWarm is MinWarm, or the recommendation in auto mode.
	EffectiveMinWarm int                `json:"effective_min_warm"`
	Shares           []PoolShare        `json:"shares"`
	Recommendation   PoolRecommendation `json:"recommendation"`
}

// PoolShare is one agent's part of a function's pool.
type PoolShare struct {
	Agent        string `json:"agent"`
	MinWarm      int    `json:"min_warm"`
	MaxInstances int    `json:"max_instances"` // 0: no cap
	Idle         int    `json:"idle"`
	Busy         int    `json:"busy"`
}

// PoolRecommendation is what auto mode would keep warm, what that costs
// and what it saves, so an operator sees the trade-off before a keystroke.
type PoolRecommendation struct {
	MinWarm                  int     `json:"min_warm"`
	WarmthGBsPerHour         float64 `json:"warmth_gb_s_per_hour"`
	ColdStartsAvoidedPerHour float64 `json:"cold_starts_avoided_per_hour"`
	Reason                   string  `json:"reason"`
}

// PoolTarget tells one agent what to keep for one function version.
type PoolTarget struct {
	Function     string   `json:"function"`
	Version      int      `json:"version"`
	MinWarm      int      `json:"min_warm"`
	MaxInstances int      `json:"max_instances"` // 0: no cap
	KeepAlive    Duration `json:"keep_alive"`
}

// HeartbeatReply is the scheduler's answer to a heartbeat: the pool
// targets of the agent, for every function it should keep something of.
type HeartbeatReply struct {
	Targets []PoolTarget `json:"targets"`
}
