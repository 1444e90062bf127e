package api

import "time"

// HistoryKeep is how far back the scheduler keeps per-minute history.
const HistoryKeep = 24 * time.Hour

// Counts are a function's invocation counters over some span: one
// minute of history, or since the scheduler started.
type Counts struct {
	Invocations int64 `json:"invocations"`
	Errors      int64 `json:"errors"`
	ColdStarts  int64 `json:"cold_starts"` // cold or restored, as in FunctionStats
	WarmStarts  int64 `json:"warm_starts"`
	Throttles   int64 `json:"throttles"`
}

// Add adds o to c.
func (c *Counts) Add(o Counts) {
	c.Invocations += o.Invocations
	c.Errors += o.Errors
	c.ColdStarts += o.ColdStarts
	c.WarmStarts += o.WarmStarts
	c.Throttles += o.Throttles
}

// Sub subtracts o from c.
func (c *Counts) Sub(o Counts) {
	c.Invocations -= o.Invocations
	c.Errors -= o.Errors
	c.ColdStarts -= o.ColdStarts
	c.WarmStarts -= o.WarmStarts
	c.Throttles -= o.Throttles
}

// CountsOf are the counters of FunctionStats.
func CountsOf(s FunctionStats) Counts {
	return Counts{Invocations: s.Invocations, Errors: s.Errors, ColdStarts: s.ColdStarts, WarmStarts: s.WarmStarts, Throttles: s.Throttles}
}

// MinuteStats is one function's activity in one minute: its counters and
// a latency histogram per start kind (mergeable across minutes).
type MinuteStats struct {
	Minute time.Time `json:"minute"` // the minute's start, UTC
	Counts
	Latency map[StartKind]*Histogram `json:"latency,omitempty"`
}

// FunctionHistory is one function's minutes (oldest first; minutes without
// activity are left out) and, read at the same instant, its counters and
// histograms since the scheduler started: the figures the state stream
// carries in FunctionStatus.Stats and .Latency. Totals minus the minutes
// since a time gives the cumulative figures at that time, which is how a
// client joins history to a live stream without counting anything twice.
type FunctionHistory struct {
	Function string                   `json:"function"`
	Minutes  []MinuteStats            `json:"minutes"`
	Totals   Counts                   `json:"totals"`
	Latency  map[StartKind]*Histogram `json:"latency,omitempty"`
}

// History is the answer of GET /v1/history: every function with activity
// since Since (or one function), in name order.
type History struct {
	Time      time.Time         `json:"time"`  // when it was read
	Since     time.Time         `json:"since"` // the first minute asked for
	Functions []FunctionHistory `json:"functions"`
}
