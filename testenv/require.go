package testenv

import (
	"os"
	"testing"
)

// InCI reports whether the tests run under CI, where a missing
// prerequisite is a failure rather than a skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Require skips the test with reason when err is not nil, or fails it
// under CI=true: integration tests never silently pass in CI.
func Require(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if InCI() {
		t.Fatalf("integration prerequisite missing under CI=true: %v", err)
	}
	t.Skipf("skipping integration test: %v (run as root with containerd and runc installed, see README)", err)
}

// NewContainerd starts a private containerd for the test and stops it
// when the test ends, even when it fails.
func NewContainerd(t testing.TB) *Containerd {
	t.Helper()
	Require(t, CheckContainerd())
	dir, err := os.MkdirTemp("", "amber-ctd-")
	if err != nil {
		t.Fatal(err)
	}
	c, err := StartContainerd(t.Context(), dir)
	if err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stop containerd: %v", err)
		}
		if !t.Failed() {
			os.RemoveAll(dir)
		}
	})
	return c
}
