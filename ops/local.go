package ops

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/amberfn/amber/api"
)

// localCluster is what `amber up --data DIR` left in DIR: its env file
// (scheduler URL and token), its containerd socket and its agents' state.
type localCluster struct {
	dir       string
	scheduler string // from DIR/env; "" when no cluster was started here
	token     string
	envErr    error
}

func readLocal(dir string) *localCluster {
	l := &localCluster{dir: dir}
	f, err := os.Open(filepath.Join(dir, "env"))
	if err != nil {
		l.envErr = err
		return l
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export "), "=")
		if !ok {
			continue
		}
		switch k {
		case "AMBER_SCHEDULER":
			l.scheduler = v
		case "AMBER_TOKEN":
			l.token = v
		}
	}
	return l
}

func (l *localCluster) socket() string { return filepath.Join(l.dir, "containerd", "containerd.sock") }

// checkContainerd checks the cluster's own containerd; with no cluster
// running here, that `amber up` can start one.
func (l *localCluster) checkContainerd(ctx context.Context) Check {
	if _, err := os.Stat(l.socket()); err == nil {
		c := checkContainerd(ctx, l.socket())
		c.Fix = "restart the local cluster: go tool task up (or amber up --data " + l.dir + ")"
		return c
	}
	c := checkBinary(ctx, "containerd", "containerd", "--version", "apt-get install containerd")
	if c.OK {
		c.Info += "; no local cluster runs in " + l.dir + " (amber up starts its own containerd)"
	}
	return c
}

// checkAgents asks the local cluster's scheduler for its agents and
// looks at each one's snapshot store and snapshot decisions.
func (l *localCluster) checkAgents(ctx context.Context) []Check {
	c := Check{Name: "agents", Fix: "restart the local cluster: go tool task up (or amber up --data " + l.dir + ")"}
	if l.envErr != nil {
		c.Skipped, c.Info = true, fmt.Sprintf("no local cluster in %s (%v)", l.dir, unwrapPath(l.envErr))
		return []Check{c}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	client := api.NewClient(l.scheduler, api.WithToken(l.token))
	state, err := client.State(ctx)
	if err != nil {
		c.Info = fmt.Sprintf("the scheduler at %s (from %s) does not answer: %v", l.scheduler, filepath.Join(l.dir, "env"), err)
		return []Check{c}
	}
	var ready, other []string
	for _, a := range state.Agents {
		if a.State == api.AgentReady {
			ready = append(ready, a.Name)
		} else {
			other = append(other, fmt.Sprintf("%s %s", a.Name, a.State))
		}
	}
	switch {
	case len(state.Agents) == 0:
		c.Info = "the scheduler at " + l.scheduler + " knows no agent"
	case len(other) > 0:
		c.Info = fmt.Sprintf("%d of %d agents not ready: %s", len(other), len(state.Agents), strings.Join(other, ", "))
	default:
		c.OK, c.Info = true, fmt.Sprintf("%d ready: %s", len(ready), strings.Join(ready, ", "))
	}
	return []Check{c, l.checkStore(state)}
}

// checkStore: every agent's snapshot store is a writable folder, and no
// agent reports a failed snapshot (its cause names the fix).
func (l *localCluster) checkStore(state *api.ClusterState) Check {
	c := Check{Name: "store", Fix: "see the criu log named, or run amber doctor without --data for the trial snapshot"}
	stores, _ := filepath.Glob(filepath.Join(l.dir, "agents", "*", "snapshots"))
	var entries int
	var size int64
	for _, s := range stores {
		probe, err := os.CreateTemp(s, ".doctor-")
		if err != nil {
			c.Info, c.Fix = fmt.Sprintf("snapshot store %s is not writable: %v", s, err), "check the disk and the folder's owner"
			return c
		}
		probe.Close()
		os.Remove(probe.Name())
		list, _ := os.ReadDir(s)
		for _, e := range list {
			if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
				entries++
				size += dirSize(filepath.Join(s, e.Name()))
			}
		}
	}
	seen := map[string]bool{}
	var failed []string
	for _, a := range state.Agents {
		for _, in := range a.Instances {
			if strings.HasPrefix(in.Snapshot, "snapshot failed") && !seen[a.Name+in.Function] {
				seen[a.Name+in.Function] = true
				failed = append(failed, fmt.Sprintf("%s on %s: %s", in.Function, a.Name, in.Snapshot))
			}
		}
	}
	if len(failed) > 0 {
		c.Info = failed[0]
		if len(failed) > 1 {
			c.Info += fmt.Sprintf(" (and %d more)", len(failed)-1)
		}
		return c
	}
	c.OK, c.Info = true, fmt.Sprintf("%d agent stores, %d snapshots, %.1f MB", len(stores), entries, float64(size)/(1<<20))
	return c
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
