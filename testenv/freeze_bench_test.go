package testenv_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd"

	"github.com/amberfn/amber/agent"
	"github.com/amberfn/amber/api"
)

// freezeSetting is one agent of BenchmarkFreeze.
type freezeSetting struct {
	name  string
	after time.Duration // agent.WithFreezeAfter
	a     *agent.Agent
	back  []time.Duration // back-to-back warm invokes
	gap   []time.Duration // warm invokes after the instance sat idle
	paced []time.Duration // warm invokes 10 ms apart
}

// BenchmarkFreeze measures what freezing idle instances costs a warm
// invoke of examples/hello, in one run, interleaved, on three agents of
// the same cluster that differ only in freezing: never (the baseline),
// as soon as the runtime is back on /next, and after DefaultFreezeAfter
// idle. "back" invokes follow each other at once; "paced" ones come
// 10 ms apart (the at-once agent freezes and thaws between them, the
// other does not); "gap" invokes come
// after 100 ms idle, when both freezing agents have frozen the instance,
// so each pays a thaw (and the baseline a wake-up from idle). Invokes are in-process (*Agent).Invoke: agent,
// frames, amber-init, runtime and back, no HTTP.
//
// It also times the two ways to freeze the same idle instance: the
// cgroup freezer file written directly (what the agent does) and
// containerd's task Pause/Resume (agent → containerd → shim → runc).
func BenchmarkFreeze(b *testing.B) {
	f := clusterB(b)
	ctx := b.Context()
	c := f.cluster.Client()
	fn := deploy(b, c, "bench-freeze", f.images["hello"])
	rounds := benchRounds(b, 300)
	settings := []*freezeSetting{
		{name: "off", after: -1},
		{name: "at-once", after: 0},
		{name: "after-" + agent.DefaultFreezeAfter.String(), after: agent.DefaultFreezeAfter},
	}
	for _, s := range settings {
		s.a, _, _ = inProcessAgent(b, f, "bench-freeze-"+strings.ReplaceAll(s.name, "ms", ""), agent.WithFreezeAfter(s.after))
		b.Cleanup(func() { s.a.Shutdown(ctx) })
	}
	payload := []byte(`{"name":"bench"}`)
	invoke := func(s *freezeSetting) time.Duration {
		t0 := time.Now()
		res, err := s.a.Invoke(ctx, fn.Name, fn.Version, "", payload)
		d := time.Since(t0)
		if err != nil || res.FunctionError != "" {
			b.Fatalf("%s: invoke: %v %+v", s.name, err, res)
		}
		return d
	}
	for _, s := range settings {
		invoke(s) // the cold start
		invoke(s)
	}
	// Blocks of back-to-back invokes, one agent at a time (in turn), each
	// after 100 ms of quiet: every agent's freezing is done by then, so
	// no agent's freeze runs during another's invokes. A block's first
	// invoke is a "gap" one, the rest "back".
	const block = 10
	b.ResetTimer()
	for range b.N {
		for i := range max(rounds/block, 20) {
			for j := range settings {
				s := settings[(i+j)%len(settings)]
				time.Sleep(100 * time.Millisecond)
				s.gap = append(s.gap, invoke(s))
				for range block - 1 {
					s.back = append(s.back, invoke(s))
				}
				for range block {
					time.Sleep(10 * time.Millisecond)
					s.paced = append(s.paced, invoke(s))
				}
			}
		}
	}
	b.StopTimer()
	base := settings[0]
	bp50, gp50, pp50 := percentile(base.back, 50), percentile(base.gap, 50), percentile(base.paced, 50)
	for _, s := range settings {
		p50b, p50g, p50p := percentile(s.back, 50), percentile(s.gap, 50), percentile(s.paced, 50)
		b.ReportMetric(us(p50b), s.name+"-back-p50-µs")
		b.ReportMetric(us(p50p), s.name+"-paced-p50-µs")
		b.ReportMetric(us(p50g), s.name+"-gap-p50-µs")
		if s != base {
			b.ReportMetric(float64(p50b)/float64(bp50), s.name+"/off-back")
			b.ReportMetric(float64(p50p)/float64(pp50), s.name+"/off-paced")
			b.ReportMetric(float64(p50g)/float64(gp50), s.name+"/off-gap")
		}
		b.Logf("freeze %s: back-to-back p50 %s p99 %s (%.2f× off); 10 ms apart p50 %s p99 %s (%.2f× off); after 100 ms idle p50 %s p99 %s (%.2f× off)",
			s.name, p50b, percentile(s.back, 99), float64(p50b)/float64(bp50),
			p50p, percentile(s.paced, 99), float64(p50p)/float64(pp50),
			p50g, percentile(s.gap, 99), float64(p50g)/float64(gp50))
	}

	// The mechanisms, on the baseline agent's idle instance (never frozen
	// by its agent).
	var id string
	for _, in := range base.a.Instances() {
		id = in.ID
	}
	ctd, err := containerd.New(f.cluster.Containerd.Address, containerd.WithDefaultNamespace(agent.Namespace))
	if err != nil {
		b.Fatal(err)
	}
	defer ctd.Close()
	cont, err := ctd.LoadContainer(ctx, id)
	if err != nil {
		b.Fatal(err)
	}
	task, err := cont.Task(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	state := filepath.Join("/sys/fs/cgroup/freezer", agent.Namespace, id, "freezer.state")
	var cgFreeze, cgThaw, ctrPause, ctrResume []time.Duration
	for range 50 {
		t0 := time.Now()
		writeFreezer(b, state, "FROZEN")
		t1 := time.Now()
		writeFreezer(b, state, "THAWED")
		t2 := time.Now()
		if err := task.Pause(ctx); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		if err := task.Resume(ctx); err != nil {
			b.Fatal(err)
		}
		t4 := time.Now()
		cgFreeze, cgThaw = append(cgFreeze, t1.Sub(t0)), append(cgThaw, t2.Sub(t1))
		ctrPause, ctrResume = append(ctrPause, t3.Sub(t2)), append(ctrResume, t4.Sub(t3))
	}
	cg, ctr := percentile(cgFreeze, 50)+percentile(cgThaw, 50), percentile(ctrPause, 50)+percentile(ctrResume, 50)
	b.ReportMetric(us(cg), "cgroup-freeze+thaw-p50-µs")
	b.ReportMetric(us(ctr), "task-pause+resume-p50-µs")
	b.Logf("freeze+thaw p50: cgroup freezer file %s (freeze %s, thaw %s); containerd task Pause+Resume %s (pause %s, resume %s); %.0f×",
		cg, percentile(cgFreeze, 50), percentile(cgThaw, 50), ctr, percentile(ctrPause, 50), percentile(ctrResume, 50), float64(ctr)/float64(cg))
	if r, err := base.a.Invoke(ctx, fn.Name, fn.Version, "", payload); err != nil || r.StartKind != api.StartWarm {
		b.Fatalf("invoke after the mechanism rounds: %v %+v", err, r)
	}
}

// writeFreezer writes a v1 freezer state and, for FROZEN, waits until
// every task has stopped.
func writeFreezer(b *testing.B, path, state string) {
	for {
		if err := os.WriteFile(path, []byte(state), 0); err != nil {
			b.Fatal(err)
		}
		if state != "FROZEN" {
			return
		}
		got, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		if strings.TrimSpace(string(got)) == "FROZEN" {
			return
		}
		time.Sleep(50 * time.Microsecond)
	}
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
