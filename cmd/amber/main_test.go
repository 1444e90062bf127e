package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/scheduler"
)

func TestParseInterleaved(t *testing.T) {
	tests := []struct {
		args    []string
		wantPos []string
		image   string
	}{
		{[]string{"hello", "--image", "x.tar"}, []string{"hello"}, "x.tar"},
		{[]string{"--image", "x.tar", "hello"}, []string{"hello"}, "x.tar"},
		{[]string{"hello"}, []string{"hello"}, ""},
		{[]string{"--image=y.tar", "a", "--", "--b"}, []string{"a", "--b"}, "y.tar"},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		image := fs.String("image", "", "")
		pos, err := parse(fs, tt.args)
		if err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		if !reflect.DeepEqual(pos, tt.wantPos) || *image != tt.image {
			t.Errorf("%v: pos %v image %q, want %v %q", tt.args, pos, *image, tt.wantPos, tt.image)
		}
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	if _, err := parse(fs, []string{"--nope"}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("unknown flag: %v", err)
	}
}

// cli runs amber's command line against a real scheduler on loopback.
func cli(t *testing.T) func(args ...string) (string, string, error) {
	t.Helper()
	s, err := scheduler.New(scheduler.WithDataDir(t.TempDir()), scheduler.WithToken("tok"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() { srv.Close(); s.Close() })
	t.Setenv("AMBER_SCHEDULER", srv.URL)
	t.Setenv("AMBER_TOKEN", "tok")
	return func(args ...string) (string, string, error) {
		var out, errb bytes.Buffer
		err := run(context.Background(), args, &out, &errb)
		return out.String(), errb.String(), err
	}
}

func TestBuildDeployLsAndBadInput(t *testing.T) {
	amber := cli(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bootstrap"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "fn.tar")
	if _, _, err := amber("build", dir, "-o", img); err != nil {
		t.Fatalf("build: %v", err)
	}
	out, _, err := amber("deploy", "fn", "--image", img, "--memory", "256", "--timeout", "10s", "--env", "A=b")
	if err != nil || !strings.Contains(out, "deployed fn version 1") {
		t.Fatalf("deploy: %q %v", out, err)
	}
	bad := []struct {
		name string
		args []string
		want string
	}{
		{"bad name", []string{"deploy", "Fn_1", "--image", img}, "name"},
		{"memory", []string{"deploy", "fn", "--image", img, "--memory", "64"}, "memory"},
		{"timeout", []string{"deploy", "fn", "--image", img, "--timeout", "901s"}, "timeout"},
		{"missing image", []string{"deploy", "fn"}, "image"},
		{"image not a file", []string{"deploy", "fn", "--image", filepath.Join(dir, "none.tar")}, "image"},
		{"image not an archive", []string{"deploy", "fn", "--image", filepath.Join(dir, "bootstrap")}, "image"},
		{"env not K=V", []string{"deploy", "fn", "--image", img, "--env", "nope"}, "env"},
		{"build without bootstrap", []string{"build", t.TempDir(), "-o", filepath.Join(dir, "x.tar")}, "bootstrap"},
		{"invoke unknown", []string{"invoke", "nope"}, `"nope" not found`},
		{"invoke bad data file", []string{"invoke", "fn", "--data", "@/no/such/file"}, "data"},
		{"ls bad output", []string{"ls", "-o", "yaml"}, "yaml"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := amber(tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v: %v, want an error naming %q", tc.args, err, tc.want)
			}
		})
	}
	out, _, err = amber("ls", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var fns []api.FunctionStatus
	if err := json.Unmarshal([]byte(out), &fns); err != nil {
		t.Fatalf("ls -o json: %v\n%s", err, out)
	}
	if len(fns) != 1 || fns[0].Version != 1 || fns[0].MemoryMB != 256 || fns[0].Env["A"] != "b" {
		t.Errorf("after bad deploys: %+v, want version 1 intact", fns)
	}
	out, _, err = amber("ls")
	if err != nil || !strings.Contains(out, "fn") || !strings.Contains(out, "256 MB") {
		t.Errorf("ls: %q %v", out, err)
	}
	t.Setenv("AMBER_TOKEN", "wrong")
	if _, _, err := amber("ls"); !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("wrong token: %v", err)
	}
}

func TestPoolCommand(t *testing.T) {
	amber := cli(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bootstrap"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "fn.tar")
	if _, _, err := amber("build", dir, "-o", img); err != nil {
		t.Fatal(err)
	}
	if _, _, err := amber("deploy", "fn", "--image", img); err != nil {
		t.Fatal(err)
	}
	out, _, err := amber("pool", "fn")
	if err != nil || !strings.Contains(out, "min warm 0") || !strings.Contains(out, "keep-alive 10m0s") {
		t.Fatalf("pool fn: %q %v", out, err)
	}
	out, _, err = amber("pool", "fn", "--min-warm", "2", "--max", "4", "--keep-alive", "30s")
	if err != nil || !strings.Contains(out, "min warm 2") || !strings.Contains(out, "max 4") || !strings.Contains(out, "keep-alive 30s") {
		t.Fatalf("pool set: %q %v", out, err)
	}
	for _, bad := range [][]string{
		{"pool", "fn", "--min-warm", "5"},     // above max 4
		{"pool", "fn", "--keep-alive", "1ms"}, // below 1s
		{"pool", "fn", "--max", "5000"},       // above the cap
		{"pool", "fn", "--auto", "maybe"},     // not on/off
		{"pool", "nope", "--min-warm", "1"},   // unknown function
	} {
		if _, _, err := amber(bad...); err == nil {
			t.Errorf("%v: accepted", bad)
		}
	}
	out, _, err = amber("ls", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var fns []api.FunctionStatus
	if err := json.Unmarshal([]byte(out), &fns); err != nil || len(fns) != 1 {
		t.Fatalf("ls: %v %s", err, out)
	}
	if p := fns[0].Pool; p.MinWarm != 2 || p.MaxInstances != 4 || p.KeepAlive.String() != "30s" {
		t.Errorf("ls -o json pool = %+v, want the settings kept after refused changes", p)
	}
}
