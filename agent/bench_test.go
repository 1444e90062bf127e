package agent

import (
	"fmt"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/testenv/bench"
)

// BenchmarkWarmInvokeAgent measures a warm no-op invocation through
// (*Agent).Invoke (agent → frames over pipes → real amber-init → fake
// runtime process → back), interleaved in the same run with a baseline:
// the same Runtime API exchange served in-process by initd.RuntimeAPI on
// loopback to a runtime loop in a goroutine (bench.DirectRuntime: deliver
// the invocation, the parked /next returns, POST /response, the response
// frame arrives). The difference is what the agent, the frame pipes and the
// process boundary add. ns/op is the time of one pair (agent + baseline).
func BenchmarkWarmInvokeAgent(b *testing.B) {
	e := newTestEnv(b, []*api.Function{testFn("bench", 1, 10*time.Second, nil)})
	ctx := b.Context()
	payload := []byte(`{"op":"echo"}`)
	if r, err := e.a.Invoke(ctx, "bench", 1, "", payload); err != nil || r.FunctionError != "" {
		b.Fatalf("first invoke: %v %+v", err, r)
	}
	direct, err := bench.NewDirectRuntime()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(direct.Close)
	if err := direct.Call(ctx, "warmup", payload); err != nil {
		b.Fatal(err)
	}

	agentLat := make([]time.Duration, 0, b.N)
	directLat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		id := fmt.Sprintf("bench-%d", i)
		t0 := time.Now()
		r, err := e.a.Invoke(ctx, "bench", 1, id, payload)
		d := time.Since(t0)
		if err != nil || r.StartKind != api.StartWarm || r.FunctionError != "" {
			b.Fatalf("warm invoke %d: %v %+v", i, err, r)
		}
		agentLat = append(agentLat, d)

		t0 = time.Now()
		if err := direct.Call(ctx, id, payload); err != nil {
			b.Fatalf("direct call %d: %v", i, err)
		}
		directLat = append(directLat, time.Since(t0))
	}
	b.StopTimer()
	ap50, ap99 := bench.Percentile(agentLat, 50), bench.Percentile(agentLat, 99)
	dp50, dp99 := bench.Percentile(directLat, 50), bench.Percentile(directLat, 99)
	b.ReportMetric(us(ap50), "agent-p50-µs")
	b.ReportMetric(us(ap99), "agent-p99-µs")
	b.ReportMetric(us(dp50), "direct-p50-µs")
	b.ReportMetric(us(dp99), "direct-p99-µs")
	b.ReportMetric(float64(ap50)/float64(dp50), "agent/direct-p50")
	b.ReportMetric(us(ap50-dp50), "added-p50-µs")
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
