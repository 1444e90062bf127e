// Package localcluster runs the local cluster of `amber up`: a private
// containerd with its own root, state and socket, a scheduler and agents on
// loopback. testenv builds its test harness on it.
package localcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrPrerequisite reports that something the real parts need is missing.
var ErrPrerequisite = errors.New("missing prerequisite")

// Containerd is a private containerd daemon: its own root, state and
// socket under Dir, so it never touches a system daemon.
type Containerd struct {
	Dir     string
	Address string // the gRPC socket
	cmd     *exec.Cmd
	done    chan error
	logFile *os.File
}

const containerdConfig = `version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = %q
[ttrpc]
  address = ""
[debug]
  level = "warn"
`

// CheckContainerd reports what is missing for a private containerd: root,
// the containerd and runc binaries.
func CheckContainerd() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: containerd needs root (running as uid %d)", ErrPrerequisite, os.Geteuid())
	}
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "runc", "unshare", "ip"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%w: %s not on PATH (apt-get install containerd runc iproute2 util-linux)", ErrPrerequisite, bin)
		}
	}
	return nil
}

// StartContainerd starts a private containerd under dir and waits until
// its socket answers. Stop it with Stop.
func StartContainerd(ctx context.Context, dir string) (*Containerd, error) {
	if err := CheckContainerd(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	c := &Containerd{Dir: dir, Address: filepath.Join(dir, "containerd.sock")}
	if len(c.Address) > 100 {
		return nil, fmt.Errorf("containerd socket path %q is too long for a unix socket", c.Address)
	}
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Start starts the daemon on Dir's configuration, root, state and socket
// and waits until its socket answers: StartContainerd's first start, or a
// new daemon after StopDaemon. It reconnects to shims still running.
func (c *Containerd) Start(ctx context.Context) error {
	c.done = make(chan error, 1)
	_ = os.Remove(c.Address)
	cfg := filepath.Join(c.Dir, "config.toml")
	body := fmt.Sprintf(containerdConfig, filepath.Join(c.Dir, "root"), filepath.Join(c.Dir, "state"), c.Address)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		c.done <- err // Stop returns at once
		return err
	}
	var err error
	c.logFile, err = os.OpenFile(filepath.Join(c.Dir, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		c.done <- err
		return err
	}
	c.cmd = exec.Command("containerd", "--config", cfg)
	c.cmd.Stdout, c.cmd.Stderr = c.logFile, c.logFile
	// Its own process group, so a Ctrl-C in the terminal reaches us and we stop it in order.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := c.cmd.Start(); err != nil {
		c.logFile.Close()
		c.done <- err
		return fmt.Errorf("start containerd: %w", err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := net.DialTimeout("unix", c.Address, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			slog.Debug("containerd ready", "address", c.Address)
			return nil
		}
		select {
		case err := <-c.done:
			c.logFile.Close()
			c.done <- err
			return fmt.Errorf("containerd exited at start (%v); see %s", err, c.logFile.Name())
		case <-ctx.Done():
			c.Stop()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.Stop()
			return fmt.Errorf("containerd did not answer on %s within 20s; see %s", c.Address, c.logFile.Name())
		}
	}
}

// StopDaemon stops the daemon alone, as `systemctl restart containerd`
// does: SIGTERM to containerd only (SIGKILL after 10 s), so the shims, and
// so the tasks, keep running. Start starts it again; Stop after
// StopDaemon still kills the shims left behind.
func (c *Containerd) StopDaemon() error {
	if c == nil || c.cmd == nil || c.cmd.Process == nil {
		return errors.New("stop containerd: not started")
	}
	err := c.terminate()
	c.logFile.Close()
	return err
}

// terminate sends SIGTERM to the daemon (SIGKILL after 10 s), waits for
// it, and returns how it exited; a daemon already gone returns at once.
func (c *Containerd) terminate() error {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		err = <-c.done
	}
	c.done <- err // a second call returns at once
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return nil // terminated by our signal
	}
	return err
}

// Stop terminates the daemon (SIGTERM, then SIGKILL after 10 s). Shims of
// tasks still running are left to the caller to clean up first.
func (c *Containerd) Stop() error {
	if c == nil || c.cmd == nil || c.cmd.Process == nil {
		return nil
	}
	err := c.terminate()
	if n := killShims(c.Address); n > 0 {
		fmt.Fprintf(c.logFile, "localcluster: killed %d shim(s) left running after containerd stopped\n", n)
		slog.Warn("killed shims left running after containerd stopped", "count", n, "address", c.Address)
	}
	c.logFile.Close()
	return err
}

// killShims kills containerd-shim processes still serving tasks of the
// daemon at address once it is gone, so a stopped test daemon leaves no
// processes behind. It returns how many it killed.
func killShims(address string) int {
	dirs, _ := os.ReadDir("/proc")
	n := 0
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		for i, a := range args {
			if a == "-address" && i+1 < len(args) && args[i+1] == address {
				if syscall.Kill(pid, syscall.SIGKILL) == nil {
					n++
				}
			}
		}
	}
	return n
}
