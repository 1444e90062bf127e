package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

func TestScheduleDLQBillCommands(t *testing.T) {
	amber := cli(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bootstrap"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "fn.tar")
	if _, _, err := amber("build", dir, "-o", img); err != nil {
		t.Fatal(err)
	}
	if _, _, err := amber("deploy", "fn", "--image", img); err != nil {
		t.Fatal(err)
	}

	// schedule
	if _, _, err := amber("schedule", "fn", "0 25 * * *"); err == nil || !strings.Contains(err.Error(), "hour field") {
		t.Fatalf("bad expression: %v", err)
	}
	out, _, err := amber("schedule", "fn", "*/5 * * * *")
	if err != nil || !strings.Contains(out, "fn: */5 * * * *, next at") {
		t.Fatalf("schedule: %q %v", out, err)
	}
	out, _, err = amber("schedule", "fn", "rate(5", "minutes)") // unquoted words are joined
	if err != nil || !strings.Contains(out, "rate(5 minutes)") {
		t.Fatalf("schedule rate: %q %v", out, err)
	}
	out, _, err = amber("schedule")
	if err != nil || !strings.Contains(out, "FUNCTION") || !strings.Contains(out, "rate(5 minutes)") {
		t.Fatalf("schedule list: %q %v", out, err)
	}
	if out, _, err = amber("schedule", "fn", "--off"); err != nil || !strings.Contains(out, "removed") {
		t.Fatalf("schedule --off: %q %v", out, err)
	}
	if _, _, err = amber("schedule", "fn", "--off"); err == nil {
		t.Fatal("second --off: no error")
	}

	// dlq: with no agent and no retries, an event dead-letters at once.
	if out, _, err = amber("dlq"); err != nil || !strings.Contains(out, "no dead letters") {
		t.Fatalf("empty dlq: %q %v", out, err)
	}
	c := client()
	ctx := context.Background()
	if _, err := c.SetAsync(ctx, "fn", api.AsyncConfig{MaxRetries: 0}); err != nil {
		t.Fatal(err)
	}
	id, err := c.InvokeAsync(ctx, "fn", []byte(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _, err = amber("dlq", "fn")
		if err == nil && strings.Contains(out, id) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dlq fn: %q %v", out, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(out, "1 attempts") || !strings.Contains(out, "#1 ") || !strings.Contains(out, "no ready agent") || !strings.Contains(out, `payload {"a":1}`) {
		t.Fatalf("dlq output:\n%s", out)
	}

	// bill
	if _, _, err := amber("pool", "fn", "--min-warm", "2"); err != nil {
		t.Fatal(err)
	}
	out, _, err = amber("bill", "--since", "24h", "--by", "day")
	if err != nil {
		t.Fatalf("bill: %v", err)
	}
	for _, want := range []string{"DAY", "FUNCTION", "REQUESTS", "COMPUTE GB-s", "WARMTH GB-s", "COST $", "TOTAL", "per GB-s", "warm pools now: $0.0038 per hour", "fn 2 × 128 MB"} {
		if !strings.Contains(out, want) {
			t.Errorf("bill output lacks %q:\n%s", want, out)
		}
	}
	if _, _, err := amber("bill", "--by", "week"); err == nil || !strings.Contains(err.Error(), "by") {
		t.Errorf("bill --by week: %v", err)
	}
	if _, _, err := amber("bill", "--since", "yesterday"); err == nil || !strings.Contains(err.Error(), "since") {
		t.Errorf("bill --since yesterday: %v", err)
	}
}
