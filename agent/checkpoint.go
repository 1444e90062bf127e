package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/runtime/v2/runc/options"

	"github.com/amberfn/amber/snapshots"
)

// criuConfigAnnotation names a CRIU config file that runc passes to criu
// on checkpoint and restore. containerd has no restore option for
// tcp-established, and the runtime's open /next connection needs it.
const criuConfigAnnotation = "org.criu.config"

func criuConfigFile(stateDir string) string { return filepath.Join(stateDir, "criu.conf") }

func (c *Containerd) criuConfigPath() string { return criuConfigFile(c.stateDir) }

// writeCRIUConfig writes the CRIU config file instances name in their
// annotation, once, before any instance can read it.
func writeCRIUConfig(stateDir string) error {
	p := criuConfigFile(stateDir)
	body := []byte("tcp-established\n")
	if b, err := os.ReadFile(p); err == nil && string(b) == string(body) {
		return nil
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, body, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// withRestore creates the task from the CRIU image in dir (runc restore
// on Start), with CRIU's work files (restore.log) in work.
func withRestore(dir, work string) containerd.NewTaskOpts {
	return func(ctx context.Context, c *containerd.Client, ti *containerd.TaskInfo) error {
		if err := os.MkdirAll(work, 0o700); err != nil {
			return err
		}
		if err := containerd.WithRestoreImagePath(dir)(ctx, c, ti); err != nil {
			return err
		}
		opts, ok := ti.Options.(*options.Options)
		if !ok {
			return fmt.Errorf("restore: runtime %s does not take runc options", ti.Runtime())
		}
		opts.CriuWorkPath = work
		return nil
	}
}

// canSnapshot: containerd instances can be checkpointed and restored.
func (c *Containerd) canSnapshot() bool { return true }

// SnapshotDir is where the agent keeps its snapshots.
func (c *Containerd) snapshotDir() string { return filepath.Join(c.stateDir, "snapshots") }

// Checkpoint dumps the instance with CRIU into imagePath and stops it
// (containerd pauses the task, runc runs criu dump, the task exits).
// Loopback TCP connections are dumped as they are (OpenTcp). CRIU's log
// goes to dump.log in a "work" folder next to imagePath.
func (p *ctrProcess) Checkpoint(ctx context.Context, imagePath string) error {
	if p.task == nil {
		return fmt.Errorf("checkpoint %s: no task", p.id)
	}
	work := filepath.Join(filepath.Dir(imagePath), "work")
	if err := os.MkdirAll(work, 0o700); err != nil {
		return err
	}
	// A snapshot's instance is never in a pool and so never frozen; if one
	// were, thaw it: runc takes a frozen container for paused and refuses
	// to checkpoint it ("pause failed: container not running"); CRIU
	// freezes the cgroup itself for the dump.
	if p.frz.dir != "" {
		if frozen, _ := p.frz.isFrozen(); frozen {
			if err := p.frz.thaw(); err != nil {
				return fmt.Errorf("checkpoint %s: %w", p.id, err)
			}
		}
	}
	_, err := p.task.Checkpoint(p.c.ctx(ctx), func(r *containerd.CheckpointTaskInfo) error {
		r.Options = &options.CheckpointOptions{Exit: true, OpenTcp: true, ImagePath: imagePath, WorkPath: work}
		return nil
	})
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", p.id, p.c.criuFailure("dump", work, "dump.log", err))
	}
	return nil
}

// criuFailure is err with CRIU's one-line cause, and the path of its
// full log (name in the work folder dir), copied under the agent's state
// so it outlives the work folder.
func (c *Containerd) criuFailure(op, dir, name string, err error) error {
	return snapshots.KeepLog(op, filepath.Join(dir, name), filepath.Join(c.stateDir, "criu-logs"), strings.TrimSuffix(name, ".log"), err)
}

// snapshotUser: where criu lacks CAP_SYS_RESOURCE (some sandboxes drop
// it from the bounding set) it cannot read the rlimits of a process of
// another uid ("Can't get rlimit 0: Operation not permitted"), so an
// instance to be checkpointed, and the instances restored from it, run
// as uid 0 — the function with every capability set empty, as for an
// image that names root, and amber-init, which is root anyway, guarded as
// ever. Elsewhere they run as every instance does (amber-init as root,
// the function as its user).
func (c *Containerd) snapshotUser() []oci.SpecOpts {
	if hasCapSysResource() {
		return nil
	}
	return []oci.SpecOpts{oci.WithUIDGID(0, 0)}
}

// hasCapSysResource reports whether this process (and so containerd's
// runc and criu, when they run with the agent's capabilities) holds
// CAP_SYS_RESOURCE in its bounding set.
func hasCapSysResource() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return true
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapBnd:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err != nil || n&(1<<24) != 0
		}
	}
	return true
}
