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

	"github.com/amberfn/amber/ops"
)

func unitConfig(fs *flag.FlagSet) func() (ops.UnitConfig, error) {
	bin := fs.String("binary", "", "amber binary the units run (default: this one)")
	unitDir := fs.String("unit-dir", "/etc/systemd/system", "where the unit files go")
	envDir := fs.String("env-dir", "/etc/amber", "where the environment files go")
	return func() (ops.UnitConfig, error) {
		if *bin == "" {
			exe, err := os.Executable()
			if err != nil {
				return ops.UnitConfig{}, err
			}
			*bin = exe
		}
		abs, err := filepath.Abs(*bin)
		return ops.UnitConfig{Binary: abs, UnitDir: *unitDir, EnvDir: *envDir}, err
	}
}

// cmdInstall writes systemd units: amber install agent|scheduler [--dry-run].
func cmdInstall(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	dry := fs.Bool("dry-run", false, "print each file it would write, after a `# PATH` line, and write nothing")
	cfgOf := unitConfig(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("usage: amber install agent|scheduler [--dry-run]")
	}
	cfg, err := cfgOf()
	if err != nil {
		return err
	}
	units, err := ops.Units(ops.Role(pos[0]), cfg)
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
		fmt.Fprintf(stdout, "start it with: systemctl enable --now amber-%s\n", pos[0])
	}
	return nil
}

// cmdUninstall removes the unit (the environment file and data stay).
func cmdUninstall(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("uninstall", flag.ContinueOnError)
	cfgOf := unitConfig(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("usage: amber uninstall agent|scheduler")
	}
	cfg, err := cfgOf()
	if err != nil {
		return err
	}
	units, err := ops.Units(ops.Role(pos[0]), cfg)
	if err != nil {
		return err
	}
	systemctl(stdout, "disable", "--now", "amber-"+pos[0])
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
func cmdDoctor(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	sock := fs.String("containerd", "/run/containerd/containerd.sock", "containerd socket")
	state := fs.String("state", "/var/lib/amber", "where images and snapshots live")
	sched := fs.String("scheduler", os.Getenv("AMBER_SCHEDULER"), "scheduler URL, to compare clocks")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	failed := 0
	for _, c := range ops.Doctor(ctx, ops.DoctorConfig{Containerd: *sock, StateDir: *state, Scheduler: *sched}) {
		fmt.Fprintln(stdout, c)
		if !c.OK {
			failed++
		}
	}
	if failed > 0 {
		return exitError{1}
	}
	return nil
}
