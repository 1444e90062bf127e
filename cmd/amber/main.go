// Command amber is the one operator binary: it runs the scheduler, an
// agent or a whole local cluster, and talks to a running cluster.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/snapshots"
)

const usage = `amber: a self-hosted function cluster

usage:
  amber up [--agents N] [--schedulers N] [--data DIR] [--no-console]
                                                      local cluster; writes DIR/env
  amber build DIR -o IMAGE.tar                        OCI image archive from DIR/bootstrap
  amber deploy NAME --image IMAGE.tar [--memory MB] [--timeout DURATION] [--env K=V ...]
  amber invoke NAME [--data JSON | --data @FILE]
  amber ls [-o json]
  amber logs NAME [-f] [--since DURATION] [-n N]
  amber pool NAME [--min-warm N] [--max N] [--keep-alive DURATION] [--auto on|off] [--auto-max N]
  amber schedule NAME "EXPR" | NAME --off            cron trigger: "*/5 * * * *" (UTC) or "rate(5 minutes)"
  amber dlq [NAME] [-o json]                          async events that failed every attempt
  amber bill [--since 24h] [--until T] [--by hour|day] requests, GB-s, warmth and cost per function
  amber console [--read-only]
  amber scheduler [flags]
  amber agent [flags]
  amber install agent|scheduler [--dry-run]           systemd units; amber uninstall agent|scheduler
  amber doctor                                        can this node run amber? one line per check
  amber agent drain NAME | undrain NAME               stop / resume new placements on an agent

Client commands find the scheduler through AMBER_SCHEDULER (default
http://127.0.0.1:7700; several schedulers comma-separated, the next one
tried when one cannot be reached) and authenticate with AMBER_TOKEN.
`

// exitError carries a specific exit status out of a command.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var ee exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		os.Exit(ee.code)
	case errors.Is(err, errUsage):
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "amber:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "up":
		return cmdUp(ctx, rest, stdout, stderr)
	case "build":
		return cmdBuild(rest, stdout)
	case "deploy":
		return cmdDeploy(ctx, rest, stdout)
	case "invoke":
		return cmdInvoke(ctx, rest, stdout, stderr)
	case "ls":
		return cmdLs(ctx, rest, stdout)
	case "logs":
		return cmdLogs(ctx, rest, stdout)
	case "pool":
		return cmdPool(ctx, rest, stdout)
	case "dlq":
		return cmdDLQ(ctx, rest, stdout)
	case "schedule":
		return cmdSchedule(ctx, rest, stdout)
	case "bill":
		return cmdBill(ctx, rest, stdout)
	case "console":
		return cmdConsole(ctx, rest)
	case "scheduler":
		return cmdScheduler(ctx, rest, stderr)
	case "agent":
		return cmdAgent(ctx, rest, stderr)
	case "install":
		return cmdInstall(rest, stdout)
	case "uninstall":
		return cmdUninstall(rest, stdout)
	case "doctor":
		return cmdDoctor(ctx, rest, stdout)
	case snapshots.TrialChildCommand: // hidden: the process amber doctor's trial snapshot dumps
		if len(rest) != 1 {
			return errUsage
		}
		return snapshots.TrialChild(rest[0])
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprintf(stderr, "amber: unknown command %q\n", cmd)
		return errUsage
	}
}

// client builds a scheduler client from AMBER_SCHEDULER and AMBER_TOKEN.
func client() *api.Client {
	url := os.Getenv("AMBER_SCHEDULER")
	if url == "" {
		url = "http://127.0.0.1:7700"
	}
	opts := []api.ClientOption{api.WithToken(os.Getenv("AMBER_TOKEN"))}
	if ca := os.Getenv("AMBER_CA"); ca != "" {
		hc, err := httpClient(ca)
		if err != nil {
			fmt.Fprintln(os.Stderr, "amber: AMBER_CA:", err)
			os.Exit(2)
		}
		opts = append(opts, api.WithHTTPClient(hc))
	}
	return api.NewClient(url, opts...)
}

// newLogger logs to w at the level named by AMBER_LOG (debug, info, warn,
// error): text on a terminal, JSON otherwise (journald, log shippers).
func newLogger(w io.Writer) *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(os.Getenv("AMBER_LOG"))); err != nil {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice == 0 {
			return slog.New(slog.NewJSONHandler(w, opts))
		}
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
