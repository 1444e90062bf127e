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

// TestSchedulerClusterArgs: `amber install scheduler` with cluster flags
// writes them to the environment file the unit reads, and refuses a
// cluster that could not survive the loss of one scheduler.
func TestSchedulerClusterArgs(t *testing.T) {
	peers := []string{"10.0.0.2:6222", "10.0.0.3:6222"}
	for _, tc := range []struct {
		name string
		c    SchedulerCluster
		want string // in the env file, or the error
		err  bool
	}{
		{"three nodes", SchedulerCluster{Listen: ":7700", ClusterListen: "10.0.0.1:6222", Peers: peers, Name: "s1"},
			"AMBER_SCHEDULER_ARGS=--listen :7700 --cluster-listen 10.0.0.1:6222 --cluster-peers 10.0.0.2:6222,10.0.0.3:6222 --nats-name s1\n", false},
		{"no cluster address", SchedulerCluster{Peers: peers}, "--cluster-listen: a scheduler of a cluster needs", true},
		{"one peer", SchedulerCluster{ClusterListen: "10.0.0.1:6222", Peers: peers[:1]}, "needs at least three", true},
		{"bad peer", SchedulerCluster{ClusterListen: "10.0.0.1:6222", Peers: []string{"10.0.0.2", "10.0.0.3:6222"}}, `--cluster-peers "10.0.0.2": want host:port`, true},
		{"itself a peer", SchedulerCluster{ClusterListen: "10.0.0.1:6222", Peers: []string{"10.0.0.1:6222", "10.0.0.3:6222"}}, "this node's own", true},
		{"quote in a name", SchedulerCluster{ClusterListen: "10.0.0.1:6222", Peers: peers, Name: `a"b`}, "no spaces or quotes", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			units, err := Units(RoleScheduler, UnitConfig{Binary: "/usr/bin/amber", Cluster: &tc.c})
			if tc.err {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v, want it to contain %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(units[1].Content, tc.want) {
				t.Fatalf("env file:\n%s\nwant it to end with %q", units[1].Content, tc.want)
			}
			if !strings.Contains(units[0].Content, "$AMBER_SCHEDULER_ARGS") {
				t.Fatal("the unit does not pass AMBER_SCHEDULER_ARGS on")
			}
		})
	}
	if _, err := Units(RoleAgent, UnitConfig{Binary: "/usr/bin/amber", Cluster: &SchedulerCluster{ClusterListen: "a:1", Peers: peers}}); err == nil {
		t.Error("cluster settings accepted for an agent")
	}
}
