package scheduler

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// newSchedulerPair starts two schedulers on one JetStream: the first
// embeds the node, the second connects to it.
func newSchedulerPair(t *testing.T) (a, b *testScheduler) {
	t.Helper()
	a = newTestScheduler(t)
	b = newTestScheduler(t, WithNATS(NATSConfig{URL: a.eng.ClientURL(), Replicas: 1}))
	return a, b
}

func testSpec(name string, memoryMB int) api.FunctionSpec {
	return api.FunctionSpec{Name: name, Image: "hello.tar", MemoryMB: memoryMB, Timeout: api.Duration(3 * time.Second)}
}

// Two schedulers on one JetStream see each other's deploys, settings,
// routes, schedules, drains and deletes.
func TestSharedRegistry(t *testing.T) {
	a, b := newSchedulerPair(t)
	if _, _, err := a.reg.put(testSpec("f", 128)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b sees a's deploy", func() bool {
		f, err := b.reg.latest("f")
		return err == nil && f.Version == 1 && f.MemoryMB == 128
	})
	// b deploys the next version; a sees it.
	if _, _, err := b.reg.put(testSpec("f", 256)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a sees b's deploy", func() bool {
		f, err := a.reg.latest("f")
		return err == nil && f.Version == 2 && f.MemoryMB == 256
	})
	steps := []struct {
		name         string
		by           *testScheduler
		method, path string
		body         string
		status       int
		seen         func(s *testScheduler) bool
	}{
		{"pool through b", b, "PUT", "/v1/functions/f/pool", `{"min_warm":2}`, 200,
			func(s *testScheduler) bool { p, _ := s.reg.pool("f"); return p.MinWarm == 2 }},
		{"route through a", a, "PUT", "/v1/functions/f/route", `{"path":"/hello"}`, 200,
			func(s *testScheduler) bool {
				rs, _ := s.routes()
				return len(rs) == 1 && rs[0].Path == "/hello" && rs[0].Function == "f"
			}},
		{"schedule through b", b, "PUT", "/v1/functions/f/schedule", `{"expression":"rate(5 minutes)"}`, 200,
			func(s *testScheduler) bool {
				sc, _ := s.schedules()
				return len(sc) == 1 && sc[0].Expression == "rate(5 minutes)"
			}},
		{"async through a", a, "PUT", "/v1/functions/f/async", `{"max_retries":7}`, 200,
			func(s *testScheduler) bool { return s.asyncConfig("f").MaxRetries == 7 }},
		{"delete through b", b, "DELETE", "/v1/functions/f", "", 204,
			func(s *testScheduler) bool {
				_, err := s.reg.latest("f")
				rs, _ := s.routes()
				sc, _ := s.schedules()
				pools, _ := s.reg.pools()
				return errors.Is(err, api.ErrNotFound) && len(rs) == 0 && len(sc) == 0 && len(pools) == 0
			}},
	}
	for _, st := range steps {
		resp := st.by.do(t, st.method, st.path, strings.NewReader(st.body))
		if resp.StatusCode != st.status {
			t.Fatalf("%s: %d, want %d", st.name, resp.StatusCode, st.status)
		}
		for _, s := range []*testScheduler{a, b} {
			eventually(t, st.name, func() bool { return st.seen(s) })
		}
	}
	// Deployed again through a: the next number, nothing of the old one.
	f, _, err := a.reg.put(testSpec("f", 512))
	if err != nil || f.Version != 3 {
		t.Fatalf("redeploy: %+v %v; want version 3", f, err)
	}
	eventually(t, "b sees the new function", func() bool {
		f, err := b.reg.latest("f")
		return err == nil && f.Version == 3
	})
	for _, s := range []*testScheduler{a, b} {
		vs, err := s.reg.versions("f")
		if err != nil || len(vs) != 1 || vs[0].Version != 3 {
			t.Errorf("versions of the new function: %+v %v; want only 3", vs, err)
		}
		if _, err := s.reg.version("f", 1); !errors.Is(err, api.ErrNotFound) {
			t.Errorf("version 1 of the deleted function: %v; want not found", err)
		}
		if p, _ := s.reg.pool("f"); p != api.DefaultPool() {
			t.Errorf("pool inherited: %+v", p)
		}
		if _, err := s.route("f"); !errors.Is(err, api.ErrNotFound) {
			t.Errorf("route inherited: %v", err)
		}
		if s.asyncConfig("f").MaxRetries != DefaultAsyncMaxRetries {
			t.Errorf("async settings inherited: %+v", s.asyncConfig("f"))
		}
	}
	// Drains.
	a.heartbeat(t, api.Heartbeat{Name: "a1", URL: "http://127.0.0.1:1", CapacityMB: 1024})
	if resp := a.do(t, "POST", "/v1/agents/a1/drain", nil); resp.StatusCode != 200 {
		t.Fatalf("drain: %d", resp.StatusCode)
	}
	drained := func(s *testScheduler, want bool) func() bool {
		return func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.drains["a1"] == want }
	}
	eventually(t, "b sees the drain", drained(b, true))
	if resp := b.do(t, "DELETE", "/v1/agents/a1/drain", nil); resp.StatusCode != 200 {
		t.Fatalf("resume: %d", resp.StatusCode)
	}
	eventually(t, "a sees the resume", drained(a, false))
}

