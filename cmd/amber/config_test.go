package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigurePrecedence(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "amber.json")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	newFS := func() (*flag.FlagSet, *int, *time.Duration, *string) {
		fs := flag.NewFlagSet("agent", flag.ContinueOnError)
		capacity := fs.Int("capacity", 4096, "")
		keep := fs.Duration("keep-alive", 10*time.Minute, "")
		name := fs.String("name", "host", "")
		fs.String("config", "", "")
		return fs, capacity, keep, name
	}
	tests := []struct {
		name     string
		file     string
		args     []string
		env      map[string]string
		wantCap  int
		wantKeep time.Duration
		wantName string
		wantErr  string
	}{
		{name: "defaults without a file", wantCap: 4096, wantKeep: 10 * time.Minute, wantName: "host"},
		{name: "file", file: `{"agent":{"capacity":8192,"keep-alive":"5m","name":"n1"}}`, wantCap: 8192, wantKeep: 5 * time.Minute, wantName: "n1"},
		{name: "env beats file", file: `{"agent":{"capacity":8192}}`, env: map[string]string{"AMBER_CAPACITY": "2048"}, wantCap: 2048, wantKeep: 10 * time.Minute, wantName: "host"},
		{name: "flag beats env", file: `{"agent":{"capacity":8192}}`, env: map[string]string{"AMBER_CAPACITY": "2048"}, args: []string{"--capacity", "1024"}, wantCap: 1024, wantKeep: 10 * time.Minute, wantName: "host"},
		{name: "other section ignored", file: `{"scheduler":{"listen":"x"}}`, wantCap: 4096, wantKeep: 10 * time.Minute, wantName: "host"},
		{name: "unknown key", file: `{"agent":{"capacty":1}}`, wantErr: "agent.capacty: unknown setting"},
		{name: "bad value", file: `{"agent":{"keep-alive":"soon"}}`, wantErr: "agent.keep-alive"},
		{name: "bad env value", env: map[string]string{"AMBER_CAPACITY": "lots"}, wantErr: "AMBER_CAPACITY"},
		{name: "unknown section", file: `{"agnet":{}}`, wantErr: "agnet: unknown section"},
		{name: "not JSON", file: `capacity = 1`, wantErr: "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{"AMBER_CAPACITY", "AMBER_KEEP_ALIVE", "AMBER_NAME", "AMBER_CONFIG"} {
				t.Setenv(k, "")
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			file := filepath.Join(dir, "none.json")
			if tt.file != "" {
				file = write(tt.file)
			}
			fs, capacity, keep, name := newFS()
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			cfg := ""
			if tt.file != "" {
				cfg = file
			}
			err := configure(fs, "agent", cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *capacity != tt.wantCap || *keep != tt.wantKeep || *name != tt.wantName {
				t.Errorf("capacity %d keep-alive %s name %s; want %d %s %s", *capacity, *keep, *name, tt.wantCap, tt.wantKeep, tt.wantName)
			}
		})
	}
	if err := configure(flag.NewFlagSet("agent", flag.ContinueOnError), "agent", filepath.Join(dir, "missing.json")); err == nil {
		t.Error("a named config file that is missing was accepted")
	}
}

// The server commands read --config after parsing: the file given on the
// command line applies to the flags not given.
func TestParseServerFlagsReadsConfigFlag(t *testing.T) {
	t.Setenv("AMBER_CONFIG", "")
	t.Setenv("AMBER_CAPACITY", "")
	file := filepath.Join(t.TempDir(), "amber.json")
	if err := os.WriteFile(file, []byte(`{"agent":{"capacity":8192}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	capacity := fs.Int("capacity", 4096, "")
	config := fs.String("config", "", "")
	tlsf := addTLSFlags(fs, "the scheduler")
	if _, err := parseServerFlags(fs, []string{"--config", file}, "agent", config, tlsf); err != nil {
		t.Fatal(err)
	}
	if *capacity != 8192 {
		t.Fatalf("capacity %d, want 8192 from %s", *capacity, file)
	}
}
