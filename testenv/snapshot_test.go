package testenv_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amberfn/amber/agent"
	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/snapshots"
	"github.com/amberfn/amber/testenv"
)

// requireCRIU skips (or, under CI=true where .ci/install-deps is meant to
// provide CRIU, fails) when snapshots cannot work here.
func requireCRIU(t testing.TB) {
	t.Helper()
	testenv.Require(t, testenv.CheckContainerd())
	if err := testenv.CheckCRIU(); err != nil {
		if !testenv.CRIUExpected() {
			t.Skipf("skipping snapshot test: %v (CRIU is not expected here)", err)
		}
		testenv.Require(t, err)
	}
}

var (
	extraMu     sync.Mutex
	extraImages = map[string]string{}
)

// exampleImage builds an example the shared fixture does not build.
func exampleImage(t testing.TB, f *fixture, name string) string {
	t.Helper()
	if p, ok := f.images[name]; ok {
		return p
	}
	extraMu.Lock()
	defer extraMu.Unlock()
	if p, ok := extraImages[name]; ok {
		return p
	}
	p, err := testenv.BuildExample(context.Background(), name, f.dir)
	if err != nil {
		t.Fatalf("build %s: %v", name, err)
	}
	extraImages[name] = p
	return p
}

func agentNamed(t testing.TB, f *fixture, name string) *agent.Agent {
	t.Helper()
	for _, a := range f.cluster.Agents {
		if a.Name() == name {
			return a
		}
	}
	t.Fatalf("no agent %q", name)
	return nil
}

