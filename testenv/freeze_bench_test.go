package testenv_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd"

	"github.com/amberfn/amber/agent"
	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/testenv/bench"
)

// freezeSetting is one agent of measureFreeze.
type freezeSetting struct {
	Name  string
	after time.Duration // agent.WithFreezeAfter
	a     *agent.Agent
	Back  []time.Duration // back-to-back warm invokes
	Paced []time.Duration // warm invokes 10 ms apart
	Gap   []time.Duration // warm invokes after the instance sat idle 100 ms
}

// freezeResult is what measureFreeze measured; Settings[0] is the
// baseline (never frozen).
type freezeResult struct {
	Settings []*freezeSetting
	Blocks   int
	// Freeze and thaw of one idle instance: the cgroup freezer file
	// written directly, and containerd's task Pause and Resume.
	CgFreeze, CgThaw, CtrPause, CtrResume []time.Duration
}

// measureFreeze measures what freezing idle instances costs a warm
// invoke of examples/hello, interleaved, on three in-process agents of the
// same cluster that differ only in freezing: never (the baseline), as
// soon as the runtime is back on /next (agent.WithFreezeAfter(0)), and
// after agent.DefaultFreezeAfter idle. Each agent in turn, after 100 ms of
// quiet (every agent's freezing is done by then, so none runs during
// another's invokes), gets one "gap" invoke (its instance has been idle
// 100 ms: frozen on both freezing agents, so it pays a thaw; the baseline
// pays a wake-up from idle), then "back" invokes one after the other, then
// "paced" invokes 10 ms apart (the at-once agent freezes and thaws between
// them, the delayed one does not). Invokes are (*Agent).Invoke: agent,
// frames, amber-init, runtime and back, no HTTP.
//
// Then it times the two ways to freeze the baseline's idle instance: the
// cgroup freezer file written directly (what the agent does) and
// containerd's task Pause/Resume (agent → containerd → shim → runc).
func measureFreeze(tb testing.TB, f *fixture, blocks int) *freezeResult {
	tb.Helper()
	ctx := tb.Context()
	c := f.cluster.Client()
	fn := deploy(tb, c, "bench-freeze", f.images["hello"])
	r := &freezeResult{Blocks: blocks, Settings: []*freezeSetting{
		{Name: "off", after: -1},
		{Name: "at once", after: 0},
		{Name: "after " + agent.DefaultFreezeAfter.String(), after: agent.DefaultFreezeAfter},
	}}
	for i, s := range r.Settings {
		s.a, _, _ = inProcessAgent(tb, f, fmt.Sprintf("bench-freeze-%d", i), agent.WithFreezeAfter(s.after))
		tb.Cleanup(func() { s.a.Shutdown(context.WithoutCancel(ctx)) })
	}
	payload := []byte(`{"name":"bench"}`)
	invoke := func(s *freezeSetting) time.Duration {
		t0 := time.Now()
		res, err := s.a.Invoke(ctx, fn.Name, fn.Version, "", payload)
		d := time.Since(t0)
		if err != nil || res.FunctionError != "" {
			tb.Fatalf("freeze %s: invoke: %v %+v", s.Name, err, res)
		}
		return d
	}
	for _, s := range r.Settings {
		invoke(s) // the cold start
		invoke(s)
	}
	const block = 10
	for i := range blocks {
		for j := range r.Settings {
			s := r.Settings[(i+j)%len(r.Settings)]
			time.Sleep(100 * time.Millisecond)
			s.Gap = append(s.Gap, invoke(s))
			for range block {
				s.Back = append(s.Back, invoke(s))
			}
			for range block {
				time.Sleep(10 * time.Millisecond)
				s.Paced = append(s.Paced, invoke(s))
			}
		}
	}

	var id string
	for _, in := range r.Settings[0].a.Instances() {
		id = in.ID
	}
	ctd, err := containerd.New(f.cluster.Containerd.Address, containerd.WithDefaultNamespace(agent.Namespace))
	if err != nil {
		tb.Fatal(err)
	}
	defer ctd.Close()
	cont, err := ctd.LoadContainer(ctx, id)
	if err != nil {
		tb.Fatal(err)
	}
	task, err := cont.Task(ctx, nil)
	if err != nil {
		tb.Fatal(err)
	}
	state := filepath.Join("/sys/fs/cgroup/freezer", agent.Namespace, id, "freezer.state")
	for range 30 {
		t0 := time.Now()
		writeFreezer(tb, state, "FROZEN")
		t1 := time.Now()
		writeFreezer(tb, state, "THAWED")
		t2 := time.Now()
		// runc gives up on a freeze that takes long ("unable to freeze"):
		// such rounds are not counted.
		if err := task.Pause(ctx); err != nil {
			tb.Logf("containerd task Pause: %v", err)
			_ = task.Resume(ctx)
			continue
		}
		t3 := time.Now()
		if err := task.Resume(ctx); err != nil {
			tb.Fatal(err)
		}
		t4 := time.Now()
		r.CgFreeze, r.CgThaw = append(r.CgFreeze, t1.Sub(t0)), append(r.CgThaw, t2.Sub(t1))
		r.CtrPause, r.CtrResume = append(r.CtrPause, t3.Sub(t2)), append(r.CtrResume, t4.Sub(t3))
	}
	if res, err := r.Settings[0].a.Invoke(ctx, fn.Name, fn.Version, "", payload); err != nil || res.StartKind != api.StartWarm {
		tb.Fatalf("invoke after the freezer rounds: %v %+v", err, res)
	}
	return r
}

