package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/amberfn/amber/ops"
	"github.com/amberfn/amber/snapshots"
)

// roleUnits adds the unit-location flags to fs, parses args, and renders
// the units of the one role named: the common part of install and uninstall.
func roleUnits(fs *flag.FlagSet, args []string, usage string, cluster *ops.SchedulerCluster) (ops.Role, []ops.Unit, error) {
	bin := fs.String("binary", "", "amber binary the units run (default: this one)")
	unitDir := fs.String("unit-dir", "/etc/systemd/system", "where the unit files go")
	envDir := fs.String("env-dir", "/etc/amber", "where the environment files go")
	pos, err := parse(fs, args)
	if err != nil {
		return "", nil, err
	}
	if len(pos) != 1 {
		return "", nil, fmt.Errorf("usage: %s", usage)
	}
	if *bin == "" {
		if *bin, err = os.Executable(); err != nil {
			return "", nil, err
		}
	}
	abs, err := filepath.Abs(*bin)
	if err != nil {
		return "", nil, err
	}
	role := ops.Role(pos[0])
	cfg := ops.UnitConfig{Binary: abs, UnitDir: *unitDir, EnvDir: *envDir}
	if cluster != nil && (cluster.ClusterListen != "" || len(cluster.Peers) > 0) {
		cfg.Cluster = cluster
	}
	units, err := ops.Units(role, cfg)
	return role, units, err
}

// cmdInstall writes systemd units: amber install agent|scheduler [--dry-run].
func cmdInstall(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	dry := fs.Bool("dry-run", false, "print each file it would write, after a `# PATH` line, and write nothing")
	var cl ops.SchedulerCluster
	fs.StringVar(&cl.Listen, "listen", "", "scheduler of a cluster: its HTTP address (host:port)")
	fs.StringVar(&cl.ClusterListen, "cluster-listen", "", "scheduler of a cluster: this node's NATS cluster address (host:port)")
	fs.Func("cluster-peers", "scheduler of a cluster: the other schedulers' cluster addresses (host:port,…)", func(v string) error {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				cl.Peers = append(cl.Peers, p)
			}
		}
		return nil
	})
	fs.StringVar(&cl.Name, "name", "", "scheduler of a cluster: its unique node name (default: the host name)")
	role, units, err := roleUnits(fs, args, "amber install agent|scheduler [--dry-run] [--cluster-listen H:P --cluster-peers H:P,H:P [--listen H:P] [--name N]]", &cl)
	if err != nil {
		return err
	}
	for _, u := range units {
		if *dry {
			fmt.Fprintf(stdout, "# %s\n%s\n", u.Path, u.Content)
			continue
		}
		if filepath.Ext(u.Path) == ".env" {
			if _, err := os.Stat(u.Path); err == nil {
				fmt.Fprintf(stdout, "kept %s\n", u.Path)
				if cl.ClusterListen != "" {
					fmt.Fprintf(stdout, "  the cluster flags were not written there: set AMBER_SCHEDULER_ARGS in it by hand\n")
				}
				continue // an operator's settings are never overwritten
			}
		}
		if err := os.MkdirAll(filepath.Dir(u.Path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(u.Path, []byte(u.Content), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s\n", u.Path)
	}
	if !*dry {
		systemctl(stdout, "daemon-reload")
		fmt.Fprintf(stdout, "start it with: systemctl enable --now amber-%s\n", role)
	}
	return nil
}

// cmdUninstall removes the unit (the environment file and data stay).
func cmdUninstall(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("uninstall", flag.ContinueOnError)
	role, units, err := roleUnits(fs, args, "amber uninstall agent|scheduler", nil)
	if err != nil {
		return err
	}
	systemctl(stdout, "disable", "--now", "amber-"+string(role))
	if err := os.Remove(units[0].Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	fmt.Fprintf(stdout, "removed %s (kept %s and the data)\n", units[0].Path, units[1].Path)
	systemctl(stdout, "daemon-reload")
	return nil
}

// systemctl runs systemctl when this machine has a running systemd.
func systemctl(stdout io.Writer, args ...string) {
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		return // not booted with systemd (a container, a VM like this one)
	}
	if out, err := exec.Command("systemctl", args...).CombinedOutput(); err != nil {
		fmt.Fprintf(stdout, "systemctl %v: %v %s\n", args, err, out)
	}
}

// cmdDoctor prints one line per check, with the fix for each failure.
// With --data DIR it checks the local cluster `amber up --data DIR` runs
// (its containerd, scheduler from DIR/env, agents and snapshot stores).
func cmdDoctor(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	sock := fs.String("containerd", "/run/containerd/containerd.sock", "containerd socket")
	state := fs.String("state", "/var/lib/amber", "where images and snapshots live")
	sched := fs.String("scheduler", "", "scheduler URL, or every scheduler's comma-separated: the control plane's health and the clock (default: $AMBER_SCHEDULER, or DIR/env's with --data)")
	data := fs.String("data", "", "check the local cluster of `amber up --data DIR` instead of this node's system containerd")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *sched == "" && *data == "" {
		*sched = os.Getenv("AMBER_SCHEDULER")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	trialDir := filepath.Join(os.TempDir(), "amber-doctor-trial")
	for _, d := range []string{*data, *state} {
		if fi, err := os.Stat(d); d != "" && err == nil && fi.IsDir() {
			trialDir = filepath.Join(d, "doctor-trial")
			break
		}
	}
	cfg := ops.DoctorConfig{Containerd: *sock, StateDir: *state, Scheduler: *sched, Token: os.Getenv("AMBER_TOKEN"), Local: *data,
		Trial: snapshots.TrialConfig{Dir: trialDir, Child: []string{exe, snapshots.TrialChildCommand}}}
	failed := 0
	for _, c := range ops.Doctor(ctx, cfg) {
		fmt.Fprintln(stdout, c)
		if c.Failed() {
			failed++
		}
	}
	if failed > 0 {
		return exitError{1}
	}
	return nil
}
