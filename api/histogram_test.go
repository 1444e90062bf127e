package api

import (
	"math"
	"testing"
)

func TestHistogramQuantiles(t *testing.T) {
	tests := []struct {
		name   string
		values []float64
		q      float64
		want   float64
	}{
		{"empty", nil, 0.5, 0},
		{"single", []float64{12}, 0.99, 12},
		{"p50 of 1..100", seq(1, 100), 0.5, 50},
		{"p99 of 1..100", seq(1, 100), 0.99, 99},
		{"tiny values", []float64{0.01, 0.02}, 0.5, 0.02},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Histogram
			for _, v := range tt.values {
				h.Observe(v)
			}
			got := h.Quantile(tt.q)
			if tt.want == 0 && got != 0 || tt.want != 0 && math.Abs(got-tt.want)/tt.want > 0.2 {
				t.Errorf("Quantile(%v) = %v, want %v ±20%%", tt.q, got, tt.want)
			}
		})
	}
}

func TestHistogramMerge(t *testing.T) {
	var a, b, all Histogram
	for i, v := range seq(1, 1000) {
		all.Observe(v)
		if i%2 == 0 {
			a.Observe(v)
		} else {
			b.Observe(v)
		}
	}
	a.Merge(&b)
	if a.Count != all.Count || a.Quantile(0.9) != all.Quantile(0.9) || a.MaxMs != all.MaxMs {
		t.Errorf("merged %+v differs from one histogram of all values", a.Count)
	}
	c := a.Clone()
	c.Observe(5)
	if a.Count == c.Count {
		t.Error("Clone shares counts")
	}
}

func seq(from, to int) []float64 {
	var out []float64
	for i := from; i <= to; i++ {
		out = append(out, float64(i))
	}
	return out
}
