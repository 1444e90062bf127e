package tui

import (
	"math"
	"testing"
	"time"
)

func TestFormatBytes(t *testing.T) {
	tests := []struct {
		in   uint64
		want string
	}{
		{0, "0 B"},
		{1023, "1023 B"},
		{1024, "1 KB"},
		{mib - 1, "1023 KB"},
		{mib, "1 MB"},
		{512 * mib, "512 MB"},
		{gib - 1, "1023 MB"},
		{gib, "1.0 GB"},
		{3 * gib / 2, "1.5 GB"},
		{16 * gib, "16.0 GB"},
		{tib, "1.0 TB"},
	}
	for _, tt := range tests {
		if got := formatBytes(tt.in); got != tt.want {
			t.Errorf("formatBytes(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFormatMem(t *testing.T) {
	tests := []struct {
		used, total uint64
		want        string
	}{
		{0, 0, "-"},
		{512 * mib, 2 * gib, "512 MB/2.0 GB"},
		{3 * gib, 8 * gib, "3.0 GB/8.0 GB"},
	}
	for _, tt := range tests {
		if got := formatMem(tt.used, tt.total); got != tt.want {
			t.Errorf("formatMem(%d, %d) = %q, want %q", tt.used, tt.total, got, tt.want)
		}
	}
}

func TestFormatPercent(t *testing.T) {
	tests := []struct {
		in   float64
		want string
	}{
		{0, "0.0%"},
		{12.345, "12.3%"},
		{99.96, "100.0%"},
		{100, "100.0%"},
		{-1, "-"},
		{math.NaN(), "-"},
		{math.Inf(1), "-"},
	}
	for _, tt := range tests {
		if got := formatPercent(tt.in); got != tt.want {
			t.Errorf("formatPercent(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFormatLoadMBSecondsCount(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"load", formatLoad(0.4234), "0.42"},
		{"load negative", formatLoad(-1), "-"},
		{"mb", formatMB(128), "128 MB"},
		{"mb zero", formatMB(0), "0 MB"},
		{"mb negative", formatMB(-1), "-"},
		{"seconds zero", formatSeconds(0), "-"},
		{"seconds ms", formatSeconds(500 * time.Millisecond), "500ms"},
		{"seconds whole", formatSeconds(30 * time.Second), "30s"},
		{"seconds minutes", formatSeconds(15 * time.Minute), "15m"},
		{"seconds fraction", formatSeconds(2500 * time.Millisecond), "2.5s"},
		{"count small", formatCount(99_999), "99999"},
		{"count k", formatCount(123_456), "123k"},
		{"count M", formatCount(4_560_000), "4.6M"},
		{"count G", formatCount(1_200_000_000), "1.2G"},
		{"count negative", formatCount(-5), "-"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}
