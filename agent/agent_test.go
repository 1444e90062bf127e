package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// invokeStep is one invocation in a scenario and what it must produce.
type invokeStep struct {
	payload string
	kind    api.StartKind // cold: a new instance; warm: the previous step's instance
	echo    bool          // the payload comes back as it was sent
	errType string        // the result is a FunctionError of this type
	has     []string      // substrings of the error message
}

func TestInvoke(t *testing.T) {
	t.Parallel()
	const sec = time.Second
	cases := []struct {
		name    string
		env     map[string]string
		timeout time.Duration
		steps   []invokeStep
		live    int // instance processes left at the end
	}{
		{
			name: "cold then warm",
			steps: []invokeStep{
				{payload: `{"op":"echo","n":1}`, kind: api.StartCold, echo: true},
				{payload: `{"op":"echo","n":2}`, kind: api.StartWarm, echo: true},
				{payload: `"plain string"`, kind: api.StartWarm, echo: true},
			},
			live: 1,
		},
		{
			name: "function error keeps the instance",
			steps: []invokeStep{
				{payload: `{"op":"error"}`, kind: api.StartCold, errType: "FakeError", has: []string{"boom"}},
				{payload: `{"op":"echo"}`, kind: api.StartWarm, echo: true},
			},
			live: 1,
		},
		{
			name:    "timeout replaces the instance",
			timeout: sec,
			steps: []invokeStep{
				{payload: `{"op":"sleep","ms":30000}`, kind: api.StartCold, errType: "Sandbox.Timedout",
					has: []string{"Task timed out after 1.00 seconds"}},
				{payload: `{"op":"echo"}`, kind: api.StartCold, echo: true},
				{payload: `{"op":"echo"}`, kind: api.StartWarm, echo: true},
			},
			live: 1,
		},
		{
			name: "runtime exits during init",
			env:  map[string]string{fakeInitEnv: "exit"},
			steps: []invokeStep{
				{payload: `{}`, kind: api.StartCold, errType: "Runtime.ExitError",
					has: []string{"exit status 3", "fake: loading config", "fake: config is broken"}},
				{payload: `{}`, kind: api.StartCold, errType: "Runtime.ExitError", has: []string{"exit status 3"}},
			},
		},
		{
			name: "runtime posts init error",
			env:  map[string]string{fakeInitEnv: "error"},
			steps: []invokeStep{
				{payload: `{}`, kind: api.StartCold, errType: "Fake.InitBroken", has: []string{"cannot load handler"}},
			},
		},
		{
			name: "runtime never calls next",
			env:  map[string]string{fakeInitEnv: "hang"},
			steps: []invokeStep{
				{payload: `{}`, kind: api.StartCold, errType: "Runtime.InitTimeout", has: []string{"never called /next"}},
			},
		},
		{
			name: "runtime exits mid-invocation",
			steps: []invokeStep{
				{payload: `{"op":"echo"}`, kind: api.StartCold, echo: true},
				{payload: `{"op":"exit","code":4}`, kind: api.StartWarm, errType: "Runtime.ExitError",
					has: []string{"exit status 4", "fake: crashing now"}},
				{payload: `{"op":"echo"}`, kind: api.StartCold, echo: true},
			},
			live: 1,
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			timeout := tc.timeout
			if timeout == 0 {
				timeout = 10 * sec
			}
			name := fmt.Sprintf("fn-%d", i)
			e := newTestEnv(t, []*api.Function{testFn(name, 1, timeout, tc.env)}, withInitTimeout(2*sec))
			ctx := t.Context()
			seen := map[string]bool{}
			prev := ""
			for j, st := range tc.steps {
				reqID := fmt.Sprintf("req-%d", j)
				res, err := e.a.Invoke(ctx, name, 1, reqID, []byte(st.payload))
				if err != nil {
					t.Fatalf("step %d: Invoke: %v", j, err)
				}
				checkResult(t, j, res, st, reqID)
				if res.StartKind == api.StartCold && res.Instance != "" {
					if seen[res.Instance] {
						t.Errorf("step %d: cold start on instance %s that served before", j, res.Instance)
					}
				}
				if st.kind == api.StartWarm && res.Instance != prev {
					t.Errorf("step %d: warm start on instance %q, want the previous step's %q", j, res.Instance, prev)
				}
				seen[res.Instance] = true
				prev = res.Instance
			}
			e.l.waitLive(t, tc.live)
			insts := e.a.Instances()
			if len(insts) != tc.live {
				t.Fatalf("Instances() = %+v, want %d", insts, tc.live)
			}
			for _, in := range insts {
				if in.State != api.StateIdle || in.ID != prev || in.Function != name || in.Agent != "test-agent" {
					t.Errorf("instance %+v: want idle, id %s, function %s, agent test-agent", in, prev, name)
				}
			}
		})
	}
}

