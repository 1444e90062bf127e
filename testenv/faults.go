package testenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/scheduler"
)

// Fault injection for the reliability tests (testenv/faults_test.go): a
// scheduler restart on the same address and data folder, and a containerd
// restart that keeps its root, state and socket.

// RestartScheduler stops the cluster's scheduler as an operator would
// (its HTTP server shuts down, letting requests in flight finish for up to
// grace; then the Scheduler closes: async deliveries in flight get their
// drain time, the registry and ledger close), waits down, and starts a new
// one on the same address and data folder. Agents find it again with their
// next heartbeat. opts are added to the scheduler's options (a logger).
func (c *Cluster) RestartScheduler(ctx context.Context, grace, down time.Duration, opts ...scheduler.Option) error {
	if len(c.servers) == 0 || len(c.closers) == 0 || c.Scheduler == nil {
		return errors.New("restart scheduler: the cluster has no scheduler")
	}
	// StartCluster serves the scheduler first and registers its Close first.
	srv := c.servers[0]
	sctx, cancel := context.WithTimeout(ctx, grace)
	err := srv.Shutdown(sctx)
	cancel()
	if err != nil {
		_ = srv.Close() // requests still running after the grace period are cut
	}
	if err := c.Scheduler.Close(); err != nil {
		return fmt.Errorf("restart scheduler: close: %w", err)
	}
	c.closers[0] = func() error { return nil }
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(down):
	}
	all := append([]scheduler.Option{
		scheduler.WithDataDir(filepath.Join(c.Dir, "scheduler")),
		scheduler.WithToken(c.Token),
	}, opts...)
	s, err := scheduler.New(all...)
	if err != nil {
		return fmt.Errorf("restart scheduler: %w", err)
	}
	addr := strings.TrimPrefix(c.SchedulerURL, "http://")
	var ln net.Listener
	deadline := time.Now().Add(10 * time.Second)
	for {
		ln, err = net.Listen("tcp", addr)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			_ = s.Close()
			return fmt.Errorf("restart scheduler: listen on %s: %w", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.Scheduler = s
	c.closers[0] = s.Close
	nsrv, _ := api.NewServer(s.Handler(), c.srvOpts...) // checked by StartCluster
	c.servers[0] = nsrv
	go func() { _ = nsrv.Serve(ln) }()
	return nil
}

// Restart stops the daemon as `systemctl restart containerd` does (SIGTERM
// to containerd only: the shims, and so the tasks, keep running), waits
// down, and starts it again with the same configuration: root, state and
// socket. The new daemon reconnects to the running shims.
func (c *Containerd) Restart(ctx context.Context, down time.Duration) error {
	if c == nil || c.cmd == nil || c.cmd.Process == nil {
		return errors.New("restart containerd: not started")
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	c.logFile.Close()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(down):
	}
	n, err := StartContainerd(ctx, c.Dir)
	if err != nil {
		c.done <- err // Stop returns at once
		return fmt.Errorf("restart containerd: %w", err)
	}
	c.cmd, c.done, c.logFile = n.cmd, n.done, n.logFile
	slog.Debug("containerd restarted", "address", c.Address)
	return nil
}
