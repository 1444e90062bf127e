package api

import "math"

// Latency histograms use one fixed set of log-scaled buckets, so
// histograms from different agents, functions or periods merge by adding
// counts. Bucket i holds values up to HistBase × HistGrowth^i ms; the last
// bucket holds everything above.
const (
	HistBase    = 0.05 // ms, upper bound of bucket 0
	HistBuckets = 100  // 0.05 ms … about 10 minutes
)

// HistGrowth is the ratio between neighbouring bucket bounds (2^(1/4):
// about 19% apart, so a quantile read from the buckets is within ±10%).
var HistGrowth = math.Pow(2, 0.25)

// Histogram counts latencies in milliseconds.
type Histogram struct {
	Counts []int64 `json:"counts"` // HistBuckets long, or empty
	Count  int64   `json:"count"`
	SumMs  float64 `json:"sum_ms"`
	MaxMs  float64 `json:"max_ms"`
}

// BucketBound is the upper bound of bucket i in ms.
func BucketBound(i int) float64 { return HistBase * math.Pow(HistGrowth, float64(i)) }

func bucketOf(ms float64) int {
	if ms <= HistBase {
		return 0
	}
	i := int(math.Ceil(math.Log(ms/HistBase) / math.Log(HistGrowth)))
	return min(max(i, 0), HistBuckets-1)
}

// Observe adds one value.
func (h *Histogram) Observe(ms float64) {
	if len(h.Counts) != HistBuckets {
		h.Counts = make([]int64, HistBuckets)
	}
	h.Counts[bucketOf(ms)]++
	h.Count++
	h.SumMs += ms
	h.MaxMs = max(h.MaxMs, ms)
}

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.Count == 0 {
		return
	}
	if len(h.Counts) != HistBuckets {
		h.Counts = make([]int64, HistBuckets)
	}
	for i, c := range o.Counts {
		h.Counts[i] += c
	}
	h.Count += o.Count
	h.SumMs += o.SumMs
	h.MaxMs = max(h.MaxMs, o.MaxMs)
}

// Quantile returns the upper bound of the bucket holding quantile q
// (0 < q ≤ 1), capped at the largest value seen; 0 when empty.
func (h *Histogram) Quantile(q float64) float64 {
	if h == nil || h.Count == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(h.Count)))
	var seen int64
	for i, c := range h.Counts {
		seen += c
		if seen >= rank {
			return min(BucketBound(i), h.MaxMs)
		}
	}
	return h.MaxMs
}

// Clone returns a deep copy.
func (h *Histogram) Clone() *Histogram {
	if h == nil {
		return nil
	}
	c := *h
	c.Counts = append([]int64(nil), h.Counts...)
	return &c
}
