package testenv_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// waitUntil polls cond every 100 ms for up to limit.
func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAsyncEventArrives: an Event invocation of examples/shell is queued
// (202), delivered through placement to an agent, and shows in the ledger
// and the function's logs.
func TestAsyncEventArrives(t *testing.T) {
	f := cluster(t)
	c := f.cluster.Client()
	ctx := t.Context()
	deploy(t, c, "async-shell", f.images["shell"])
	marker := fmt.Sprintf("marker-%d", time.Now().UnixNano())
	id, err := c.InvokeAsync(ctx, "async-shell", []byte(`{"marker":"`+marker+`"}`))
	if err != nil || id == "" {
		t.Fatalf("InvokeAsync: %q, %v", id, err)
	}
	var rec api.LedgerRecord
	waitUntil(t, 60*time.Second, "event delivered (ledger)", func() bool {
		recs, err := c.Ledger(ctx, "async-shell", time.Time{}, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.Source == "event" {
				rec = r
				return true
			}
		}
		return false
	})
	if rec.Error || rec.BilledMs < 1 || rec.MemoryMB != 128 || rec.Agent == "" || rec.StartKind == "" {
		t.Errorf("ledger record %+v", rec)
	}
	waitUntil(t, 10*time.Second, "logs of the event", func() bool {
		logs, err := c.Logs(ctx, "async-shell", time.Time{}, 200)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range logs {
			if l.RequestID == rec.RequestID && strings.Contains(l.Text, "REPORT RequestId: "+rec.RequestID) {
				return true
			}
		}
		return false
	})
	st, err := c.Async(ctx, "async-shell")
	if err != nil || st.Pending != 0 || st.DeadLetters != 0 || st.MaxRetries != 2 {
		t.Errorf("async status %+v, %v", st, err)
	}
}

// TestAsyncDeadLetter: an event to a function that always fails is tried
// three times (two retries) and lands in the dead-letter list with the
// error of each attempt.
func TestAsyncDeadLetter(t *testing.T) {
	f := cluster(t)
	c := f.cluster.Client()
	ctx := t.Context()
	isoDeploy(t, f, "async-fails", `handler() { echo "no luck" >&2; return 3; }`)
	id, err := c.InvokeAsync(ctx, "async-fails", []byte(`{"try":1}`))
	if err != nil {
		t.Fatal(err)
	}
	var dl []api.DeadLetter
	waitUntil(t, 90*time.Second, "dead letter", func() bool {
		dl, err = c.DeadLetters(ctx, "async-fails")
		if err != nil {
			t.Fatal(err)
		}
		return len(dl) > 0
	})
	d := dl[0]
	if d.EventID != id || len(d.Attempts) != 3 || string(d.Payload) != `{"try":1}` {
		t.Fatalf("dead letter %+v", d)
	}
	for i, a := range d.Attempts {
		if !strings.Contains(a.Error, "function error") || a.RequestID == "" {
			t.Errorf("attempt %d: %+v", i+1, a)
		}
		if i > 0 && a.At.Sub(d.Attempts[i-1].At) < 900*time.Millisecond {
			t.Errorf("attempt %d came %s after the previous one; want backoff", i+1, a.At.Sub(d.Attempts[i-1].At))
		}
	}
	all, err := c.DeadLetters(ctx, "")
	if err != nil || len(all) < 1 {
		t.Errorf("all dead letters: %d, %v", len(all), err)
	}
}

// TestLedgerCountsInvocations: the ledger holds exactly one record per
// invocation a client made, sync and async, and the bill agrees.
func TestLedgerCountsInvocations(t *testing.T) {
	f := cluster(t)
	c := f.cluster.Client()
	ctx := t.Context()
	deploy(t, c, "ledgered", f.images["shell"])
	since := time.Now().Add(-time.Minute)
	ids := map[string]bool{}
	for i := range 5 {
		res, err := c.Invoke(ctx, "ledgered", []byte(fmt.Sprintf(`{"i":%d}`, i)))
		if err != nil || res.FunctionError != "" {
			t.Fatalf("invoke %d: %v", i, err)
		}
		ids[res.RequestID] = true
	}
	// Every record of a sync invocation is there as soon as its answer is.
	recs, err := c.Ledger(ctx, "ledgered", since, 1000)
	if err != nil || len(recs) != 5 {
		t.Fatalf("after 5 sync invocations: %d records, %v", len(recs), err)
	}
	for _, r := range recs {
		if !ids[r.RequestID] || r.Source != "sync" {
			t.Errorf("record %+v is not one of the invocations", r)
		}
	}
	for i := range 2 {
		if _, err := c.InvokeAsync(ctx, "ledgered", []byte(fmt.Sprintf(`{"async":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 60*time.Second, "7 ledger records", func() bool {
		recs, err = c.Ledger(ctx, "ledgered", since, 1000)
		return err == nil && len(recs) >= 7
	})
	time.Sleep(500 * time.Millisecond)
	if recs, _ = c.Ledger(ctx, "ledgered", since, 1000); len(recs) != 7 {
		t.Fatalf("%d ledger records, want 7", len(recs))
	}
	b, err := c.Bill(ctx, time.Now().Add(-time.Hour), time.Time{}, "hour")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range b.Functions {
		if u.Function == "ledgered" {
			if u.Requests != 7 || u.GBSeconds <= 0 || u.Cost <= 0 {
				t.Errorf("bill for ledgered: %+v", u)
			}
			return
		}
	}
	t.Errorf("bill lacks ledgered: %+v", b.Functions)
}