// BenchmarkFreeze reports measureFreeze: warm invoke p50 with freezing at
// once and after DefaultFreezeAfter, as ratios to never freezing, and the
// cost of the two freeze mechanisms.
func BenchmarkFreeze(b *testing.B) {
	f := clusterB(b)
	blocks := max(benchRounds(b, 300)/10, 10)
	var r *freezeResult
	b.ResetTimer()
	for range b.N {
		r = measureFreeze(b, f, blocks)
	}
	b.StopTimer()
	base := r.Settings[0]
	bp50, pp50, gp50 := percentile(base.Back, 50), percentile(base.Paced, 50), percentile(base.Gap, 50)
	for _, s := range r.Settings {
		key := strings.ReplaceAll(s.Name, " ", "-")
		p50b, p50p, p50g := percentile(s.Back, 50), percentile(s.Paced, 50), percentile(s.Gap, 50)
		b.ReportMetric(us(p50b), key+"-back-p50-µs")
		b.ReportMetric(us(p50p), key+"-paced-p50-µs")
		b.ReportMetric(us(p50g), key+"-gap-p50-µs")
		if s != base {
			b.ReportMetric(float64(p50b)/float64(bp50), key+"/off-back")
			b.ReportMetric(float64(p50p)/float64(pp50), key+"/off-paced")
			b.ReportMetric(float64(p50g)/float64(gp50), key+"/off-gap")
		}
		b.Logf("freeze %s: back-to-back p50 %s p99 %s (%.2f× off); 10 ms apart p50 %s p99 %s (%.2f× off); after 100 ms idle p50 %s p99 %s (%.2f× off)",
			s.Name, p50b, percentile(s.Back, 99), float64(p50b)/float64(bp50),
			p50p, percentile(s.Paced, 99), float64(p50p)/float64(pp50),
			p50g, percentile(s.Gap, 99), float64(p50g)/float64(gp50))
	}
	cg := percentile(r.CgFreeze, 50) + percentile(r.CgThaw, 50)
	ctr := percentile(r.CtrPause, 50) + percentile(r.CtrResume, 50)
	b.ReportMetric(us(cg), "cgroup-freeze+thaw-p50-µs")
	b.ReportMetric(us(ctr), "task-pause+resume-p50-µs")
	b.Logf("freeze+thaw p50: cgroup freezer file %s (freeze %s, thaw %s); containerd task Pause+Resume %s (pause %s, resume %s); %.0f×",
		cg, percentile(r.CgFreeze, 50), percentile(r.CgThaw, 50), ctr, percentile(r.CtrPause, 50), percentile(r.CtrResume, 50), float64(ctr)/float64(cg))
}

// writeFreezer writes a v1 freezer state and, for FROZEN, waits until
// every task has stopped.
func writeFreezer(tb testing.TB, path, state string) {
	for {
		if err := os.WriteFile(path, []byte(state), 0); err != nil {
			tb.Fatal(err)
		}
		if state != "FROZEN" {
			return
		}
		got, err := os.ReadFile(path)
		if err != nil {
			tb.Fatal(err)
		}
		if strings.TrimSpace(string(got)) == "FROZEN" {
			return
		}
		time.Sleep(50 * time.Microsecond)
	}
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// writeFreezeSection writes measureFreeze's figures for BENCH.md.
func writeFreezeSection(w func(string, ...any), r *freezeResult) {
	w("### Freezing idle instances\n\n")
	w("examples/hello on three in-process agents of one cluster that differ only in when an idle instance is frozen, %d blocks interleaved "+
		"(measureFreeze in testenv/freeze_bench_test.go; alone: `go test -run '^$' -bench '^BenchmarkFreeze$' -benchtime 1x ./testenv`). "+
		"Each block: one invoke after 100 ms idle (frozen on both freezing agents: it pays a thaw), 10 back to back, 10 paced 10 ms apart.\n\n", r.Blocks)
	base := r.Settings[0]
	t := bench.Table{Header: []string{"freeze", "back to back p50", "÷ off", "10 ms apart p50", "÷ off", "after 100 ms idle p50", "÷ off", "p99"}}
	for _, s := range r.Settings {
		b, p, g := bench.Summarize(s.Back), bench.Summarize(s.Paced), bench.Summarize(s.Gap)
		t.Add(s.Name, bench.Dur(b.P50), bench.X(bench.Ratio(b.P50, percentile(base.Back, 50))),
			bench.Dur(p.P50), bench.X(bench.Ratio(p.P50, percentile(base.Paced, 50))),
			bench.Dur(g.P50), bench.X(bench.Ratio(g.P50, percentile(base.Gap, 50))), bench.Dur(g.P99))
	}
	w("%s\n", t.String())
	if len(r.CtrPause) > 0 {
		cg := percentile(r.CgFreeze, 50) + percentile(r.CgThaw, 50)
		ctr := percentile(r.CtrPause, 50) + percentile(r.CtrResume, 50)
		w("One freeze and thaw of an idle instance, p50: the cgroup freezer file written by the agent %s (freeze %s, off the invoke's path; thaw %s), "+
			"containerd's task Pause and Resume (runc pause) %s: %s.\n\n",
			bench.Dur(cg), bench.Dur(percentile(r.CgFreeze, 50)), bench.Dur(percentile(r.CgThaw, 50)), bench.Dur(ctr), bench.X(bench.Ratio(ctr, cg)))
	}
}
