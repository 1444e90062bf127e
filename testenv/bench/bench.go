// Package bench holds what amber's benchmarks share: percentiles, the
// in-process Runtime API baseline, a runner for `go test -bench` in a
// package, the machine description and the markdown table of BENCH.md.
// Only tests and benchmarks import it.
package bench

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Percentile returns the p-th percentile (0–100) of ds, sorting it.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[int(float64(len(ds)-1)*p/100)]
}

// Stats is a latency sample's size, p50 and p99.
type Stats struct {
	N        int
	P50, P99 time.Duration
}

// Summarize computes Stats for ds (sorting it).
func Summarize(ds []time.Duration) Stats {
	return Stats{N: len(ds), P50: Percentile(ds, 50), P99: Percentile(ds, 99)}
}

// Ratio is a/b, 0 when b is 0.
func Ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// Dur formats a latency for a table: µs below 1 ms, ms with 3
// significant digits up to 10 s.
func Dur(d time.Duration) string {
	switch {
	case d <= 0:
		return "–"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/1e3)
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	case d < 100*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.0f ms", float64(d)/1e6)
	}
}

// X formats a ratio: "0.76×", "0.0038×", "16.3×".
func X(r float64) string {
	switch {
	case r == 0:
		return "–"
	case r < 0.1:
		return fmt.Sprintf("%.2g×", r)
	case r < 10:
		return fmt.Sprintf("%.2f×", r)
	}
	return fmt.Sprintf("%.1f×", r)
}

// Table is a markdown table.
type Table struct {
	Header []string
	Rows   [][]string
}

// Add appends a row.
func (t *Table) Add(cells ...string) { t.Rows = append(t.Rows, cells) }

// String renders the table in markdown.
func (t *Table) String() string {
	var b strings.Builder
	line := func(cells []string) {
		b.WriteString("|")
		for _, c := range cells {
			b.WriteString(" " + strings.ReplaceAll(c, "|", `\|`) + " |")
		}
		b.WriteString("\n")
	}
	line(t.Header)
	sep := make([]string, len(t.Header))
	for i := range sep {
		sep[i] = "---"
	}
	line(sep)
	for _, r := range t.Rows {
		line(r)
	}
	return b.String()
}
