package scheduler

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/scheduler/internal/placement"
)

// homeOrder is agents sorted the way spread hands out shares: home first.
func homeOrder(fn string, agents ...string) []string {
	order := slices.Clone(agents)
	slices.SortFunc(order, func(a, b string) int {
		ha, hb := placement.HomeScore(fn, a), placement.HomeScore(fn, b)
		switch {
		case ha > hb:
			return -1
		case ha < hb:
			return 1
		}
		return strings.Compare(a, b)
	})
	return order
}

func TestSpread(t *testing.T) {
	three := []string{"a", "b", "c"}
	o := homeOrder("hello", three...)
	two := homeOrder("hello", "a", "b")
	tests := []struct {
		name   string
		n      int
		agents []string
		want   map[string]int
	}{
		{"no agents", 3, nil, map[string]int{}},
		{"nothing to spread", 0, three, map[string]int{}},
		{"one goes home", 1, three, map[string]int{o[0]: 1}},
		{"home agent first", 3, two, map[string]int{two[0]: 2, two[1]: 1}},
		{"even spread", 6, three, map[string]int{"a": 2, "b": 2, "c": 2}},
		{"remainder in home order", 5, three, map[string]int{o[0]: 2, o[1]: 2, o[2]: 1}},
		{"more agents than instances", 2, three, map[string]int{o[0]: 1, o[1]: 1}},
		{"single agent", 4, []string{"x"}, map[string]int{"x": 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := spread("hello", tt.n, tt.agents)
			for a, n := range got { // zero entries are as good as absent
				if n == 0 {
					delete(got, a)
				}
			}
			if !mapsEqual(got, tt.want) {
				t.Errorf("spread(%d, %v) = %v, want %v", tt.n, tt.agents, got, tt.want)
			}
			total := 0
			for _, n := range got {
				total += n
			}
			if len(tt.agents) > 0 && total != tt.n {
				t.Errorf("spread %d in all, want %d", total, tt.n)
			}
		})
	}
	t.Run("stable whatever the input order", func(t *testing.T) {
		agents := []string{"n1", "n2", "n3", "n4", "n5"}
		want := spread("fn", 7, agents)
		for _, perm := range [][]string{{"n5", "n4", "n3", "n2", "n1"}, {"n3", "n1", "n5", "n2", "n4"}} {
			if got := spread("fn", 7, perm); !mapsEqual(got, want) {
				t.Errorf("spread over %v = %v, want %v", perm, got, want)
			}
		}
		if !slices.Equal(agents, []string{"n1", "n2", "n3", "n4", "n5"}) {
			t.Errorf("spread reordered its input: %v", agents)
		}
	})
	t.Run("different functions have different homes", func(t *testing.T) {
		homes := map[string]bool{}
		for _, fn := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
			for a, n := range spread(fn, 1, three) {
				if n == 1 {
					homes[a] = true
				}
			}
		}
		if len(homes) < 2 {
			t.Errorf("8 functions all homed on %v", homes)
		}
	})
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// waitingOn is how many invocations of fn wait in l.
func waitingOn(l *limiter, fn string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waiting[fn]
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

type admitResult struct {
	release func()
	waited  time.Duration
	err     error
}

func admitAsync(ctx context.Context, l *limiter, fn string, max int) <-chan admitResult {
	ch := make(chan admitResult, 1)
	go func() {
		rel, w, err := l.admit(ctx, fn, max)
		ch <- admitResult{rel, w, err}
	}()
	return ch
}

func TestLimiter(t *testing.T) {
	ctx := context.Background()
	t.Run("no cap", func(t *testing.T) {
		l := newLimiter()
		var rels []func()
		for range 100 {
			rel, waited, err := l.admit(ctx, "f", 0)
			if err != nil || waited != 0 {
				t.Fatalf("admit: %v, waited %s", err, waited)
			}
			rels = append(rels, rel)
		}
		if l.current("f") != 100 {
			t.Fatalf("current %d, want 100", l.current("f"))
		}
		for _, rel := range rels {
			rel()
			rel() // twice is once
		}
		if l.current("f") != 0 {
			t.Fatalf("current after release %d, want 0", l.current("f"))
		}
	})
	t.Run("under cap", func(t *testing.T) {
		l := newLimiter()
		for i := range 3 {
			if _, waited, err := l.admit(ctx, "f", 3); err != nil || waited != 0 {
				t.Fatalf("admit %d: %v, waited %s", i, err, waited)
			}
		}
		// Other functions have their own count.
		if _, _, err := l.admit(ctx, "g", 1); err != nil {
			t.Fatalf("admit g: %v", err)
		}
	})
	t.Run("at cap waits for a release", func(t *testing.T) {
		l := newLimiter()
		rel1, _, err := l.admit(ctx, "f", 1)
		if err != nil {
			t.Fatal(err)
		}
		ch := admitAsync(ctx, l, "f", 1)
		eventually(t, "the second admit to queue", func() bool { return waitingOn(l, "f") == 1 })
		select {
		case r := <-ch:
			t.Fatalf("admitted over the cap: %+v", r)
		case <-time.After(20 * time.Millisecond):
		}
		rel1()
		r := <-ch
		if r.err != nil {
			t.Fatalf("queued admit: %v", r.err)
		}
		if r.waited < 20*time.Millisecond {
			t.Errorf("waited %s, want at least 20ms", r.waited)
		}
		if l.current("f") != 1 || waitingOn(l, "f") != 0 {
			t.Errorf("current %d waiting %d, want 1 and 0", l.current("f"), waitingOn(l, "f"))
		}
		r.release()
		rel1() // a second release of the first slot changes nothing
		if l.current("f") != 0 {
			t.Errorf("current %d, want 0", l.current("f"))
		}
	})
	t.Run("queue full is throttled at once", func(t *testing.T) {
		l := newLimiter()
		l.maxQueued = 1
		rel1, _, _ := l.admit(ctx, "f", 1)
		ch := admitAsync(ctx, l, "f", 1)
		eventually(t, "one queued", func() bool { return waitingOn(l, "f") == 1 })
		start := time.Now()
		_, waited, err := l.admit(ctx, "f", 1)
		if !errors.Is(err, api.ErrThrottled) || waited != 0 {
			t.Fatalf("admit with the queue full: %v, waited %s; want ErrThrottled at once", err, waited)
		}
		if time.Since(start) > time.Second {
			t.Errorf("throttling took %s", time.Since(start))
		}
		if !strings.Contains(err.Error(), "1 invocations queued") {
			t.Errorf("error %q does not say the queue is full", err)
		}
		rel1()
		if r := <-ch; r.err != nil {
			t.Fatalf("queued admit: %v", r.err)
		} else {
			r.release()
		}
	})
	t.Run("wait past the bound is throttled", func(t *testing.T) {
		l := newLimiter()
		l.maxWait = 30 * time.Millisecond
		rel1, _, _ := l.admit(ctx, "f", 1)
		defer rel1()
		_, waited, err := l.admit(ctx, "f", 1)
		if !errors.Is(err, api.ErrThrottled) {
			t.Fatalf("admit: %v, want ErrThrottled", err)
		}
		if waited < 30*time.Millisecond {
			t.Errorf("waited %s, want at least the 30ms bound", waited)
		}
		if waitingOn(l, "f") != 0 || l.current("f") != 1 {
			t.Errorf("after a timeout: waiting %d current %d, want 0 and 1", waitingOn(l, "f"), l.current("f"))
		}
	})
	t.Run("caller gives up", func(t *testing.T) {
		l := newLimiter()
		rel1, _, _ := l.admit(ctx, "f", 1)
		defer rel1()
		cctx, cancel := context.WithCancel(ctx)
		ch := admitAsync(cctx, l, "f", 1)
		eventually(t, "one queued", func() bool { return waitingOn(l, "f") == 1 })
		cancel()
		r := <-ch
		if !errors.Is(r.err, context.Canceled) || errors.Is(r.err, api.ErrThrottled) {
			t.Fatalf("cancelled admit: %v; want context.Canceled, not a throttle", r.err)
		}
		if waitingOn(l, "f") != 0 || l.current("f") != 1 {
			t.Errorf("after cancel: waiting %d current %d, want 0 and 1", waitingOn(l, "f"), l.current("f"))
		}
	})
	t.Run("many waiters all get through", func(t *testing.T) {
		l := newLimiter()
		var wg sync.WaitGroup
		var mu sync.Mutex
		peak, cur := 0, 0
		for range 20 {
			wg.Go(func() {
				rel, _, err := l.admit(ctx, "f", 3)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				cur++
				peak = max(peak, cur)
				mu.Unlock()
				time.Sleep(time.Millisecond)
				mu.Lock()
				cur--
				mu.Unlock()
				rel()
			})
		}
		wg.Wait()
		if peak > 3 {
			t.Errorf("peak %d in flight over a cap of 3", peak)
		}
	})
}

func intp(n int) *int { return &n }

func (ts *testScheduler) putPool(t *testing.T, name string, change api.PoolChange) api.PoolStatus {
	t.Helper()
	return decode[api.PoolStatus](t, ts.doJSON(t, "PUT", "/v1/functions/"+name+"/pool", change), http.StatusOK)
}

func TestPoolAPI(t *testing.T) {
	ts := newTestScheduler(t, WithToken("tok"))
	ts.deploy(t, "hello", 256)

	st := decode[api.PoolStatus](t, ts.do(t, "GET", "/v1/functions/hello/pool", nil), http.StatusOK)
	if st.Function != "hello" || st.MinWarm != 0 || st.MaxInstances != 0 || st.KeepAlive != api.Duration(api.DefaultKeepAlive) ||
		st.Auto || st.EffectiveMinWarm != 0 || st.Shares == nil || len(st.Shares) != 0 {
		t.Fatalf("defaults: %+v", st)
	}
	if st.Recommendation.MinWarm != 0 || !strings.Contains(st.Recommendation.Reason, "no invocations") {
		t.Errorf("recommendation with no traffic: %+v", st.Recommendation)
	}

	// Partial changes keep what they do not name.
	st = ts.putPool(t, "hello", api.PoolChange{MinWarm: intp(2)})
	if st.MinWarm != 2 || st.EffectiveMinWarm != 2 || st.KeepAlive != api.Duration(api.DefaultKeepAlive) || st.MaxInstances != 0 {
		t.Fatalf("after min_warm 2: %+v", st)
	}
	st = decode[api.PoolStatus](t, ts.do(t, "PUT", "/v1/functions/hello/pool", strings.NewReader(`{"max_instances":4,"keep_alive":"90s"}`)), http.StatusOK)
	if st.MinWarm != 2 || st.MaxInstances != 4 || st.KeepAlive != api.Duration(90*time.Second) {
		t.Fatalf("after max 4, keep-alive 90s: %+v", st)
	}
	got := decode[api.PoolStatus](t, ts.do(t, "GET", "/v1/functions/hello/pool", nil), http.StatusOK)
	if got.MinWarm != 2 || got.MaxInstances != 4 || got.KeepAlive != api.Duration(90*time.Second) {
		t.Fatalf("GET after PUT: %+v", got)
	}
	// The function listing carries the pool too.
	fs := decode[api.FunctionStatus](t, ts.do(t, "GET", "/v1/functions/hello", nil), http.StatusOK)
	if fs.Pool.MinWarm != 2 || fs.Pool.MaxInstances != 4 {
		t.Errorf("function status pool: %+v", fs.Pool)
	}

	bad := []struct {
		name, body, field string
		status            int
	}{
		{"min_warm above max_instances", `{"min_warm":5}`, "min_warm", 400},
		{"max_instances below min_warm", `{"max_instances":1}`, "min_warm", 400},
		{"negative min_warm", `{"min_warm":-1}`, "min_warm", 400},
		{"min_warm too big", `{"min_warm":101,"max_instances":0}`, "min_warm", 400},
		{"negative max_instances", `{"max_instances":-1}`, "max_instances", 400},
		{"max_instances too big", `{"max_instances":1001}`, "max_instances", 400},
		{"zero keep_alive", `{"keep_alive":"0s"}`, "keep_alive", 400},
		{"negative keep_alive", `{"keep_alive":"-5s"}`, "keep_alive", 400},
		{"keep_alive over a day", `{"keep_alive":"25h"}`, "keep_alive", 400},
		{"keep_alive not a duration", `{"keep_alive":"soon"}`, "keep_alive", 400},
		{"keep_alive wrong type", `{"keep_alive":true}`, "keep_alive", 400},
		{"negative auto_max", `{"auto_max":-1}`, "auto_max", 400},
		{"min_warm wrong type", `{"min_warm":"two"}`, "min_warm", 400},
		{"malformed JSON", `{"min_warm":`, "body", 400},
		{"empty body", ``, "body", 400},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			e := errorBody(t, ts.do(t, "PUT", "/v1/functions/hello/pool", strings.NewReader(tt.body)), tt.status)
			if e.Field != tt.field {
				t.Errorf("error %+v; want field %q", e, tt.field)
			}
		})
	}
	// Refused changes changed nothing.
	got = decode[api.PoolStatus](t, ts.do(t, "GET", "/v1/functions/hello/pool", nil), http.StatusOK)
	if got.MinWarm != 2 || got.MaxInstances != 4 || got.KeepAlive != api.Duration(90*time.Second) || got.AutoMax != 0 {
		t.Fatalf("after refused changes: %+v", got)
	}

	errorBody(t, ts.do(t, "GET", "/v1/functions/nope/pool", nil), http.StatusNotFound)
	errorBody(t, ts.do(t, "PUT", "/v1/functions/nope/pool", strings.NewReader(`{"min_warm":1}`)), http.StatusNotFound)

	// Without the token: 401.
	req, _ := http.NewRequest("GET", ts.srv.URL+"/v1/functions/hello/pool", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("pool without a token: %d", resp.StatusCode)
	}

	// Deleting the function removes its pool: a new function of that name
	// starts from the defaults, and no agent is told to keep it.
	if resp := ts.do(t, "DELETE", "/v1/functions/hello", nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	if pools, err := ts.reg.pools(); err != nil || len(pools) != 0 {
		t.Errorf("pools after delete: %v %v", pools, err)
	}
	errorBody(t, ts.do(t, "GET", "/v1/functions/hello/pool", nil), http.StatusNotFound)
	ts.deploy(t, "hello", 256)
	got = decode[api.PoolStatus](t, ts.do(t, "GET", "/v1/functions/hello/pool", nil), http.StatusOK)
	if got.MinWarm != 0 || got.MaxInstances != 0 || got.KeepAlive != api.Duration(api.DefaultKeepAlive) {
		t.Errorf("pool of a redeployed function: %+v", got)
	}
}

func TestPoolSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	serve := func(s *Scheduler, method, path, body string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
		return rec
	}
	s1, err := New(WithDataDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	digest, _, err := s1.images.put(strings.NewReader(string(ociTar(t, "p"))))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s1.deploy("hello", api.FunctionSpec{Image: digest}); err != nil {
		t.Fatal(err)
	}
	if rec := serve(s1, "PUT", "/v1/functions/hello/pool", `{"min_warm":3,"max_instances":5,"keep_alive":"2m","auto_max":7}`); rec.Code != 200 {
		t.Fatalf("put pool: %d %s", rec.Code, rec.Body)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := New(WithDataDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	rec := serve(s2, "GET", "/v1/functions/hello/pool", "")
	if rec.Code != 200 {
		t.Fatalf("get pool: %d %s", rec.Code, rec.Body)
	}
	p, err := s2.reg.pool("hello")
	if err != nil || p.MinWarm != 3 || p.MaxInstances != 5 || p.KeepAlive != api.Duration(2*time.Minute) || p.AutoMax != 7 {
		t.Errorf("pool after restart: %+v %v", p, err)
	}
}

// heartbeatReply sends a heartbeat over HTTP and returns the targets.
func (ts *testScheduler) heartbeatReply(t *testing.T, hb api.Heartbeat) map[string]api.PoolTarget {
	t.Helper()
	reply := decode[api.HeartbeatReply](t, ts.doJSON(t, "POST", "/v1/agents/heartbeat", hb), http.StatusOK)
	out := map[string]api.PoolTarget{}
	for _, tg := range reply.Targets {
		out[tg.Function] = tg
	}
	return out
}

func TestPoolTargets(t *testing.T) {
	ts := newTestScheduler(t)
	fn := ts.deploy(t, "hello", 128)
	ts.deploy(t, "other", 128) // never tuned: no target
	home := placement.Home("hello", "a", "b")
	away := map[string]string{"a": "b", "b": "a"}[home]
	hb := func(name string) map[string]api.PoolTarget {
		return ts.heartbeatReply(t, agentHB(name, "http://"+name+":1", 4096))
	}
	hb("a")
	hb("b")
	if got := hb("a"); len(got) != 0 {
		t.Fatalf("targets before any tuning: %+v", got)
	}

	ts.putPool(t, "hello", api.PoolChange{MinWarm: intp(3), KeepAlive: new(api.Duration(time.Minute))})
	th, ta := hb(home)["hello"], hb(away)["hello"]
	if th.MinWarm != 2 || ta.MinWarm != 1 {
		t.Errorf("min_warm 3 over 2 agents: home %d, other %d; want 2 and 1", th.MinWarm, ta.MinWarm)
	}
	if th.Version != fn.Version || th.KeepAlive != api.Duration(time.Minute) || th.MaxInstances != 0 || ta.MaxInstances != 0 {
		t.Errorf("targets: home %+v other %+v", th, ta)
	}
	if _, ok := hb(home)["other"]; ok {
		t.Error("an untuned function has a target")
	}
	st := decode[api.PoolStatus](t, ts.do(t, "GET", "/v1/functions/hello/pool", nil), http.StatusOK)
	if len(st.Shares) != 2 {
		t.Fatalf("shares: %+v", st.Shares)
	}
	for _, sh := range st.Shares {
		want := map[bool]int{true: 2, false: 1}[sh.Agent == home]
		if sh.MinWarm != want {
			t.Errorf("share of %s: %+v, want min_warm %d", sh.Agent, sh, want)
		}
	}

	// max_instances is shared the same way; an agent without a share of a
	// cap gets -1 (start nothing).
	ts.putPool(t, "hello", api.PoolChange{MaxInstances: intp(3)})
	if th, ta := hb(home)["hello"], hb(away)["hello"]; th.MaxInstances != 2 || ta.MaxInstances != 1 {
		t.Errorf("max_instances 3: home %d, other %d; want 2 and 1", th.MaxInstances, ta.MaxInstances)
	}
	ts.putPool(t, "hello", api.PoolChange{MinWarm: intp(1), MaxInstances: intp(1)})
	if th, ta := hb(home)["hello"], hb(away)["hello"]; th.MaxInstances != 1 || ta.MaxInstances != -1 || th.MinWarm != 1 || ta.MinWarm != 0 {
		t.Errorf("max_instances 1: home %+v, other %+v; want max 1/-1, min 1/0", th, ta)
	}

	// A suspect agent holds no share: the ready one takes it all.
	ts.putPool(t, "hello", api.PoolChange{MinWarm: intp(3), MaxInstances: intp(4)})
	ts.clock.Advance(6 * time.Second) // both suspect (after 5 s)
	th = hb(home)["hello"]
	if th.MinWarm != 3 || th.MaxInstances != 4 {
		t.Errorf("only ready agent: %+v; want min 3, max 4", th)
	}
	tgs, err := ts.targetsFor(away)
	if err != nil {
		t.Fatal(err)
	}
	if len(tgs) != 1 || tgs[0].MinWarm != 0 || tgs[0].MaxInstances != -1 {
		t.Errorf("suspect agent's targets: %+v; want min 0, max -1", tgs)
	}
	st = decode[api.PoolStatus](t, ts.do(t, "GET", "/v1/functions/hello/pool", nil), http.StatusOK)
	if len(st.Shares) != 1 || st.Shares[0].Agent != home {
		t.Errorf("shares with one agent suspect: %+v", st.Shares)
	}
}

// TestPlacementHonoursCaps drives reserve with max_instances shared over
// two agents: an agent at its share is skipped unless it has an idle
// instance of the function.
func TestPlacementHonoursCaps(t *testing.T) {
	ts := newTestScheduler(t)
	f := ts.deploy(t, "hello", 128)
	fn := &f
	home := placement.Home("hello", "a", "b")
	away := map[string]string{"a": "b", "b": "a"}[home]
	ts.heartbeat(t, agentHB("a", "http://a:1", 4096))
	ts.heartbeat(t, agentHB("b", "http://b:1", 4096))
	ts.putPool(t, "hello", api.PoolChange{MaxInstances: intp(2)}) // 1 each

	r1, _, p1, err := ts.reserve(fn, testPool(t, ts, fn.Name), nil)
	if err != nil || p1.Agent != home || p1.Reason != placement.ReasonFreeMemory {
		t.Fatalf("first: %+v %v; want %s by free memory (home on a tie)", p1, err, home)
	}
	r2, _, p2, err := ts.reserve(fn, testPool(t, ts, fn.Name), nil)
	if err != nil || p2.Agent != away {
		t.Fatalf("second: %+v %v; want %s (home at its share)", p2, err, away)
	}
	if _, _, p, err := ts.reserve(fn, testPool(t, ts, fn.Name), nil); !errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("third: %+v %v; want ErrUnavailable (both at their share)", p, err)
	}
	// An idle instance on an agent at its share is still fair game.
	idle := api.Instance{ID: "i1", Function: "hello", Version: fn.Version, State: api.StateIdle, MemoryMB: 128}
	ts.heartbeat(t, agentHB(away, "http://"+away+":1", 4096, idle))
	r3, _, p3, err := ts.reserve(fn, testPool(t, ts, fn.Name), nil)
	if err != nil || p3.Agent != away || p3.Reason != placement.ReasonIdleInstance {
		t.Fatalf("with an idle instance: %+v %v; want %s/%s", p3, err, away, placement.ReasonIdleInstance)
	}
	if _, _, p, err := ts.reserve(fn, testPool(t, ts, fn.Name), nil); !errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("idle instance claimed: %+v %v; want ErrUnavailable", p, err)
	}
	// A release frees the share.
	ts.release(r1)
	if r, _, p, err := ts.reserve(fn, testPool(t, ts, fn.Name), nil); err != nil || p.Agent != home {
		t.Fatalf("after release: %+v %v; want %s", p, err, home)
	} else {
		ts.release(r)
	}
	ts.release(r2)
	ts.release(r3)
	// Without a cap nothing is at cap.
	ts.putPool(t, "hello", api.PoolChange{MaxInstances: intp(0)})
	for i := range 5 {
		if _, _, _, err := ts.reserve(fn, testPool(t, ts, fn.Name), nil); err != nil {
			t.Fatalf("uncapped reserve %d: %v", i, err)
		}
	}
}