// checkResult checks one InvokeResult against its step.
func checkResult(t *testing.T, step int, res *api.InvokeResult, st invokeStep, reqID string) {
	t.Helper()
	t.Logf("step %d: %s start on %q, init %v, billed %d ms, function error %q: %s",
		step, res.StartKind, res.Instance, res.InitDuration, res.BilledMs, res.FunctionError, res.Payload)
	if res.RequestID != reqID || res.Version != 1 || res.Agent != "test-agent" || res.MemoryMB != 128 {
		t.Errorf("step %d: result ids %q v%d %q %d MB, want %q v1 test-agent 128 MB",
			step, res.RequestID, res.Version, res.Agent, res.MemoryMB, reqID)
	}
	if res.StartKind != st.kind {
		t.Errorf("step %d: start kind %q, want %q (payload %s)", step, res.StartKind, st.kind, res.Payload)
	}
	if res.BilledMs < 1 {
		t.Errorf("step %d: BilledMs = %d, want ≥ 1", step, res.BilledMs)
	}
	if res.StartKind == api.StartCold && res.InitDuration <= 0 {
		t.Errorf("step %d: cold start with InitDuration %v", step, res.InitDuration)
	}
	if res.StartKind == api.StartWarm && res.InitDuration != 0 {
		t.Errorf("step %d: warm start with InitDuration %v", step, res.InitDuration)
	}
	if st.echo {
		if res.FunctionError != "" || string(res.Payload) != st.payload {
			t.Errorf("step %d: got FunctionError %q payload %s, want echo of %s", step, res.FunctionError, res.Payload, st.payload)
		}
	}
	if st.errType != "" {
		if res.FunctionError != "Unhandled" {
			t.Errorf("step %d: FunctionError = %q, want Unhandled (payload %s)", step, res.FunctionError, res.Payload)
		}
		var fe api.FunctionError
		if err := json.Unmarshal(res.Payload, &fe); err != nil {
			t.Fatalf("step %d: payload is not a FunctionError: %v: %s", step, err, res.Payload)
		}
		if fe.ErrorType != st.errType {
			t.Errorf("step %d: errorType %q, want %q (message %q)", step, fe.ErrorType, st.errType, fe.ErrorMessage)
		}
		for _, s := range st.has {
			if !strings.Contains(fe.ErrorMessage, s) {
				t.Errorf("step %d: errorMessage %q lacks %q", step, fe.ErrorMessage, s)
			}
		}
	}
}

func TestInvokeConcurrent(t *testing.T) {
	t.Parallel()
	const n = 5
	e := newTestEnv(t, []*api.Function{testFn("conc", 1, 20*time.Second, nil)})
	// Each invocation waits (at most 10 s) until two have arrived: that
	// only happens when the agent runs them on separate instances.
	payload := fmt.Sprintf(`{"op":"barrier","dir":%q,"n":2}`, t.TempDir())
	var wg sync.WaitGroup
	results := make([]*api.InvokeResult, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = e.a.Invoke(t.Context(), "conc", 1, fmt.Sprintf("req-%d", i), []byte(payload))
		})
	}
	wg.Wait()
	ids := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("invoke %d: %v", i, errs[i])
		}
		r := results[i]
		if r.FunctionError != "" || r.RequestID != fmt.Sprintf("req-%d", i) {
			t.Errorf("invoke %d: %+v payload %s", i, r, r.Payload)
		}
		if seen, _ := strconv.Atoi(string(r.Payload)); seen < 2 {
			t.Errorf("invoke %d: the barrier saw %s arrivals, want ≥ 2", i, r.Payload)
		}
		ids[r.Instance] = true
	}
	if len(ids) < 2 {
		t.Errorf("%d concurrent invokes ran on %d instance(s), want more than one", n, len(ids))
	}
	insts := e.a.Instances()
	if len(insts) != len(ids) || e.l.launches() != len(ids) {
		t.Errorf("%d instances listed and %d launched, want %d", len(insts), e.l.launches(), len(ids))
	}
	for _, in := range insts {
		if in.State != api.StateIdle || !ids[in.ID] {
			t.Errorf("instance %s is %s, want idle and one that served", in.ID, in.State)
		}
	}
	e.l.waitLive(t, len(ids))
}

