package scheduler

import (
	"net/http"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/scheduler/internal/placement"
)

func TestArrivals(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	a := newArrivals()
	// Added as invocations end: a long one that arrived first ends last.
	for _, sec := range []int{5, 1, 7, 3, 9, 2, 0} {
		a.add("f", placement.Arrival{At: t0.Add(time.Duration(sec) * time.Second), Concurrent: sec})
	}
	got := a.recent("f", t0.Add(3*time.Second))
	var secs []int
	for _, e := range got {
		secs = append(secs, e.Concurrent)
	}
	if want := []int{3, 5, 7, 9}; !equalInts(secs, want) {
		t.Errorf("recent since 3s: %v, want %v", secs, want)
	}
	if n := len(a.recent("g", t0)); n != 0 {
		t.Errorf("another function: %d arrivals", n)
	}
	a.drop("f")
	if n := len(a.recent("f", t0)); n != 0 {
		t.Errorf("after drop: %d arrivals", n)
	}
	// Bounded: the oldest go first.
	for i := range maxAutoEvents + 10 {
		a.add("f", placement.Arrival{At: t0.Add(time.Duration(i) * time.Millisecond), Concurrent: i})
	}
	all := a.recent("f", t0)
	if len(all) > maxAutoEvents || all[len(all)-1].Concurrent != maxAutoEvents+9 {
		t.Errorf("bounded: %d arrivals, last %+v", len(all), all[len(all)-1])
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestAutoMode: in auto mode min_warm follows the arrivals, within
// auto_max and max_instances, and the agents get it as their targets.
func TestAutoMode(t *testing.T) {
	ts := newTestScheduler(t)
	ts.deploy(t, "hello", 1024)
	ts.heartbeat(t, agentHB("a", "http://a:1", 4096))
	st := ts.putPool(t, "hello", api.PoolChange{Auto: new(true), MinWarm: intp(1)})
	if st.EffectiveMinWarm != 0 {
		t.Fatalf("auto with no traffic: effective %d, want 0 (%+v)", st.EffectiveMinWarm, st.Recommendation)
	}
	now := ts.clock.Now()
	for i := range 20 {
		ts.arrivals.add("hello", placement.Arrival{At: now.Add(-time.Duration(20-i) * time.Second), Concurrent: 3, Cold: i < 3})
	}
	st = decode[api.PoolStatus](t, ts.do(t, "GET", "/v1/functions/hello/pool", nil), http.StatusOK)
	if st.EffectiveMinWarm != 3 || st.Recommendation.MinWarm != 3 || st.Recommendation.WarmthGBsPerHour != 3*3600 ||
		st.Recommendation.ColdStartsAvoidedPerHour != 6 {
		t.Fatalf("auto after traffic at concurrency 3: %+v", st)
	}
	if tg := ts.heartbeatReply(t, agentHB("a", "http://a:1", 4096))["hello"]; tg.MinWarm != 3 {
		t.Errorf("target in auto mode: %+v, want min_warm 3", tg)
	}
	st = ts.putPool(t, "hello", api.PoolChange{AutoMax: intp(2)})
	if st.EffectiveMinWarm != 2 {
		t.Errorf("auto_max 2: effective %d", st.EffectiveMinWarm)
	}
	st = ts.putPool(t, "hello", api.PoolChange{MaxInstances: intp(1)})
	if st.EffectiveMinWarm != 1 {
		t.Errorf("max_instances 1: effective %d", st.EffectiveMinWarm)
	}
	// The window passes: back to zero.
	ts.clock.Advance(31 * time.Minute)
	if st := decode[api.PoolStatus](t, ts.do(t, "GET", "/v1/functions/hello/pool", nil), http.StatusOK); st.EffectiveMinWarm != 0 {
		t.Errorf("after the window: effective %d, want 0", st.EffectiveMinWarm)
	}
	// Off again: the fixed min_warm.
	if st := ts.putPool(t, "hello", api.PoolChange{Auto: new(false)}); st.EffectiveMinWarm != 1 {
		t.Errorf("auto off: effective %d, want 1", st.EffectiveMinWarm)
	}
}