// gatedAgent is a fake agent whose invocations block until the test lets
// each one finish; kind is the start kind it reports.
type gatedAgent struct {
	*fakeAgent
	started chan struct{}
	gate    chan struct{}
}

func newGatedAgent(t *testing.T, name string) *gatedAgent {
	ga := &gatedAgent{fakeAgent: newFakeAgent(t, name), started: make(chan struct{}, 100), gate: make(chan struct{})}
	ga.setReply(func(w http.ResponseWriter, r *http.Request, payload []byte) {
		ga.started <- struct{}{}
		<-ga.gate
		writeResult(w, r, name, api.StartWarm, payload)
	})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(ga.gate) }) }) // runs before the agent's server closes
	return ga
}

// writeResult answers an invocation the way an agent does.
func writeResult(w http.ResponseWriter, r *http.Request, agent string, kind api.StartKind, payload []byte) {
	res := api.InvokeResult{
		RequestID: r.Header.Get(api.HeaderRequestID), Function: strings.Split(r.URL.Path, "/")[3], Version: 1,
		Agent: agent, Instance: agent + "-i1", StartKind: kind, Duration: time.Millisecond, BilledMs: 1000, MemoryMB: 512,
	}
	res.WriteHeaders(w.Header())
	w.Header().Set("Content-Type", "application/json")
	w.Write(payload)
}

