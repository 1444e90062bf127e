package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoTestHarness guards that the amber binary does not link the test
// harness: `amber up` runs internal/localcluster, never testenv, and
// nothing it imports pulls in package testing.
func TestNoTestHarness(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list -deps listed nothing")
	}
	for _, p := range deps {
		if p == "testing" || strings.HasPrefix(p, "testing/") || p == "github.com/amberfn/amber/testenv" ||
			strings.HasPrefix(p, "github.com/amberfn/amber/testenv/") {
			t.Errorf("cmd/amber depends on %s", p)
		}
	}
}