func TestInvokeVersionChangeRetiresOld(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, []*api.Function{testFn("ver", 1, 10*time.Second, nil), testFn("ver", 2, 10*time.Second, nil)})
	ctx := t.Context()
	r1, err := e.a.Invoke(ctx, "ver", 1, "", []byte(`{}`))
	if err != nil || r1.FunctionError != "" {
		t.Fatalf("v1: %v %+v", err, r1)
	}
	if r1.RequestID == "" {
		t.Error("an empty request id was not replaced by a generated one")
	}
	r2, err := e.a.Invoke(ctx, "ver", 2, "", []byte(`{}`))
	if err != nil || r2.FunctionError != "" {
		t.Fatalf("v2: %v %+v", err, r2)
	}
	if r2.StartKind != api.StartCold || r2.Instance == r1.Instance || r2.Version != 2 {
		t.Errorf("v2 ran %s on %s (v%d), want cold on a new instance", r2.StartKind, r2.Instance, r2.Version)
	}
	e.l.waitLive(t, 1)
	insts := e.a.Instances()
	if len(insts) != 1 || insts[0].ID != r2.Instance || insts[0].Version != 2 {
		t.Fatalf("Instances() = %+v, want only the version 2 instance %s", insts, r2.Instance)
	}
	if ids := e.l.liveIDs(); len(ids) != 1 || ids[0] != r2.Instance {
		t.Errorf("live processes %v, want only %s", ids, r2.Instance)
	}
}

func TestReapKeepAlive(t *testing.T) {
	t.Parallel()
	const keep = time.Minute
	e := newTestEnv(t, []*api.Function{testFn("reap", 1, 10*time.Second, nil)}, WithKeepAlive(keep))
	// Two invocations that wait for each other: two instances.
	dir := t.TempDir()
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			r, err := e.a.Invoke(t.Context(), "reap", 1, "", fmt.Appendf(nil, `{"op":"barrier","dir":%q,"n":2}`, dir))
			if err != nil || r.FunctionError != "" {
				t.Errorf("invoke: %v %+v", err, r)
			}
		})
	}
	wg.Wait()
	if n := len(e.a.Instances()); n != 2 {
		t.Fatalf("%d instances before reaping, want 2", n)
	}
	e.a.reap(time.Now())
	if n := len(e.a.Instances()); n != 2 {
		t.Fatalf("reap(now) left %d instances, want 2", n)
	}
	e.a.reap(time.Now().Add(keep + time.Second))
	if insts := e.a.Instances(); len(insts) != 0 {
		t.Fatalf("reap after keep-alive left %+v", insts)
	}
	e.l.waitLive(t, 0)
	// The function still works: the next call is cold.
	r, err := e.a.Invoke(t.Context(), "reap", 1, "", []byte(`{}`))
	if err != nil || r.StartKind != api.StartCold {
		t.Fatalf("invoke after reap: %v %+v", err, r)
	}
}

func TestShutdown(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, []*api.Function{testFn("shut", 1, 10*time.Second, nil), testFn("other", 1, 10*time.Second, nil)})
	ctx := t.Context()
	for _, fn := range []string{"shut", "other"} {
		if _, err := e.a.Invoke(ctx, fn, 1, "", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	e.l.waitLive(t, 2)
	e.a.Shutdown(ctx)
	if insts := e.a.Instances(); len(insts) != 0 {
		t.Errorf("instances after Shutdown: %+v", insts)
	}
	e.l.waitLive(t, 0)
	for _, fn := range []string{"shut", "other"} {
		res, err := e.a.Invoke(ctx, fn, 1, "", []byte(`{}`))
		if !errors.Is(err, api.ErrUnavailable) {
			t.Errorf("Invoke %s after Shutdown = %+v, %v; want an error wrapping ErrUnavailable", fn, res, err)
		}
	}
	if n := e.l.launches(); n != 2 {
		t.Errorf("%d launches, want 2 (none after Shutdown)", n)
	}
}

func TestInvokeUnknownFunction(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	_, err := e.a.Invoke(t.Context(), "nope", 1, "", nil)
	if !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("Invoke of an unknown function: %v, want ErrNotFound", err)
	}
	if n := e.l.launches(); n != 0 {
		t.Errorf("%d launches for an unknown function", n)
	}
}

