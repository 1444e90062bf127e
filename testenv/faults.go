package testenv

import (
	"context"
	"fmt"
	"log/slog"
	"time"

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
func RestartScheduler(ctx context.Context, c *Cluster, grace, down time.Duration, opts ...scheduler.Option) error {
	if err := c.StopScheduler(ctx, grace); err != nil {
		return fmt.Errorf("restart scheduler: %w", err)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(down):
	}
	if err := c.StartScheduler(opts...); err != nil {
		return fmt.Errorf("restart scheduler: %w", err)
	}
	return nil
}

// RestartContainerd stops the daemon as `systemctl restart containerd`
// does (SIGTERM to containerd only: the shims, and so the tasks, keep
// running), waits down, and starts it again with the same configuration:
// root, state and socket. The new daemon reconnects to the running shims.
func RestartContainerd(ctx context.Context, c *Containerd, down time.Duration) error {
	if err := c.StopDaemon(); err != nil {
		return fmt.Errorf("restart containerd: %w", err)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(down):
	}
	if err := c.Start(ctx); err != nil {
		return fmt.Errorf("restart containerd: %w", err)
	}
	slog.Debug("containerd restarted", "address", c.Address)
	return nil
}
