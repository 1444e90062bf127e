package ops

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestUnitsVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-analyze missing under CI")
		}
		t.Skip("systemd-analyze not installed")
	}
	for _, role := range []Role{RoleAgent, RoleScheduler} {
		t.Run(string(role), func(t *testing.T) {
			dir := t.TempDir()
			bin := filepath.Join(dir, "amber")
			if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			units, err := Units(role, UnitConfig{Binary: bin, UnitDir: dir, EnvDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			unit := units[0]
			if err := os.WriteFile(unit.Path, []byte(unit.Content), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("systemd-analyze", "verify", unit.Path).CombinedOutput()
			// containerd.service may not exist here: only that dependency may be reported.
			var bad []string
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if l != "" && !strings.Contains(l, "containerd.service") {
					bad = append(bad, l)
				}
			}
			if len(bad) > 0 {
				t.Errorf("systemd-analyze verify %s (%v):\n%s", unit.Path, err, strings.Join(bad, "\n"))
			}
			for _, want := range []string{"Type=notify", "Restart=on-failure", "EnvironmentFile=", "ExecStart=" + bin + " " + string(role)} {
				if !strings.Contains(unit.Content, want) {
					t.Errorf("unit lacks %q", want)
				}
			}
		})
	}
	if _, err := Units("web", UnitConfig{Binary: "/x"}); err == nil {
		t.Error("unknown role accepted")
	}
	if _, err := Units(RoleAgent, UnitConfig{Binary: "amber"}); err == nil {
		t.Error("relative binary accepted")
	}
}

func TestDoctorLines(t *testing.T) {
	checks := Doctor(t.Context(), DoctorConfig{Containerd: filepath.Join(t.TempDir(), "none.sock"), StateDir: t.TempDir()})
	names := map[string]Check{}
	for _, c := range checks {
		names[c.Name] = c
		line := c.String()
		if strings.Contains(line, "\n") || (!c.OK && !strings.Contains(line, "fix:")) {
			t.Errorf("check line %q: want one line, with a fix when failing", line)
		}
	}
	if c := names["containerd"]; c.OK {
		t.Errorf("containerd at a missing socket reported ok: %v", c)
	}
	for _, n := range []string{"runc", "snapshots", "cgroups", "overlayfs", "disk"} {
		if _, ok := names[n]; !ok {
			t.Errorf("no %s check", n)
		}
	}
	if parent("/a/b") != "/a" || parent("/a") != "/" || parent("/") != "" {
		t.Error("parent")
	}
}