func TestHeartbeat(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, []*api.Function{testFn("beat", 1, 10*time.Second, nil)},
		WithHeartbeatInterval(20*time.Millisecond), WithAdvertiseURL("http://agent.test:7701"), WithCapacityMB(2048))
	r, err := e.a.Invoke(t.Context(), "beat", 1, "", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.a.Run(ctx) }()
	// Wait for two heartbeats that list the instance.
	deadline := time.After(15 * time.Second)
	for withInst := 0; withInst < 2; {
		select {
		case <-e.reg.hbCh:
		case <-deadline:
			t.Fatalf("heartbeats so far: %+v", e.reg.heartbeats())
		}
		withInst = 0
		for _, hb := range e.reg.heartbeats() {
			if len(hb.Instances) == 1 && hb.Instances[0].ID == r.Instance {
				withInst++
			}
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	for _, hb := range e.reg.heartbeats() {
		if hb.Name != "test-agent" || hb.URL != "http://agent.test:7701" || hb.CapacityMB != 2048 {
			t.Errorf("heartbeat %+v: want name test-agent, url http://agent.test:7701, 2048 MB", hb)
		}
		for _, in := range hb.Instances {
			if in.ID != r.Instance || in.Function != "beat" || in.Version != 1 || in.Agent != "test-agent" || in.State != api.StateIdle {
				t.Errorf("heartbeat instance %+v", in)
			}
		}
	}
	// Run stops every instance on its way out.
	if insts := e.a.Instances(); len(insts) != 0 {
		t.Errorf("instances after Run returned: %+v", insts)
	}
	e.l.waitLive(t, 0)
}

// TestInvokeWhileListing lists instances (as heartbeats and GET
// /v1/instances do) while invocations come and go; run it with -race.
func TestInvokeWhileListing(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, []*api.Function{testFn("listed", 1, 10*time.Second, nil)})
	stop := make(chan struct{})
	listed := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				listed <- n
				return
			default:
			}
			for _, in := range e.a.Instances() {
				if in.Function != "listed" {
					t.Errorf("listed %+v", in)
				}
			}
			n++
		}
	}()
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Go(func() {
			for i := range 10 {
				res, err := e.a.Invoke(t.Context(), "listed", 1, fmt.Sprintf("req-%d-%d", g, i), []byte(`{}`))
				if err != nil || res.FunctionError != "" {
					t.Errorf("invoke: %v %+v", err, res)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	if n := <-listed; n == 0 {
		t.Error("Instances() never ran during the invocations")
	}
	for _, in := range e.a.Instances() {
		if in.State != api.StateIdle || in.StartKind != api.StartWarm {
			t.Errorf("after the invocations: %+v, want idle and warm", in)
		}
	}
}

// TestInvokeCanceled: a caller that goes away (during init or during the
// invocation) gets its context's error and leaves no process behind.
func TestInvokeCanceled(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		env     map[string]string
		payload string
		busy    bool // cancel once the instance is busy, not at launch
	}{
		{name: "during init", env: map[string]string{fakeInitEnv: "hang"}, payload: `{}`},
		{name: "during invocation", payload: `{"op":"sleep","ms":30000}`, busy: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, []*api.Function{testFn("gone", 1, 10*time.Second, tc.env)})
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() {
				_, err := e.a.Invoke(ctx, "gone", 1, "", []byte(tc.payload))
				done <- err
			}()
			// Cancel once the instance's process is up (and busy).
			for e.l.launches() == 0 || (tc.busy && !anyBusy(e.a.Instances())) {
				select {
				case err := <-done:
					t.Fatalf("Invoke returned before the cancel: %v", err)
				case <-time.After(5 * time.Millisecond):
				}
			}
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("Invoke = %v, want context.Canceled", err)
			}
			e.l.waitLive(t, 0)
			if insts := e.a.Instances(); len(insts) != 0 {
				t.Errorf("instances left: %+v", insts)
			}
		})
	}
}

func anyBusy(list []api.Instance) bool {
	for _, in := range list {
		if in.State == api.StateBusy {
			return true
		}
	}
	return false
}

func TestShutdownLetsInvocationsInFlightFinish(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, []*api.Function{testFn("drain", 1, 10*time.Second, nil)})
	ctx := t.Context()
	done := make(chan error, 1)
	go func() {
		res, err := e.a.Invoke(ctx, "drain", 1, "", []byte(`{"op":"sleep","ms":500}`))
		if err == nil && res.FunctionError != "" {
			err = errors.New(string(res.Payload))
		}
		done <- err
	}()
	e.l.waitLive(t, 1)
	for insts := e.a.Instances(); len(insts) == 0 || insts[0].State != api.StateBusy; insts = e.a.Instances() {
		time.Sleep(5 * time.Millisecond)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	e.a.Shutdown(sctx)
	if err := <-done; err != nil {
		t.Errorf("the invocation in flight during shutdown failed: %v", err)
	}
	e.l.waitLive(t, 0)
}