// waitSnapshot waits until the agent holds a snapshot of the version.
func waitSnapshot(t testing.TB, a *agent.Agent, name string, version int, after time.Time) *snapshots.Entry {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		e, err := a.Snapshot(name, version)
		if err == nil && !e.Created.Before(after) {
			return e
		}
		if d := a.SnapshotDecision(name, version); strings.Contains(d, "failed") || strings.Contains(d, "no snapshot:") || time.Now().After(deadline) {
			t.Fatalf("no snapshot of %s@%d on %s after 90s (last: %v; decision %q)", name, version, a.Name(), err, a.SnapshotDecision(name, version))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// agentInvoke invokes a version straight on one agent, bypassing placement.
func agentInvoke(ctx context.Context, f *fixture, agentName, fn string, version int, payload string) (*api.InvokeResult, error) {
	agents, err := f.cluster.Client().Agents(ctx)
	if err != nil {
		return nil, err
	}
	url := ""
	for _, a := range agents {
		if a.Name == agentName {
			url = a.URL
		}
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/functions/"+fn+"/invoke", strings.NewReader(payload))
	req.Header.Set(api.HeaderVersion, strconv.Itoa(version))
	req.Header.Set("Authorization", "Bearer "+f.cluster.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("agent invoke: %s: %s", resp.Status, body)
	}
	return api.ReadInvokeHeaders(resp.Header, body), nil
}

type heavyOut struct {
	StateBytes int    `json:"state_bytes"`
	Sum        uint32 `json:"sum"`
	Nonce      string `json:"nonce"`
	InitMs     int64  `json:"init_ms"`
	Served     int64  `json:"served"`
	Verified   *bool  `json:"verified"`
}

func heavyResult(t *testing.T, res *api.InvokeResult) heavyOut {
	t.Helper()
	if res.FunctionError != "" {
		t.Fatalf("function error: %s", res.Payload)
	}
	var out heavyOut
	if err := json.Unmarshal(res.Payload, &out); err != nil {
		t.Fatalf("result %q: %v", res.Payload, err)
	}
	return out
}

// TestSnapshotRestore: after a cold start the agent snapshots the
// version; with no idle instance left, the next start is a restore that
// has the state init built, and two instances restored from one snapshot
// at once serve independently.
func TestSnapshotRestore(t *testing.T) {
	requireCRIU(t)
	f := cluster(t)
	c := f.cluster.Client()
	ctx := t.Context()
	fn := deploy(t, c, "snap-heavy", exampleImage(t, f, "heavy-init"), func(s *api.FunctionSpec) {
		s.MemoryMB = 256
		s.Timeout = api.Duration(10 * time.Second)
	})
	t0 := time.Now()
	cold, err := c.Invoke(ctx, "snap-heavy", []byte(`{"verify":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if cold.StartKind != api.StartCold {
		t.Fatalf("first start is %s, want cold", cold.StartKind)
	}
	co := heavyResult(t, cold)
	if co.StateBytes != 64<<20 || co.Verified == nil || !*co.Verified {
		t.Fatalf("cold result %+v", co)
	}
	ag := agentNamed(t, f, cold.Agent)
	e := waitSnapshot(t, ag, "snap-heavy", fn.Version, t0)
	t.Logf("snapshot: %d MB in %d files, taken in %s after an init of %s", e.Size>>20, e.Files, e.TakeTime, e.InitTime)
	if e.ImageDigest != fn.Image || e.Kernel == "" || e.CRIUVersion == "" {
		t.Errorf("metadata %+v", e.Meta)
	}

	ag.RetireIdle("snap-heavy")
	since := time.Now()
	res, err := agentInvoke(ctx, f, ag.Name(), "snap-heavy", fn.Version, `{"verify":true}`)
	if err != nil {
		t.Fatal(err)
	}
	if res.StartKind != api.StartRestore || res.RestoreDuration <= 0 {
		t.Fatalf("start %s, restore %s; want a restore (decision %q)", res.StartKind, res.RestoreDuration, ag.SnapshotDecision("snap-heavy", fn.Version))
	}
	ro := heavyResult(t, res)
	if ro.Verified == nil || !*ro.Verified || ro.StateBytes != 64<<20 || ro.Served != 1 || ro.InitMs < 1000 || ro.Nonce == "" {
		t.Fatalf("restored result %+v: the state built in init is not intact", ro)
	}
	t.Logf("cold start: init %s; restore %s (restored state: %d bytes, sum %08x, nonce %s)", cold.InitDuration, res.RestoreDuration, ro.StateBytes, ro.Sum, ro.Nonce)
	var report string
	for _, l := range ag.Logs("snap-heavy", since, 100) {
		if strings.HasPrefix(l.Text, "REPORT") && l.RequestID == res.RequestID {
			report = l.Text
		}
	}
	if !strings.Contains(report, "\tRestore Duration: ") || strings.Contains(report, "Init Duration") {
		t.Errorf("REPORT line %q: want Restore Duration and no Init Duration", report)
	}
	if d := ag.SnapshotDecision("snap-heavy", fn.Version); !strings.HasPrefix(d, "restore ") {
		t.Errorf("decision %q, want restore (init %s, restore %s)", d, cold.InitDuration, res.RestoreDuration)
	}

	// Two restores from one snapshot at once: same init state, separate instances.
	ag.RetireIdle("snap-heavy")
	var wg sync.WaitGroup
	results := make([]*api.InvokeResult, 2)
	errs := make([]error, 2)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = agentInvoke(ctx, f, ag.Name(), "snap-heavy", fn.Version, `{"verify":true}`)
		}()
	}
	wg.Wait()
	var outs []heavyOut
	for i, r := range results {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if r.StartKind != api.StartRestore {
			t.Fatalf("concurrent start %d is %s, want restore", i, r.StartKind)
		}
		o := heavyResult(t, r)
		if o.Verified == nil || !*o.Verified || o.Served != 1 {
			t.Fatalf("concurrent restore %d: %+v", i, o)
		}
		outs = append(outs, o)
	}
	if results[0].Instance == results[1].Instance {
		t.Fatalf("both served by %s", results[0].Instance)
	}
	if outs[0].Nonce != outs[1].Nonce || outs[0].Nonce != ro.Nonce || outs[0].Sum != outs[1].Sum {
		t.Errorf("restores of one snapshot differ: %+v %+v (first restore %+v)", outs[0], outs[1], ro)
	}
	// Each goes on by itself: a second invocation of each counts 2.
	for _, r := range results {
		_ = r
	}
	seen := map[string]int64{}
	for range 6 {
		r, err := agentInvoke(ctx, f, ag.Name(), "snap-heavy", fn.Version, `{}`)
		if err != nil {
			t.Fatal(err)
		}
		if r.StartKind != api.StartWarm {
			continue
		}
		seen[r.Instance] = heavyResult(t, r).Served
	}
	for _, r := range results {
		if n, ok := seen[r.Instance]; ok && n < 2 {
			t.Errorf("instance %s served count %d after a second invocation", r.Instance, n)
		}
	}
	insts := ag.Instances()
	for _, in := range insts {
		if in.Function == "snap-heavy" && !strings.HasPrefix(in.Snapshot, "restore ") {
			t.Errorf("instance %s: Snapshot %q", in.ID, in.Snapshot)
		}
	}
}

// TestSnapshotBadFallsBackCold: a snapshot that is truncated, corrupt or
// from another kernel or CRIU is discarded and the start is cold; the
// invocation succeeds.
func TestSnapshotBadFallsBackCold(t *testing.T) {
	requireCRIU(t)
	f := cluster(t)
	c := f.cluster.Client()
	ctx := t.Context()
	largest := func(dir string) string {
		var files []os.FileInfo
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
				files = append(files, fi)
			}
		}
		sort.Slice(files, func(i, j int) bool { return files[i].Size() > files[j].Size() })
		return filepath.Join(dir, files[0].Name())
	}
	editMeta := func(t *testing.T, e *snapshots.Entry, edit func(m map[string]any)) {
		p := filepath.Join(e.Dir, "meta.json")
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]any{}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		edit(m)
		b, _ = json.Marshal(m)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		damage func(t *testing.T, e *snapshots.Entry)
	}{
		{"truncated page file", func(t *testing.T, e *snapshots.Entry) {
			p := largest(e.ImagePath())
			fi, _ := os.Stat(p)
			if err := os.Truncate(p, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
		}},
		{"flipped bytes", func(t *testing.T, e *snapshots.Entry) {
			p := largest(e.ImagePath())
			fh, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, err = fh.WriteAt([]byte("amber was here"), 4096)
			fh.Close()
			if err != nil {
				t.Fatal(err)
			}
		}},
		{"missing image", func(t *testing.T, e *snapshots.Entry) {
			if err := os.RemoveAll(e.ImagePath()); err != nil {
				t.Fatal(err)
			}
		}},
		{"foreign kernel", func(t *testing.T, e *snapshots.Entry) {
			editMeta(t, e, func(m map[string]any) { m["kernel_release"] = "5.10.0-foreign" })
		}},
		{"foreign criu", func(t *testing.T, e *snapshots.Entry) {
			editMeta(t, e, func(m map[string]any) { m["criu_version"] = "3.17" })
		}},
	}
	fn := deploy(t, c, "snap-bad", f.images["hello"])
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t0 := time.Now()
			// A start that is not warm, on the agent that will hold the snapshot.
			first, err := c.Invoke(ctx, "snap-bad", []byte(`{"name":"x"}`))
			if err != nil || first.FunctionError != "" {
				t.Fatalf("invoke: %v %s", err, first.Payload)
			}
			ag := agentNamed(t, f, first.Agent)
			e, err := ag.Snapshot("snap-bad", fn.Version)
			if err != nil || e.Created.Before(t0) && first.StartKind == api.StartCold {
				e = waitSnapshot(t, ag, "snap-bad", fn.Version, t0)
			}
			tt.damage(t, e)
			for _, a := range f.cluster.Agents {
				a.RetireIdle("snap-bad")
			}
			res, err := agentInvoke(ctx, f, ag.Name(), "snap-bad", fn.Version, `{"name":"after"}`)
			if err != nil {
				t.Fatalf("invoke after damage: %v", err)
			}
			if res.FunctionError != "" || !strings.Contains(string(res.Payload), "hello, after") {
				t.Fatalf("result %s %s", res.FunctionError, res.Payload)
			}
			if res.StartKind != api.StartCold {
				t.Fatalf("start %s, want cold after a bad snapshot", res.StartKind)
			}
			// Discarded: gone, or already replaced by a fresh one taken after this cold start.
			if got, err := ag.Snapshot("snap-bad", fn.Version); err == nil && !got.Created.After(e.Created) {
				t.Fatalf("bad snapshot still stored (%+v)", got.Meta)
			} else if err != nil && !errors.Is(err, snapshots.ErrNotFound) {
				t.Fatalf("Snapshot: %v", err)
			}
			waitSnapshot(t, ag, "snap-bad", fn.Version, e.Created.Add(time.Nanosecond))
		})
	}
}

// TestPoolRefillsByRestore: a pool on an agent holding a faster snapshot
// is refilled by restoring, not by init.
func TestPoolRefillsByRestore(t *testing.T) {
	requireCRIU(t)
	f := cluster(t)
	c := f.cluster.Client()
	ctx := t.Context()
	fn := deploy(t, c, "snap-pool", exampleImage(t, f, "heavy-init"), func(s *api.FunctionSpec) {
		s.MemoryMB = 256
		s.Timeout = api.Duration(10 * time.Second)
	})
	t0 := time.Now()
	cold, err := c.Invoke(ctx, "snap-pool", []byte(`{}`))
	if err != nil || cold.StartKind != api.StartCold {
		t.Fatalf("first invoke: %v %+v", err, cold)
	}
	ag := agentNamed(t, f, cold.Agent)
	waitSnapshot(t, ag, "snap-pool", fn.Version, t0)
	ag.RetireIdle("snap-pool")
	if _, err := c.SetPool(ctx, "snap-pool", api.PoolChange{MinWarm: ptr(2)}); err != nil {
		t.Fatal(err)
	}
	defer c.SetPool(context.WithoutCancel(ctx), "snap-pool", api.PoolChange{MinWarm: ptr(0), KeepAlive: ptr(api.Duration(time.Second))})
	waitFor(t, "two idle instances", func() bool { idle, _, _ := instancesOf(t, c, "snap-pool"); return idle == 2 })
	restored := 0
	for _, in := range ag.Instances() {
		if in.Function == "snap-pool" && in.StartKind == api.StartRestore {
			restored++
		}
	}
	if restored == 0 {
		t.Errorf("agent %s refilled its pool share without restoring (decision %q): %+v", ag.Name(), ag.SnapshotDecision("snap-pool", fn.Version), ag.Instances())
	}
}

// TestSnapshotRestoredInitOutOfReach: amber-init restored from a snapshot
// is as far out of the function's reach as a cold one (non-dumpable,
// CAP_KILL alone), and the restored instance serves on.
func TestSnapshotRestoredInitOutOfReach(t *testing.T) {
	requireCRIU(t)
	f := cluster(t)
	c := f.cluster.Client()
	fn := deploy(t, c, "snap-initattack", attackImage(t, f, ""))
	t0 := time.Now()
	cold, err := c.Invoke(t.Context(), "snap-initattack", []byte(`{}`))
	if err != nil || cold.FunctionError != "" {
		t.Fatalf("cold invoke: %v %+v", err, cold)
	}
	ag := agentNamed(t, f, cold.Agent)
	waitSnapshot(t, ag, "snap-initattack", fn.Version, t0)
	ag.RetireIdle("snap-initattack")
	invoke := func(payload string) (*api.InvokeResult, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		return agentInvoke(ctx, f, ag.Name(), "snap-initattack", fn.Version, payload)
	}
	// Where criu lacks CAP_SYS_RESOURCE a snapshotted instance runs
	// wholly as uid 0 (agent/checkpoint.go): then only being
	// non-dumpable keeps amber-init out of reach, and the function may
	// signal it. Ask first who is who.
	first, err := invoke(`{}`)
	if err != nil {
		t.Fatal(err)
	}
	if first.StartKind != api.StartRestore {
		t.Fatalf("start %s, want a restore (decision %q)", first.StartKind, ag.SnapshotDecision("snap-initattack", fn.Version))
	}
	var ids map[string]string
	if err := json.Unmarshal(first.Payload, &ids); err != nil {
		t.Fatalf("result %q: %v", first.Payload, err)
	}
	res, _ := initAttack(t, invoke, ids["uid"] != ids["init_uid"])
	if res.Instance != first.Instance {
		t.Errorf("attack ran on %s, not on the restored %s", res.Instance, first.Instance)
	}
}
