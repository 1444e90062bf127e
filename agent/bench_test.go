package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"testing"
	"time"

	"github.com/amberfn/amber/agent/initd"
	"github.com/amberfn/amber/api"
)

// BenchmarkWarmInvokeAgent measures a warm no-op invocation through
// (*Agent).Invoke (agent → frames over pipes → real amber-init → fake
// runtime process → back), interleaved in the same run with a baseline:
// the same Runtime API exchange served in-process by initd.RuntimeAPI on a
// loopback httptest server to a runtime loop in a goroutine (deliver the
// invocation, the parked /next returns, POST /response, the response frame
// arrives). The difference is what the agent, the frame pipes and the
// process boundary add. ns/op is the time of one pair (agent + baseline).
func BenchmarkWarmInvokeAgent(b *testing.B) {
	e := newTestEnv(b, []*api.Function{testFn("bench", 1, 10*time.Second, nil)})
	ctx := b.Context()
	payload := []byte(`{"op":"echo"}`)
	if r, err := e.a.Invoke(ctx, "bench", 1, "", payload); err != nil || r.FunctionError != "" {
		b.Fatalf("first invoke: %v %+v", err, r)
	}
	direct := newDirectRuntime(b)
	if err := direct.call(ctx, "warmup", payload); err != nil {
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
		if err := direct.call(ctx, id, payload); err != nil {
			b.Fatalf("direct call %d: %v", i, err)
		}
		directLat = append(directLat, time.Since(t0))
	}
	b.StopTimer()
	ap50, ap99 := percentile(agentLat, 50), percentile(agentLat, 99)
	dp50, dp99 := percentile(directLat, 50), percentile(directLat, 99)
	b.ReportMetric(us(ap50), "agent-p50-µs")
	b.ReportMetric(us(ap99), "agent-p99-µs")
	b.ReportMetric(us(dp50), "direct-p50-µs")
	b.ReportMetric(us(dp99), "direct-p99-µs")
	b.ReportMetric(float64(ap50)/float64(dp50), "agent/direct-p50")
	b.ReportMetric(us(ap50-dp50), "added-p50-µs")
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// percentile returns the p-th percentile (0–100) of ds, sorting it.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[int(float64(len(ds)-1)*p/100)]
}

// directRuntime is the baseline: an in-process Runtime API on loopback
// and a runtime loop parked on /next, with no process or pipe between.
type directRuntime struct {
	rt     *initd.RuntimeAPI
	frames chan api.Frame
}

type chanSender chan api.Frame

func (c chanSender) Write(f api.Frame) error { c <- f; return nil }

func newDirectRuntime(b *testing.B) *directRuntime {
	frames := make(chan api.Frame, 16)
	d := &directRuntime{rt: initd.NewRuntimeAPI(chanSender(frames), nil), frames: frames}
	srv := httptest.NewServer(d.rt)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	b.Cleanup(func() { cancel(); srv.Close(); <-done })
	go func() { // the runtime: /next, then /response with the event
		defer close(done)
		base := srv.URL + "/2018-06-01/runtime/"
		hc := srv.Client()
		for ctx.Err() == nil {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"invocation/next", nil)
			resp, err := hc.Do(req)
			if err != nil {
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			id := resp.Header.Get("Lambda-Runtime-Aws-Request-Id")
			req, _ = http.NewRequestWithContext(ctx, http.MethodPost, base+"invocation/"+id+"/response", bytes.NewReader(body))
			resp, err = hc.Do(req)
			if err != nil {
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	return d
}

// call delivers one invocation and waits for its response frame.
func (d *directRuntime) call(ctx context.Context, id string, payload []byte) error {
	err := d.rt.Deliver(ctx, api.Frame{Kind: api.FrameInvoke, Meta: api.FrameMeta{
		RequestID: id, DeadlineMs: time.Now().Add(10 * time.Second).UnixMilli(),
	}, Body: payload})
	if err != nil {
		return err
	}
	for {
		select {
		case f := <-d.frames:
			switch f.Kind {
			case api.FrameResponse:
				if f.Meta.RequestID != id || !bytes.Equal(f.Body, payload) {
					return fmt.Errorf("response %q %s, want %q %s", f.Meta.RequestID, f.Body, id, payload)
				}
				return nil
			case api.FrameError:
				return fmt.Errorf("error frame: %s", f.Body)
			}
			// FrameReady: the runtime is parked on /next.
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
