package tui

import (
	"github.com/amberfn/amber/api"
)

// Cost math. With the scheduler's bill API the console shows the ledger's
// figures; without it (or when it fails) it estimates from the running
// counters of the cluster state at the default (AWS Lambda x86) prices,
// and says so.

// usageEstimate is what a function used since the scheduler started,
// estimated from its counters.
func usageEstimate(f api.FunctionStatus, p api.Prices) api.Usage {
	u := api.Usage{
		Function:   f.Name,
		Requests:   f.Stats.Invocations,
		Errors:     f.Stats.Errors,
		ColdStarts: f.Stats.ColdStarts,
		BilledMs:   f.Stats.BilledMs,
		GBSeconds:  f.Stats.GBSeconds,
	}
	// Warmth is billed for idle time of functions that keep a warm pool.
	if f.Pool.MinWarm > 0 || f.Pool.EffectiveMinWarm > 0 {
		u.WarmthSeconds = f.Stats.IdleInstanceSeconds
		u.WarmthGBSeconds = f.Stats.IdleInstanceSeconds * memGB(f.MemoryMB)
	}
	u.Price(p)
	return u
}

func memGB(mb int) float64 { return float64(mb) / 1024 }

// warmCostPerHour is what keeping n instances of mb MB warm costs an hour.
func warmCostPerHour(n, mb int, p api.Prices) float64 {
	return float64(n) * memGB(mb) * 3600 * p.WarmthPerGBSecond
}

// poolCostPerHour is what a function's current warm pool costs an hour.
func poolCostPerHour(f api.FunctionStatus, p api.Prices) float64 {
	return warmCostPerHour(f.Pool.EffectiveMinWarm, f.MemoryMB, p)
}

// recCostPerHour is what auto mode's recommendation costs an hour.
func recCostPerHour(r api.PoolRecommendation, p api.Prices) float64 {
	return r.WarmthGBsPerHour * p.WarmthPerGBSecond
}

// estimateTotals estimates every function's usage and their sum.
func estimateTotals(st *api.ClusterState, p api.Prices) (per []api.Usage, total api.Usage) {
	if st == nil {
		return nil, total
	}
	for _, f := range st.Functions {
		u := usageEstimate(f, p)
		per = append(per, u)
		total.Add(u)
	}
	return per, total
}
