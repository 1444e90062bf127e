package testenv

import (
	"context"
	"fmt"
	"os"
	"runtime"

	"github.com/amberfn/amber/snapshots"
)

// CheckCRIU reports whether snapshots can work here: root, containerd
// and a CRIU that .ci/install-deps sets up (criu >= 4.2 on PATH whose
// `criu check` passes).
func CheckCRIU() error {
	if err := CheckContainerd(); err != nil {
		return err
	}
	if _, err := snapshots.Probe(context.Background()); err != nil {
		return fmt.Errorf("%w: %v", ErrPrerequisite, err)
	}
	return nil
}

// CRIUExpected says whether .ci/install-deps is meant to make CRIU work
// on this machine: on x86_64 unless AMBER_NO_CRIU=1. Where it is not,
// snapshot tests skip even under CI=true.
func CRIUExpected() bool {
	return runtime.GOARCH == "amd64" && os.Getenv("AMBER_NO_CRIU") != "1"
}
