package scheduler

import (
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

func TestLedgerRecordsAndBill(t *testing.T) {
	ts, ag := newAsyncTest(t)
	invoke := func() {
		t.Helper()
		resp := ts.do(t, "POST", "/v1/functions/f/invoke", strings.NewReader(`{}`))
		if resp.StatusCode != 200 {
			t.Fatalf("invoke: %d", resp.StatusCode)
		}
	}
	// 03:04 ×2, 04:04 ×1, next day 04:04 ×1 (the fake agent bills 2 ms at 128 MB).
	invoke()
	invoke()
	ts.clock.Advance(time.Hour)
	invoke()
	ts.clock.Advance(24 * time.Hour)
	ts.heartbeat(t, api.Heartbeat{Name: "a1", URL: ag.srv.URL, CapacityMB: 4096})
	invoke()

	recs := decode[[]api.LedgerRecord](t, ts.do(t, "GET", "/v1/ledger", nil), http.StatusOK)
	if len(recs) != 4 {
		t.Fatalf("%d records, want 4", len(recs))
	}
	r := recs[0]
	if r.Function != "f" || r.Version != 1 || r.Agent != "a1" || r.StartKind != api.StartWarm || r.BilledMs != 2 ||
		r.MemoryMB != 128 || r.DurationUs != 1500 || r.Source != sourceSync || r.Error || r.RequestID == "" ||
		!near(r.GBSeconds, 0.002*0.125) || !r.Time.Equal(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Fatalf("record %+v", r)
	}

	gbs := 0.002 * 0.125
	b := decode[api.Bill](t, ts.do(t, "GET", "/v1/bill?since=48h&by=hour", nil), http.StatusOK)
	if len(b.Periods) != 3 || b.Periods[0].Requests != 2 || b.Periods[1].Requests != 1 || b.Periods[2].Requests != 1 {
		t.Fatalf("by hour: %+v", b.Periods)
	}
	if !b.Periods[0].Period.Equal(time.Date(2025, 1, 2, 3, 0, 0, 0, time.UTC)) || !b.Periods[2].Period.Equal(time.Date(2025, 1, 3, 4, 0, 0, 0, time.UTC)) {
		t.Fatalf("hours %s, %s", b.Periods[0].Period, b.Periods[2].Period)
	}
	if b.Totals.Requests != 4 || !near(b.Totals.GBSeconds, 4*gbs) || b.Totals.BilledMs != 8 {
		t.Fatalf("totals %+v", b.Totals)
	}
	p := api.DefaultPrices()
	wantCost := 4*p.PerMillionRequests/1e6 + 4*gbs*p.PerGBSecond
	if !near(b.Totals.Cost, wantCost) || len(b.Functions) != 1 || !near(b.Functions[0].Cost, wantCost) {
		t.Fatalf("cost %v (functions %+v), want %v", b.Totals.Cost, b.Functions, wantCost)
	}
	b = decode[api.Bill](t, ts.do(t, "GET", "/v1/bill?since=2025-01-01T00:00:00Z&until=2025-01-04T00:00:00Z&by=day", nil), http.StatusOK)
	if len(b.Periods) != 2 || b.Periods[0].Requests != 3 || b.Periods[1].Requests != 1 ||
		!b.Periods[1].Period.Equal(time.Date(2025, 1, 3, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("by day: %+v", b.Periods)
	}
	// The default window is the last 24 hours (whole hours): 04:00 on the 2nd to 05:00 on the 3rd.
	b = decode[api.Bill](t, ts.do(t, "GET", "/v1/bill", nil), http.StatusOK)
	if b.Totals.Requests != 2 || b.Periods != nil {
		t.Fatalf("default bill: %+v", b)
	}
	for _, q := range []string{"since=yesterday", "by=week", "since=1h&until=2h"} {
		errorBody(t, ts.do(t, "GET", "/v1/bill?"+q, nil), http.StatusBadRequest)
	}

	// Compaction drops raw records past the retention; the bill is unchanged.
	ts.bgCfg.retention = time.Hour
	ts.compactLedger()
	if recs, _ := ts.ledgerRecords("", time.Time{}, 100); len(recs) != 1 {
		t.Fatalf("after compaction %d records, want 1", len(recs))
	}
	b = decode[api.Bill](t, ts.do(t, "GET", "/v1/bill?since=72h", nil), http.StatusOK)
	if b.Totals.Requests != 4 {
		t.Fatalf("bill after compaction: %+v", b.Totals)
	}
}

func TestLedgerPricesAndFreeTier(t *testing.T) {
	prices := api.Prices{PerGBSecond: 1, PerMillionRequests: 1e6, WarmthPerGBSecond: 0.5, FreeTier: true, FreeGBSeconds: 10, FreeRequests: 3}
	ts := newTestScheduler(t, WithPrices(prices))
	day := func(d int) time.Time { return time.Date(2025, 1, d, 12, 0, 0, 0, time.UTC) }
	// Jan 1: 2 requests, 8 GB-s; Jan 2: 2 requests, 8 GB-s; Feb 1: 1 request, 1 GB-s.
	var recs []api.LedgerRecord
	for _, r := range []struct {
		at  time.Time
		gbs float64
	}{{day(1), 4}, {day(1), 4}, {day(2), 4}, {day(2), 4}, {time.Date(2025, 2, 1, 0, 30, 0, 0, time.UTC), 1}} {
		recs = append(recs, api.LedgerRecord{Time: r.at, Function: "f", RequestID: "x", GBSeconds: r.gbs, StartKind: api.StartWarm})
	}
	for _, r := range recs {
		if err := ts.ledger.write(r); err != nil {
			t.Fatal(err)
		}
	}
	// The whole of January: 4 requests (3 free), 16 GB-s (10 free).
	b, err := ts.bill(day(1).Add(-12*time.Hour), time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC), "")
	if err != nil {
		t.Fatal(err)
	}
	if b.Totals.Requests != 4 || !near(b.Totals.GBSeconds, 16) || b.FreeTierRequests != 3 || !near(b.FreeTierGBSeconds, 10) {
		t.Fatalf("january: %+v", b)
	}
	if !near(b.Totals.Cost, 1+6) {
		t.Fatalf("january cost %v, want 7 (1 request + 6 GB-s)", b.Totals.Cost)
	}
	// Jan 2 alone: Jan 1 used 2 requests and 8 GB-s of the allowance already.
	b, _ = ts.bill(day(2).Add(-12*time.Hour), day(3).Add(-12*time.Hour), "")
	if b.FreeTierRequests != 1 || !near(b.FreeTierGBSeconds, 2) || !near(b.Totals.Cost, 1+6) {
		t.Fatalf("jan 2: free %d req, %v GB-s, cost %v", b.FreeTierRequests, b.FreeTierGBSeconds, b.Totals.Cost)
	}
	// Across the month boundary February has a fresh allowance.
	b, _ = ts.bill(day(2).Add(-12*time.Hour), time.Date(2025, 2, 2, 0, 0, 0, 0, time.UTC), "day")
	if b.FreeTierRequests != 2 || !near(b.FreeTierGBSeconds, 3) || len(b.Periods) != 2 {
		t.Fatalf("jan 2 – feb 1: %+v", b)
	}
	// Free tier off by default.
	if !api.DefaultPrices().FreeTier == false {
		t.Fatal("free tier on by default")
	}
}

func TestLedgerWarmth(t *testing.T) {
	ts, ag := newAsyncTest(t)
	ts.deploy(t, "cold", 512)
	if r := ts.doJSON(t, "PUT", "/v1/functions/f/pool", map[string]any{"min_warm": 2}); r.StatusCode != 200 {
		t.Fatalf("pool: %d", r.StatusCode)
	}
	idle := []api.Instance{
		{ID: "i1", Function: "f", Version: 1, State: api.StateIdle, MemoryMB: 1024},
		{ID: "i2", Function: "f", Version: 1, State: api.StateIdle, MemoryMB: 1024},
		{ID: "i3", Function: "cold", Version: 1, State: api.StateIdle, MemoryMB: 512}, // no min_warm: not billed
	}
	hb := api.Heartbeat{Name: "a1", URL: ag.srv.URL, CapacityMB: 4096, Instances: idle}
	ts.heartbeat(t, hb)
	ts.clock.Advance(10 * time.Second)
	ts.heartbeat(t, hb)
	ts.flushWarmth()
	b := decode[api.Bill](t, ts.do(t, "GET", "/v1/bill?since=1h", nil), http.StatusOK)
	if len(b.Functions) != 1 || b.Functions[0].Function != "f" || !near(b.Functions[0].WarmthSeconds, 20) || !near(b.Functions[0].WarmthGBSeconds, 20) {
		t.Fatalf("warmth: %+v", b.Functions)
	}
	p := api.DefaultPrices()
	if !near(b.Totals.WarmthCost, 20*p.WarmthPerGBSecond) || !near(b.Totals.Cost, 20*p.WarmthPerGBSecond) {
		t.Fatalf("warmth cost %+v", b.Totals)
	}
	// The warm pools now: 2 × 128 MB of f.
	if len(b.WarmPools) != 1 || b.WarmPools[0].MinWarm != 2 || !near(b.WarmPoolsCostPerHour, 2*0.125*3600*p.WarmthPerGBSecond) {
		t.Fatalf("warm pools %+v, %v/h", b.WarmPools, b.WarmPoolsCostPerHour)
	}
}

// TestLedgerGroupCommit: concurrent writers all land, sharing commits.
func TestLedgerGroupCommit(t *testing.T) {
	ts := newTestScheduler(t)
	fn := &api.Function{FunctionSpec: api.FunctionSpec{Name: "g", MemoryMB: 256}, Version: 1}
	done := make(chan struct{})
	for i := range 50 {
		go func() {
			ts.ledgerInvocation(t.Context(), fn, "r", "a", &api.InvokeResult{BilledMs: int64(i + 1), MemoryMB: 256, StartKind: api.StartWarm}, false)
			done <- struct{}{}
		}()
	}
	for range 50 {
		<-done
	}
	recs, _ := ts.ledgerRecords("g", time.Time{}, 1000)
	if len(recs) != 50 {
		t.Fatalf("%d records, want 50", len(recs))
	}
	b, _ := ts.bill(ts.clock.Now().Add(-time.Hour), ts.clock.Now(), "")
	if b.Totals.Requests != 50 || b.Totals.BilledMs != 50*51/2 {
		t.Fatalf("totals %+v", b.Totals)
	}
}

func TestLedgerPricesFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, pricesFile), []byte(`{"free_tier":true,"per_gb_second":0.5}`), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := loadPrices(dir)
	want := api.DefaultPrices()
	want.FreeTier, want.PerGBSecond = true, 0.5
	if err != nil || p != want {
		t.Fatalf("loadPrices = %+v, %v; want %+v", p, err, want)
	}
	os.WriteFile(filepath.Join(dir, pricesFile), []byte(`{"per_gb_second":-1}`), 0o600)
	if _, err := loadPrices(dir); err == nil {
		t.Fatal("negative price accepted")
	}
	if p, err := loadPrices(t.TempDir()); err != nil || p != api.DefaultPrices() {
		t.Fatalf("no file: %+v, %v", p, err)
	}
}

// A platform failure (no agent answered) is listed but not billed.
func TestLedgerPlatformFailureNotBilled(t *testing.T) {
	ts := newTestScheduler(t)
	fn := &api.Function{FunctionSpec: api.FunctionSpec{Name: "p", MemoryMB: 128}, Version: 1}
	ts.ledgerInvocation(t.Context(), fn, "ok", "a", &api.InvokeResult{BilledMs: 3, MemoryMB: 128, StartKind: api.StartCold}, false)
	ts.ledgerInvocation(t.Context(), fn, "lost", "a", nil, true)
	recs, _ := ts.ledgerRecords("p", time.Time{}, 10)
	if len(recs) != 2 {
		t.Fatalf("%d records listed, want 2", len(recs))
	}
	b, _ := ts.bill(ts.clock.Now().Add(-time.Hour), ts.clock.Now(), "")
	if b.Totals.Requests != 1 || b.Totals.ColdStarts != 1 || b.Totals.Errors != 0 {
		t.Fatalf("totals %+v: want the answered request only", b.Totals)
	}
}
