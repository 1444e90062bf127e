//go:build unix

package tui

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time (user and system) the test process has used:
// on a machine shared with other work, what a benchmark costs shows here
// better than in wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
