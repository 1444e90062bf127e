package main

import (
	"context"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNATSFlags(t *testing.T) {
	creds := filepath.Join(t.TempDir(), "x.creds")
	if err := os.WriteFile(creds, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		args      []string
		wantErr   string // "" means valid
		wantPeers int
		wantURL   string
	}{
		{name: "default: embedded"},
		{name: "three schedulers", args: []string{"--cluster-listen", "10.0.0.1:6222", "--cluster-peers", "10.0.0.2:6222, 10.0.0.3:6222", "--nats-name", "s1", "--nats-listen", "127.0.0.1:4222"}, wantPeers: 2},
		{name: "external", args: []string{"--nats", "nats://a:4222,nats://b:4222", "--nats-creds", creds}, wantURL: "nats://a:4222,nats://b:4222"},
		{name: "peers without cluster listen", args: []string{"--cluster-peers", "10.0.0.2:6222"}, wantErr: "--cluster-peers needs --cluster-listen"},
		{name: "bad peer", args: []string{"--cluster-listen", "10.0.0.1:6222", "--cluster-peers", "10.0.0.2"}, wantErr: "--cluster-peers: \"10.0.0.2\": want host:port"},
		{name: "own address as peer", args: []string{"--cluster-listen", "10.0.0.1:6222", "--cluster-peers", "10.0.0.1:6222"}, wantErr: "--cluster-peers: 10.0.0.1:6222 is this node's own"},
		{name: "bad cluster listen", args: []string{"--cluster-listen", "10.0.0.1:99999"}, wantErr: "--cluster-listen: \"10.0.0.1:99999\": port"},
		{name: "bad nats listen", args: []string{"--nats-listen", "4222"}, wantErr: "--nats-listen: \"4222\": want host:port"},
		{name: "external with cluster", args: []string{"--nats", "nats://a:4222", "--cluster-listen", "10.0.0.1:6222"}, wantErr: "--cluster-listen configures the embedded NATS node; it cannot be combined with --nats"},
		{name: "external with name", args: []string{"--nats", "nats://a:4222", "--nats-name", "s1"}, wantErr: "--nats-name configures the embedded"},
		{name: "bad scheme", args: []string{"--nats", "http://a:4222"}, wantErr: "--nats \"http://a:4222\": \"http://a:4222\": want nats://"},
		{name: "creds without nats", args: []string{"--nats-creds", creds}, wantErr: "--nats-creds configures the connection to an external NATS: it needs --nats"},
		{name: "missing creds file", args: []string{"--nats", "nats://a:4222", "--nats-creds", creds + ".gone"}, wantErr: "--nats-creds: stat"},
		{name: "cert without key", args: []string{"--nats", "nats://a:4222", "--nats-cert", creds}, wantErr: "--nats-cert and --nats-key go together"},
		{name: "bad name", args: []string{"--nats-name", "a.b"}, wantErr: "--nats-name \"a.b\""},
		{name: "fsync always in a cluster", args: []string{"--cluster-listen", "10.0.0.1:6222", "--cluster-peers", "10.0.0.2:6222,10.0.0.3:6222", "--nats-fsync", "always"}, wantPeers: 2},
		{name: "bad fsync", args: []string{"--nats-fsync", "sometimes"}, wantErr: "--nats-fsync \"sometimes\": want always or interval"},
		{name: "external with fsync", args: []string{"--nats", "nats://a:4222", "--nats-fsync", "always"}, wantErr: "--nats-fsync configures the embedded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("scheduler", flag.ContinueOnError)
			nf := addNATSFlags(fs)
			if _, err := parse(fs, tt.args); err != nil {
				t.Fatal(err)
			}
			cfg, err := nf.config()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Peers) != tt.wantPeers || cfg.URL != tt.wantURL {
				t.Errorf("config %+v: want %d peers, URL %q", cfg, tt.wantPeers, tt.wantURL)
			}
		})
	}
}

// `amber scheduler --nats` at an address nothing answers stops with an
// error naming the address.
func TestSchedulerUnreachableNATS(t *testing.T) {
	t.Setenv("AMBER_CONFIG", "")
	t.Setenv("AMBER_TOKEN", "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	err = run(context.Background(), []string{"scheduler", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--nats", "nats://" + addr}, os.Stdout, os.Stderr)
	if err == nil || !strings.Contains(err.Error(), "nats://"+addr) {
		t.Fatalf("err %v, want one naming nats://%s", err, addr)
	}
}
