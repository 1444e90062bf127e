// Package testenv brings up real parts for tests and for `amber up`: a
// private containerd with its own root, state and socket, function images
// built from the examples, a scheduler and agents on loopback.
package testenv

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
	c := &Containerd{Dir: dir, Address: filepath.Join(dir, "containerd.sock"), done: make(chan error, 1)}
	if len(c.Address) > 100 {
		return nil, fmt.Errorf("containerd socket path %q is too long for a unix socket", c.Address)
	}
	_ = os.Remove(c.Address)
	cfg := filepath.Join(dir, "config.toml")
	body := fmt.Sprintf(containerdConfig, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.Address)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		return nil, err
	}
	c.logFile, err = os.OpenFile(filepath.Join(dir, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	c.cmd = exec.Command("containerd", "--config", cfg)
	c.cmd.Stdout, c.cmd.Stderr = c.logFile, c.logFile
	// Its own process group, so a Ctrl-C in the terminal reaches us and we stop it in order.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := c.cmd.Start(); err != nil {
		c.logFile.Close()
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := net.DialTimeout("unix", c.Address, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			slog.Debug("containerd ready", "address", c.Address)
			return c, nil
		}
		select {
		case err := <-c.done:
			c.logFile.Close()
			return nil, fmt.Errorf("containerd exited at start (%v); see %s", err, c.logFile.Name())
		case <-ctx.Done():
			c.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.Stop()
			return nil, fmt.Errorf("containerd did not answer on %s within 20s; see %s", c.Address, c.logFile.Name())
		}
	}
}

// Stop terminates the daemon (SIGTERM, then SIGKILL after 10 s). Shims of
// tasks still running are left to the caller to clean up first.
func (c *Containerd) Stop() error {
	if c == nil || c.cmd == nil || c.cmd.Process == nil {
		return nil
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		err = <-c.done
	}
	c.done <- err // a second Stop returns at once
	if n := killShims(c.Address); n > 0 {
		fmt.Fprintf(c.logFile, "testenv: killed %d shim(s) left running after containerd stopped\n", n)
		slog.Warn("killed shims left running after containerd stopped", "count", n, "address", c.Address)
	}
	c.logFile.Close()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return nil // terminated by our signal
	}
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
