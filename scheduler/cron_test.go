package scheduler

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func TestParseScheduleInvalid(t *testing.T) {
	for _, tc := range []struct{ expr, want string }{
		{"", "empty expression"},
		{"* * * *", "4 fields"},
		{"* * * * * *", "6 fields"},
		{"60 * * * *", `minute field "60": 60 is out of range 0–59`},
		{"* 24 * * *", `hour field "24"`},
		{"* * 0 * *", `day-of-month field "0": 0 is out of range 1–31`},
		{"* * 32 * *", "day-of-month field"},
		{"* * * 13 *", `month field "13"`},
		{"* * * foo *", `month field "foo": "foo" is not a number from 1 to 12 or a name`},
		{"* * * * 8", `day-of-week field "8"`},
		{"* * * * mon-funday", `day-of-week field "mon-funday"`},
		{"*/0 * * * *", `minute field "*/0": step "0"`},
		{"*/x * * * *", "minute field"},
		{"*/61 * * * *", "step 61 is larger"},
		{"5-1 * * * *", "range 5-1 runs backwards"},
		{"1,,2 * * * *", "empty list item"},
		{"- * * * *", "missing value"},
		{"@fortnightly", "unknown macro"},
		{"rate(5 minutes", "missing ')'"},
		{"rate(0 minutes)", `value "0"`},
		{"rate(five minutes)", `value "five"`},
		{"rate(5 weeks)", `unit "weeks"`},
		{"rate(5)", "want rate(N unit)"},
		{strings.Repeat("1,", 200) + "1 * * * *", "over 256 characters"},
	} {
		_, err := parseSchedule(tc.expr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseSchedule(%q) = %v; want an error containing %q", tc.expr, err, tc.want)
		}
	}
}

func TestScheduleNext(t *testing.T) {
	for _, tc := range []struct {
		expr, from string
		want       []string // successive fire times
	}{
		{"*/5 * * * *", "2025-01-02T03:04:05Z", []string{"2025-01-02T03:05:00Z", "2025-01-02T03:10:00Z"}},
		{"* * * * *", "2025-01-02T03:04:00Z", []string{"2025-01-02T03:05:00Z", "2025-01-02T03:06:00Z"}},
		// Across an hour, a day, a month and a year.
		{"0 * * * *", "2025-01-31T23:30:00Z", []string{"2025-02-01T00:00:00Z", "2025-02-01T01:00:00Z"}},
		{"30 23 * * *", "2025-12-31T23:45:00Z", []string{"2026-01-01T23:30:00Z", "2026-01-02T23:30:00Z"}},
		{"0 0 1 * *", "2025-01-15T00:00:00Z", []string{"2025-02-01T00:00:00Z", "2025-03-01T00:00:00Z"}},
		// The 31st skips short months; 29 Feb waits for a leap year.
		{"0 12 31 * *", "2025-01-31T13:00:00Z", []string{"2025-03-31T12:00:00Z", "2025-05-31T12:00:00Z"}},
		{"0 0 29 2 *", "2025-01-01T00:00:00Z", []string{"2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"}},
		// Lists, ranges, steps, names.
		{"0,30 9-17/4 * * mon-fri", "2025-01-03T16:00:00Z", []string{"2025-01-03T17:00:00Z", "2025-01-03T17:30:00Z", "2025-01-06T09:00:00Z"}},
		{"15 10 * jan,jul sun", "2025-01-01T00:00:00Z", []string{"2025-01-05T10:15:00Z", "2025-01-12T10:15:00Z"}},
		{"0 0 * * 7", "2025-01-01T00:00:00Z", []string{"2025-01-05T00:00:00Z"}},                                                   // 7 is Sunday
		{"0 0 * * 1/2", "2025-01-01T00:00:00Z", []string{"2025-01-03T00:00:00Z", "2025-01-06T00:00:00Z", "2025-01-08T00:00:00Z"}}, // Mon, Wed, Fri
		// Both day fields restricted: either matches (1st of the month or a Monday).
		{"0 0 1 * mon", "2025-01-01T00:00:00Z", []string{"2025-01-06T00:00:00Z", "2025-01-13T00:00:00Z", "2025-01-20T00:00:00Z", "2025-01-27T00:00:00Z", "2025-02-01T00:00:00Z"}},
		// A starred day field with a step still means AND.
		{"0 0 */10 * mon", "2025-01-01T00:00:00Z", []string{"2025-03-31T00:00:00Z"}},
		{"@hourly", "2025-01-02T03:04:05Z", []string{"2025-01-02T04:00:00Z"}},
		{"@daily", "2025-01-02T03:04:05Z", []string{"2025-01-03T00:00:00Z"}},
		{"@weekly", "2025-01-02T03:04:05Z", []string{"2025-01-05T00:00:00Z"}},
		{"@yearly", "2025-01-02T03:04:05Z", []string{"2026-01-01T00:00:00Z"}},
	} {
		c, err := parseSchedule(tc.expr)
		if err != nil {
			t.Errorf("parseSchedule(%q): %v", tc.expr, err)
			continue
		}
		at := mustTime(t, tc.from)
		for _, w := range tc.want {
			got := c.next(at, time.Time{})
			if !got.Equal(mustTime(t, w)) {
				t.Errorf("%q: next after %s = %s, want %s", tc.expr, at.Format(time.RFC3339), got.Format(time.RFC3339), w)
				break
			}
			at = got
		}
	}
}

