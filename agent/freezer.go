package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// An instance's freezer cgroup. An idle instance is frozen, so whatever
// its function left running after it answered (a goroutine, a background
// shell loop) stops using the CPU until the next invocation thaws it, as
// Lambda freezes its sandboxes between invocations. The whole cgroup is
// frozen: amber-init (PID 1) with the runtime and everything they started.
//
// The agent writes the freezer file itself rather than asking containerd
// to pause the task: both end in the same kernel freezer (runc pause
// writes the same file), but a pause goes agent → containerd → shim →
// a runc process, which costs tens of milliseconds where the write costs
// microseconds to thaw (BENCH.md, BenchmarkFreeze), and runc gives up on a
// freeze that takes a while ("unable to freeze"). containerd does not
// notice: it still lists the task as running. runc reads the freezer and
// takes the container for paused, so it refuses to checkpoint it ("pause
// failed: container not running"): Checkpoint thaws first. Under cgroup
// v1 a frozen task does not die of SIGKILL until thawed: Close thaws first
// too, and so does the sweep of what an earlier run of the agent left.

// Freezer errors.
var (
	// ErrNoFreezer: the instance's freezer cgroup could not be found.
	ErrNoFreezer = errors.New("no freezer cgroup")
	// ErrFreezeTimeout: the cgroup did not reach the frozen state in time
	// (a task stuck in an uninterruptible sleep); it is left thawed.
	ErrFreezeTimeout = errors.New("freezer: cgroup did not freeze in time")
	// ErrNoCPUCgroup: the instance's CPU accounting cgroup was not found.
	ErrNoCPUCgroup = errors.New("no cpu accounting cgroup")
)

// freezeWait bounds how long a freeze waits for every task to stop.
const freezeWait = time.Second

// freezerCgroup is one instance's freezer: the v1 freezer controller's
// folder, or the instance's cgroup2 folder (cgroup.freeze).
type freezerCgroup struct {
	dir string
	v2  bool
}

// findFreezer locates the freezer cgroup of the container id in the
// containerd namespace ns (see findCgroup).
func findFreezer(ns, id string, pid uint32) (freezerCgroup, error) {
	dir, v2, err := findCgroup(ns, id, pid, "freezer")
	if err != nil {
		return freezerCgroup{}, fmt.Errorf("%s/%s: %w: %v", ns, id, ErrNoFreezer, err)
	}
	return freezerCgroup{dir: dir, v2: v2}, nil
}

// control names the file that freezes and thaws, and its two values.
func (f freezerCgroup) control() (file, frozen, thawed string) {
	if f.v2 {
		return "cgroup.freeze", "1", "0"
	}
	return "freezer.state", "FROZEN", "THAWED"
}

// freeze stops every task in the cgroup and returns once all have
// stopped. On a timeout the cgroup is thawed again and ErrFreezeTimeout
// returned.
func (f freezerCgroup) freeze() error {
	if f.dir == "" {
		return ErrNoFreezer
	}
	file, frozen, _ := f.control()
	deadline := time.Now().Add(freezeWait)
	pause := 50 * time.Microsecond
	for {
		// On v1 every write of FROZEN tries again to stop the tasks not yet
		// stopped; on v2 the kernel keeps trying by itself.
		if err := writeCgroupFile(filepath.Join(f.dir, file), frozen); err != nil {
			return fmt.Errorf("freeze: %w", err)
		}
		done, err := f.isFrozen()
		if err != nil {
			return fmt.Errorf("freeze: %w", err)
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			_ = f.thaw()
			return fmt.Errorf("%w (%s)", ErrFreezeTimeout, f.dir)
		}
		time.Sleep(pause)
		pause = min(2*pause, 10*time.Millisecond)
	}
}

// thaw lets the cgroup's tasks run again. Thawing a cgroup that is not
// frozen does nothing.
func (f freezerCgroup) thaw() error {
	if f.dir == "" {
		return ErrNoFreezer
	}
	file, _, thawed := f.control()
	if err := writeCgroupFile(filepath.Join(f.dir, file), thawed); err != nil {
		return fmt.Errorf("thaw: %w", err)
	}
	return nil
}

// isFrozen reports whether every task of the cgroup is stopped (v1:
// freezer.state reads FROZEN, not FREEZING; v2: cgroup.events has
// "frozen 1").
func (f freezerCgroup) isFrozen() (bool, error) {
	if f.v2 {
		b, err := readCgroupFile(filepath.Join(f.dir, "cgroup.events"))
		if err != nil {
			return false, err
		}
		return parseFlatKeyed(b)["frozen"] == 1, nil
	}
	b, err := readCgroupFile(filepath.Join(f.dir, "freezer.state"))
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(b)) == "FROZEN", nil
}

func writeCgroupFile(p, value string) error {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, werr := f.WriteString(value)
	cerr := f.Close()
	return errors.Join(werr, cerr)
}

// InstanceCPU returns the CPU time the container id in the containerd
// namespace ns has used so far, all its processes together (cgroup v1
// cpuacct.usage, v2 cpu.stat usage_usec).
func InstanceCPU(ns, id string) (time.Duration, error) {
	dir, v2, err := findCgroup(ns, id, 0, "cpuacct")
	if err != nil {
		return 0, fmt.Errorf("%s/%s: %w: %v", ns, id, ErrNoCPUCgroup, err)
	}
	return readCPU(dir, v2)
}

func readCPU(dir string, v2 bool) (time.Duration, error) {
	if v2 {
		b, err := readCgroupFile(filepath.Join(dir, "cpu.stat"))
		if err != nil {
			return 0, err
		}
		us, ok := parseFlatKeyed(b)["usage_usec"]
		if !ok {
			return 0, errors.New("cpu.stat: no usage_usec")
		}
		return time.Duration(us) * time.Microsecond, nil
	}
	b, err := readCgroupFile(filepath.Join(dir, "cpuacct.usage"))
	if err != nil {
		return 0, err
	}
	ns, err := parseUintValue(b)
	return time.Duration(ns), err
}

// InstanceFrozen reports whether the container id in the containerd
// namespace ns is frozen.
func InstanceFrozen(ns, id string) (bool, error) {
	f, err := findFreezer(ns, id, 0)
	if err != nil {
		return false, err
	}
	return f.isFrozen()
}