// Deploys of one function through two schedulers at once all succeed,
// each with its own version.
func TestSharedConcurrentDeploys(t *testing.T) {
	a, b := newSchedulerPair(t)
	const each = 8
	var mu sync.Mutex
	var got []int
	var wg sync.WaitGroup
	for i, s := range []*testScheduler{a, b} {
		for j := range each {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f, created, err := s.reg.put(testSpec("g", 128+i*each+j))
				if err != nil || !created {
					t.Errorf("deploy %d/%d: %v created=%v", i, j, err, created)
					return
				}
				mu.Lock()
				got = append(got, f.Version)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	slices.Sort(got)
	if len(slices.Compact(slices.Clone(got))) != 2*each {
		t.Fatalf("versions %v: want %d distinct", got, 2*each)
	}
	for _, s := range []*testScheduler{a, b} {
		eventually(t, "every version seen", func() bool {
			vs, err := s.reg.versions("g")
			f, _ := s.reg.latest("g")
			return err == nil && len(vs) == 2*each && f != nil && f.Version == got[len(got)-1]
		})
	}
}

// Pool changes through two schedulers at once: each one's last change
// lands, none undoes the other's.
func TestSharedConcurrentPoolChanges(t *testing.T) {
	a, b := newSchedulerPair(t)
	if _, _, err := a.reg.put(testSpec("p", 128)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b sees the function", func() bool { _, err := b.reg.latest("p"); return err == nil })
	const n = 20
	var wg sync.WaitGroup
	for _, c := range []struct {
		s    *testScheduler
		body string
	}{{a, `{"min_warm":%d}`}, {b, `{"keep_alive":"%ds"}`}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; i <= n; i++ {
				req, _ := http.NewRequest("PUT", c.s.srv.URL+"/v1/functions/p/pool", strings.NewReader(fmt.Sprintf(c.body, i)))
				resp, err := c.s.srv.Client().Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("%s: %d", fmt.Sprintf(c.body, i), resp.StatusCode)
				}
			}
		}()
	}
	wg.Wait()
	for _, s := range []*testScheduler{a, b} {
		eventually(t, "both changes", func() bool {
			p, _ := s.reg.pool("p")
			return p.MinWarm == n && p.KeepAlive == api.Duration(n*time.Second)
		})
	}
}

// Two functions cannot hold one route path, even set through two
// schedulers; a deleted function's path is free.
func TestSharedRoutePath(t *testing.T) {
	a, b := newSchedulerPair(t)
	for _, name := range []string{"r1", "r2"} {
		if _, _, err := a.reg.put(testSpec(name, 128)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "b sees both", func() bool { fs, _ := b.reg.list(); return len(fs) == 2 })
	if _, err := a.putRoute("r1", RouteSpec{Path: "/x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.putRoute("r2", RouteSpec{Path: "/x"}); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("second function on /x: %v; want conflict", err)
	}
	// Moving r1 to /y frees /x.
	if _, err := a.putRoute("r1", RouteSpec{Path: "/y"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.putRoute("r2", RouteSpec{Path: "/x"}); err != nil {
		t.Fatalf("r2 on the freed /x: %v", err)
	}
	// Deleting r1 frees /y, even for a function of the same name.
	if err := a.reg.remove("r1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.reg.put(testSpec("r1", 128)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.putRoute("r2", RouteSpec{Path: "/y"}); err != nil {
		t.Fatalf("r2 on the deleted function's /y: %v", err)
	}
	eventually(t, "a's routes", func() bool {
		rs, _ := a.routes()
		return len(rs) == 1 && rs[0].Function == "r2" && rs[0].Path == "/y"
	})
}

// A write the store cannot take answers 503 naming the cause; reads from
// memory go on.
func TestStoreUnavailableIs503(t *testing.T) {
	a, b := newSchedulerPair(t)
	if _, _, err := a.reg.put(testSpec("u", 128)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b sees the function", func() bool { _, err := b.reg.latest("u"); return err == nil })
	b.reg.timeout = 200 * time.Millisecond // sooner than the default 5s
	if err := a.Close(); err != nil {      // stops the node b uses
		t.Fatal(err)
	}
	d := errorBody(t, b.do(t, "PUT", "/v1/functions/u/pool", strings.NewReader(`{"min_warm":1}`)), http.StatusServiceUnavailable)
	t.Logf("503: %s", d.Message)
	if !strings.Contains(d.Message, "control plane store unavailable") {
		t.Errorf("503 message %q does not name the cause", d.Message)
	}
	if err := b.reg.setPool("u", api.DefaultPool()); !errors.Is(err, ErrStoreUnavailable) {
		t.Errorf("setPool without a store: %v; want ErrStoreUnavailable", err)
	}
	if resp := b.do(t, "GET", "/v1/functions/u", nil); resp.StatusCode != 200 {
		t.Errorf("read from memory: %d", resp.StatusCode)
	}
}

// A schedule's fire state moves by compare-and-set: of two schedulers
// advancing the same tick, one wins.
func TestSharedAdvanceSchedule(t *testing.T) {
	a, b := newSchedulerPair(t)
	if _, _, err := a.reg.put(testSpec("c", 128)); err != nil {
		t.Fatal(err)
	}
	sc, err := a.setSchedule("c", "rate(1 minute)")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "b sees the schedule", func() bool { all, _ := b.schedules(); return len(all) == 1 })
	next := *sc
	next.LastFiredAt, next.NextAt, next.Fired = sc.NextAt, sc.NextAt.Add(time.Minute), 1
	var wins int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, s := range []*testScheduler{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			won, err := s.reg.advanceSchedule("c", *sc, next)
			if err != nil {
				t.Error(err)
			}
			if won {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d schedulers advanced the tick; want 1", wins)
	}
	for _, s := range []*testScheduler{a, b} {
		eventually(t, "the advanced schedule", func() bool {
			all, _ := s.schedules()
			return len(all) == 1 && all[0].Fired == 1 && all[0].NextAt.Equal(next.NextAt)
		})
	}
	// Advancing a deleted function's schedule: false, no error.
	if err := b.reg.remove("c"); err != nil {
		t.Fatal(err)
	}
	if won, err := a.reg.advanceSchedule("c", next, next); won || err != nil {
		t.Errorf("advance a deleted function's schedule: %v %v", won, err)
	}
}