func TestScheduleNextNever(t *testing.T) {
	c, err := parseSchedule("0 0 30 2 *")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.next(mustTime(t, "2025-01-01T00:00:00Z"), time.Time{}); !got.IsZero() {
		t.Fatalf("30 February fires at %s", got)
	}
}

func TestScheduleRate(t *testing.T) {
	anchor := mustTime(t, "2025-01-02T03:00:00Z")
	for _, tc := range []struct {
		expr, from, want string
	}{
		{"rate(1 minute)", "2025-01-02T03:00:00Z", "2025-01-02T03:01:00Z"},
		{"rate(5 minutes)", "2025-01-02T03:07:30Z", "2025-01-02T03:10:00Z"},
		{"rate(2 hours)", "2025-01-02T04:59:59Z", "2025-01-02T05:00:00Z"},
		{"rate(1 day)", "2025-01-31T03:00:00Z", "2025-02-01T03:00:00Z"},
		{"RATE(3 Days)", "2025-01-01T00:00:00Z", "2025-01-02T03:00:00Z"}, // before the anchor: the anchor
	} {
		c, err := parseSchedule(tc.expr)
		if err != nil {
			t.Fatalf("%q: %v", tc.expr, err)
		}
		if got := c.next(mustTime(t, tc.from), anchor); !got.Equal(mustTime(t, tc.want)) {
			t.Errorf("%q: next after %s = %s, want %s", tc.expr, tc.from, got.Format(time.RFC3339), tc.want)
		}
	}
}

// FuzzParseCron checks the parser never panics and that whatever it
// accepts yields fire times that are later than the start and match.
func FuzzParseCron(f *testing.F) {
	for _, s := range []string{"*/5 * * * *", "0 0 1 * mon", "rate(5 minutes)", "0,30 9-17/4 * jan-mar mon-fri", "@daily", "0 0 29 2 *", "1-2/3,4 * * * 7", ""} {
		f.Add(s)
	}
	from := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, expr string) {
		c, err := parseSchedule(expr)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		n := c.next(from, from)
		if n.IsZero() {
			return
		}
		if !n.After(from) {
			t.Fatalf("%q: next %s is not after %s", expr, n, from)
		}
		if c.every == 0 {
			if n.Second() != 0 || c.minute&(1<<uint(n.Minute())) == 0 || c.hour&(1<<uint(n.Hour())) == 0 ||
				c.month&(1<<uint(n.Month())) == 0 || !c.dayMatches(n) {
				t.Fatalf("%q: next %s does not match", expr, n)
			}
		}
	})
}

