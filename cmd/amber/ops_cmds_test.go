package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInstallUninstall(t *testing.T) {
	dir := t.TempDir()
	flags := []string{"--unit-dir", dir, "--env-dir", dir, "--binary", "/usr/local/bin/amber"}
	out, err := capture(t, append([]string{"install", "scheduler", "--dry-run"}, flags...)...)
	if err != nil || !strings.HasPrefix(out, "# "+filepath.Join(dir, "amber-scheduler.service")+"\n[Unit]") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("--dry-run wrote %d files", len(entries))
	}
	if _, err := capture(t, append([]string{"install", "agent"}, flags...)...); err != nil {
		t.Fatal(err)
	}
	env := filepath.Join(dir, "agent.env")
	if err := os.WriteFile(env, []byte("AMBER_TOKEN=mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := capture(t, append([]string{"install", "agent"}, flags...)...); err != nil || !strings.Contains(out, "kept "+env) {
		t.Fatalf("reinstall: %v %s", err, out)
	}
	if b, _ := os.ReadFile(env); string(b) != "AMBER_TOKEN=mine\n" {
		t.Errorf("reinstall overwrote the environment file: %q", b)
	}
	if _, err := capture(t, append([]string{"uninstall", "agent"}, flags...)...); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "amber-agent.service")); !os.IsNotExist(err) {
		t.Errorf("unit still there after uninstall: %v", err)
	}
	if _, err := os.Stat(env); err != nil {
		t.Errorf("uninstall removed the environment file: %v", err)
	}
	if _, err := capture(t, append([]string{"install", "web"}, flags...)...); err == nil || !strings.Contains(err.Error(), "web") {
		t.Errorf("unknown role: %v", err)
	}
}