type invokeOutcome struct {
	status int
	body   string
	code   string
}

func (ts *testScheduler) invokeAsync(name string) <-chan invokeOutcome {
	ch := make(chan invokeOutcome, 1)
	go func() {
		req, _ := http.NewRequest("POST", ts.srv.URL+"/v1/functions/"+name+"/invoke", strings.NewReader(`{}`))
		if ts.token != "" {
			req.Header.Set("Authorization", "Bearer "+ts.token)
		}
		resp, err := ts.srv.Client().Do(req)
		if err != nil {
			ch <- invokeOutcome{body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		ch <- invokeOutcome{status: resp.StatusCode, body: string(b), code: resp.Header.Get("X-Amzn-ErrorType")}
	}()
	return ch
}

func TestGatewayMaxInstances(t *testing.T) {
	ts := newTestScheduler(t, WithToken("tok"))
	ag := newGatedAgent(t, "n1")
	ts.heartbeat(t, agentHB("n1", ag.srv.URL, 4096))
	ts.deploy(t, "slow", 128)
	ts.putPool(t, "slow", api.PoolChange{MaxInstances: intp(1)})

	// Two at once: the second waits for the first, then runs.
	first := ts.invokeAsync("slow")
	<-ag.started
	second := ts.invokeAsync("slow")
	eventually(t, "the second invocation to queue", func() bool { return waitingOn(ts.limits, "slow") == 1 })
	time.Sleep(30 * time.Millisecond)
	select {
	case <-ag.started:
		t.Fatal("a second invocation reached the agent over max_instances 1")
	default:
	}
	ag.gate <- struct{}{}
	if o := <-first; o.status != 200 {
		t.Fatalf("first: %+v", o)
	}
	<-ag.started
	ag.gate <- struct{}{}
	if o := <-second; o.status != 200 || o.body != `{}` {
		t.Fatalf("second: %+v", o)
	}
	st := ts.statsFor("slow")
	if st.Invocations != 2 || st.Throttles != 0 || st.QueueWaitMs < 30 {
		t.Errorf("stats after a queued invocation: %+v; want 2 invocations, no throttle, queue wait >= 30ms", st)
	}

	// With the queue full, the next one is 429 at once.
	ts.limits.mu.Lock()
	ts.limits.maxQueued = 1
	ts.limits.mu.Unlock()
	first = ts.invokeAsync("slow")
	<-ag.started
	second = ts.invokeAsync("slow")
	eventually(t, "the second invocation to queue", func() bool { return waitingOn(ts.limits, "slow") == 1 })
	resp := ts.do(t, "POST", "/v1/functions/slow/invoke", strings.NewReader(`{}`))
	e := errorBody(t, resp, http.StatusTooManyRequests)
	if e.Code != "TooManyRequestsException" || !strings.Contains(e.Message, "max_instances 1") {
		t.Errorf("429 body: %+v", e)
	}
	if resp.Header.Get(api.HeaderRequestID) == "" {
		t.Error("429 without a request id")
	}
	ag.gate <- struct{}{}
	<-ag.started
	ag.gate <- struct{}{}
	for i, ch := range []<-chan invokeOutcome{first, second} {
		if o := <-ch; o.status != 200 {
			t.Errorf("invocation %d: %+v", i, o)
		}
	}
	st = ts.statsFor("slow")
	if st.Invocations != 4 || st.Throttles != 1 {
		t.Errorf("stats: %+v; want 4 invocations and 1 throttle", st)
	}
	fs := decode[api.FunctionStatus](t, ts.do(t, "GET", "/v1/functions/slow", nil), http.StatusOK)
	if fs.Stats.Throttles != 1 {
		t.Errorf("API stats: %+v", fs.Stats)
	}

	// A caller that gives up while queued is not a throttle.
	first = ts.invokeAsync("slow")
	<-ag.started
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", ts.srv.URL+"/v1/functions/slow/invoke", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer tok")
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := ts.srv.Client().Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	eventually(t, "the caller to queue", func() bool { return waitingOn(ts.limits, "slow") == 1 })
	cancel()
	<-done
	eventually(t, "the cancelled caller to leave the queue", func() bool { return waitingOn(ts.limits, "slow") == 0 })
	ag.gate <- struct{}{}
	<-first
	if st := ts.statsFor("slow"); st.Throttles != 1 {
		t.Errorf("throttles after a caller gave up: %d, want 1", st.Throttles)
	}
}

func TestPoolStats(t *testing.T) {
	ts := newTestScheduler(t)
	ag := newFakeAgent(t, "n1")
	ts.heartbeat(t, agentHB("n1", ag.srv.URL, 4096))
	ts.deploy(t, "hello", 512)
	kinds := []api.StartKind{api.StartCold, api.StartWarm, api.StartWarm, api.StartRestore, api.StartWarm}
	var mu sync.Mutex
	next := 0
	ag.setReply(func(w http.ResponseWriter, r *http.Request, payload []byte) {
		mu.Lock()
		k := kinds[next]
		next++
		mu.Unlock()
		writeResult(w, r, "n1", k, payload)
	})
	for range kinds {
		if resp := ts.do(t, "POST", "/v1/functions/hello/invoke", strings.NewReader(`{}`)); resp.StatusCode != 200 {
			t.Fatalf("invoke: %d", resp.StatusCode)
		}
	}
	st := decode[api.FunctionStatus](t, ts.do(t, "GET", "/v1/functions/hello", nil), http.StatusOK).Stats
	// A restore started an instance: it counts as a cold start.
	if st.Invocations != 5 || st.WarmStarts != 3 || st.ColdStarts != 2 || st.WarmHitRatio != 0.6 {
		t.Errorf("stats: %+v; want 5 invocations, 3 warm, 2 cold (one a restore), warm-hit 0.6", st)
	}
	// A restore needed a new instance too: 2 of 5 minutes' worth.
	if st.ColdStartsPerMinute != 2.0/5 {
		t.Errorf("cold starts per minute %v, want 0.4", st.ColdStartsPerMinute)
	}
	if st.GBSeconds != 5*0.5 || st.BilledMs != 5000 {
		t.Errorf("billed: %v GB-s, %d ms; want 2.5 and 5000", st.GBSeconds, st.BilledMs)
	}
	ts.clock.Advance(4 * time.Minute)
	if got := ts.statsFor("hello").ColdStartsPerMinute; got != 0.4 {
		t.Errorf("4 minutes later: %v cold starts per minute, want 0.4", got)
	}
	ts.clock.Advance(2 * time.Minute)
	if got := ts.statsFor("hello").ColdStartsPerMinute; got != 0 {
		t.Errorf("6 minutes later: %v cold starts per minute, want 0", got)
	}

	// Idle instance-seconds: two idle instances for the 2 s between two
	// heartbeats (busy ones and other functions' do not count).
	in := func(id string, state api.InstanceState, fn string) api.Instance {
		return api.Instance{ID: id, Function: fn, Version: 1, State: state, MemoryMB: 512}
	}
	instances := []api.Instance{in("i1", api.StateIdle, "hello"), in("i2", api.StateIdle, "hello"), in("i3", api.StateBusy, "hello"), in("i4", api.StateIdle, "other")}
	ts.heartbeat(t, agentHB("n1", ag.srv.URL, 4096, instances...))
	ts.clock.Advance(2 * time.Second)
	ts.heartbeat(t, agentHB("n1", ag.srv.URL, 4096, instances...))
	if got := ts.statsFor("hello").IdleInstanceSeconds; got != 4 {
		t.Errorf("idle instance-seconds %v, want 4", got)
	}
	// A gap over a minute (an agent back from the dead) adds nothing.
	ts.clock.Advance(2 * time.Minute)
	ts.heartbeat(t, agentHB("n1", ag.srv.URL, 4096, instances...))
	if got := ts.statsFor("hello").IdleInstanceSeconds; got != 4 {
		t.Errorf("after a long gap: idle instance-seconds %v, want 4", got)
	}
}