func TestScheduleAPIAndFiring(t *testing.T) {
	// Long heartbeat timeouts: the fake clock jumps by minutes.
	ts := newTestScheduler(t, WithHeartbeatTimeouts(24*time.Hour, 48*time.Hour))
	ag := newFakeAgent(t, "a1")
	ts.heartbeat(t, api.Heartbeat{Name: "a1", URL: ag.srv.URL, CapacityMB: 4096})
	ts.deploy(t, "tick", 128)

	bad := errorBody(t, ts.doJSON(t, "PUT", "/v1/functions/tick/schedule", map[string]string{"expression": "61 * * * *"}), http.StatusBadRequest)
	if bad.Field != "expression" || !strings.Contains(bad.Message, "minute field") {
		t.Fatalf("bad expression: %+v", bad)
	}
	errorBody(t, ts.doJSON(t, "PUT", "/v1/functions/nope/schedule", map[string]string{"expression": "* * * * *"}), http.StatusNotFound)

	// The clock is at 03:04:05; */5 fires at 03:05.
	sc := decode[api.Schedule](t, ts.doJSON(t, "PUT", "/v1/functions/tick/schedule", map[string]string{"expression": "*/5 * * * *"}), http.StatusOK)
	if want := time.Date(2025, 1, 2, 3, 5, 0, 0, time.UTC); !sc.NextAt.Equal(want) {
		t.Fatalf("next_at %s, want %s", sc.NextAt, want)
	}
	if n, _ := ts.fireDue(); n != 0 {
		t.Fatalf("fired %d before due", n)
	}
	ts.clock.Advance(time.Minute)
	if n, err := ts.fireDue(); n != 1 || err != nil {
		t.Fatalf("fireDue = %d, %v; want 1", n, err)
	}
	// Ten minutes of downtime: one catch-up fire, then on schedule.
	ts.clock.Advance(10 * time.Minute)
	if n, _ := ts.fireDue(); n != 1 {
		t.Fatalf("catch-up fired %d, want 1", n)
	}
	got := decode[api.Schedule](t, ts.do(t, "GET", "/v1/functions/tick/schedule", nil), http.StatusOK)
	if got.Fired != 2 || !got.NextAt.Equal(time.Date(2025, 1, 2, 3, 20, 0, 0, time.UTC)) {
		t.Fatalf("schedule after fires: %+v", got)
	}
	reqs := waitRequests(t, ag, 2)
	times := map[string]bool{}
	for _, r := range reqs {
		var ev map[string]any
		if err := json.Unmarshal(r.Payload, &ev); err != nil {
			t.Fatalf("payload %s: %v", r.Payload, err)
		}
		if ev["detail-type"] != "Scheduled Event" || ev["source"] != "aws.events" || ev["id"] == "" {
			t.Fatalf("scheduled event %s", r.Payload)
		}
		times[ev["time"].(string)] = true
	}
	// Deliveries run concurrently: either order.
	if !times["2025-01-02T03:05:00Z"] || !times["2025-01-02T03:10:00Z"] {
		t.Fatalf("fire times %v; want 03:05 and 03:10", times)
	}
	if list := decode[[]api.Schedule](t, ts.do(t, "GET", "/v1/schedules", nil), http.StatusOK); len(list) != 1 {
		t.Fatalf("schedules %+v", list)
	}
	if resp := ts.do(t, "DELETE", "/v1/functions/tick/schedule", nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	errorBody(t, ts.do(t, "GET", "/v1/functions/tick/schedule", nil), http.StatusNotFound)
	ts.clock.Advance(time.Hour)
	if n, _ := ts.fireDue(); n != 0 {
		t.Fatalf("deleted schedule fired")
	}
	// rate() works through the API too.
	sc = decode[api.Schedule](t, ts.doJSON(t, "PUT", "/v1/functions/tick/schedule", map[string]string{"expression": "rate(2 hours)"}), http.StatusOK)
	if d := sc.NextAt.Sub(ts.clock.Now()); d <= time.Hour || d > 2*time.Hour {
		t.Fatalf("rate next in %s", d)
	}
}

// waitRequests waits until the fake agent got at least n requests.
func waitRequests(t *testing.T, fa *fakeAgent, n int) []agentRequest {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := fa.got()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent got %d requests, want %d", len(got), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCronThreeSchedulersFireOnce: three schedulers on one JetStream, each
// with the same schedule, firing every tick at once, queue one event per
// tick.
func TestCronThreeSchedulersFireOnce(t *testing.T) {
	addr := freeAddr(t)
	clock := newFakeClock()
	ag := newFakeAgent(t, "a1")
	var ss []*testScheduler
	for i := range 3 {
		nc := NATSConfig{Listen: addr}
		if i > 0 {
			nc = NATSConfig{URL: "nats://" + addr, Replicas: 1}
		}
		ts := newTestScheduler(t, WithNATS(nc), WithClock(clock.Now), WithHeartbeatTimeouts(24*time.Hour, 48*time.Hour))
		ts.clock = clock
		ts.heartbeat(t, api.Heartbeat{Name: "a1", URL: ag.srv.URL, CapacityMB: 4096})
		// The registry is shared: each sets the same schedule at the same
		// time, which keeps one schedule identity.
		ts.deployShared(t, "tick", 128)
		decode[api.Schedule](t, ts.doJSON(t, "PUT", "/v1/functions/tick/schedule", map[string]string{"expression": "* * * * *"}), http.StatusOK)
		ss = append(ss, ts)
	}
	const ticks = 5
	for range ticks {
		clock.Advance(time.Minute)
		var wg sync.WaitGroup
		var fired atomic.Int32
		for _, ts := range ss {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n, err := ts.fireDue()
				if err != nil {
					t.Errorf("fireDue: %v", err)
				}
				fired.Add(int32(n))
			}()
		}
		wg.Wait()
		// The schedulers' own loops may have fired the tick first.
		if n := fired.Load(); n > 1 {
			t.Fatalf("a tick fired %d times", n)
		}
	}
	waitRequests(t, ag, ticks)
	waitFor(t, "queue empty", func() bool { p, _ := ss[0].pendingEvents(); return p["tick"] == 0 })
	got := ag.got()
	times := map[string]bool{}
	ids := map[string]bool{}
	for _, r := range got {
		var ev map[string]any
		if err := json.Unmarshal(r.Payload, &ev); err != nil {
			t.Fatalf("payload %s: %v", r.Payload, err)
		}
		times[ev["time"].(string)] = true
		ids[ev["id"].(string)] = true
	}
	if len(got) != ticks || len(times) != ticks || len(ids) != ticks {
		t.Fatalf("%d deliveries of %d ticks (%d event ids); want %d of each: %v", len(got), len(times), len(ids), ticks, times)
	}
	for i := range ticks {
		if at := time.Date(2025, 1, 2, 3, 5+i, 0, 0, time.UTC).Format(time.RFC3339); !times[at] {
			t.Fatalf("tick %s not delivered; got %v", at, times)
		}
	}
}

// TestCronRepublishIsDeduplicated: a pass that published a tick but could
// not advance the schedule publishes it again on the next pass; the queue
// drops it, also when the first event was delivered already.
func TestCronRepublishIsDeduplicated(t *testing.T) {
	ts := newTestScheduler(t, WithHeartbeatTimeouts(24*time.Hour, 48*time.Hour))
	ag := newFakeAgent(t, "a1")
	ts.heartbeat(t, api.Heartbeat{Name: "a1", URL: ag.srv.URL, CapacityMB: 4096})
	ts.deploy(t, "tick", 128)
	sc := decode[api.Schedule](t, ts.doJSON(t, "PUT", "/v1/functions/tick/schedule", map[string]string{"expression": "*/5 * * * *"}), http.StatusOK)
	ts.clock.Advance(time.Minute)
	// (The scheduler's own loop may fire it first.)
	if _, err := ts.fireDue(); err != nil {
		t.Fatal(err)
	}
	waitRequests(t, ag, 1)
	waitFor(t, "queue empty", func() bool { p, _ := ts.pendingEvents(); return p["tick"] == 0 })
	// Put the schedule back as it was before the fire (a lost advance).
	if ok, err := ts.reg.advanceSchedule("tick", mustSchedule(t, ts), sc); !ok || err != nil {
		t.Fatalf("rewind: %v, %v", ok, err)
	}
	if n, err := ts.fireDue(); n != 0 || err != nil {
		t.Fatalf("second pass fired %d, %v; want 0 (a duplicate)", n, err)
	}
	if p, _ := ts.pendingEvents(); p["tick"] != 0 {
		t.Fatalf("pending %v; want none", p)
	}
	if got := mustSchedule(t, ts); got.NextAt.Equal(sc.NextAt) {
		t.Fatalf("schedule not advanced by the second pass: %+v", got)
	}
	// A lost race: advancing from a stale schedule does nothing.
	if ok, err := ts.reg.advanceSchedule("tick", sc, sc); ok || err != nil {
		t.Fatalf("stale advance = %v, %v; want false", ok, err)
	}
	if n := len(ag.got()); n != 1 {
		t.Fatalf("%d deliveries, want 1", n)
	}
}

func mustSchedule(t *testing.T, ts *testScheduler) api.Schedule {
	t.Helper()
	return decode[api.Schedule](t, ts.do(t, "GET", "/v1/functions/tick/schedule", nil), http.StatusOK)
}
