package scheduler

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/amberfn/amber/api"
)

var ledgerTestHour = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

func ledgerTestRecords(n int, fn string) []api.LedgerRecord {
	out := make([]api.LedgerRecord, n)
	for i := range out {
		out[i] = api.LedgerRecord{Time: ledgerTestHour.Add(time.Duration(i) * time.Millisecond), RequestID: "r", Function: fn,
			Version: 1, BilledMs: 2, MemoryMB: 1024, GBSeconds: 0.002, StartKind: api.StartWarm, Source: sourceSync}
	}
	return out
}

// ledgerTotals is the bill of the test hour, per function and in all.
func ledgerTotals(t *testing.T, s *Scheduler) (map[string]api.Usage, api.Usage) {
	t.Helper()
	b, err := s.bill(ledgerTestHour, ledgerTestHour.Add(time.Hour), "")
	if err != nil {
		t.Fatalf("bill: %v", err)
	}
	per := map[string]api.Usage{}
	for _, u := range b.Functions {
		per[u.Function] = u
	}
	return per, b.Totals
}

// ledgerScheduler starts a scheduler on dir, closed when the test ends.
func ledgerScheduler(t *testing.T, dir string, opts ...Option) *Scheduler {
	t.Helper()
	// The clock keeps the test records within the retention.
	now := func() time.Time { return ledgerTestHour.Add(time.Hour) }
	s, err := New(append([]Option{WithDataDir(dir), WithLogger(testLogger(t)), WithStartGrace(0), WithClock(now)}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func writeAll(t *testing.T, s *Scheduler, recs []api.LedgerRecord) {
	t.Helper()
	var wg sync.WaitGroup
	for _, r := range recs {
		wg.Go(func() {
			if err := s.ledger.write(r); err != nil {
				t.Errorf("write: %v", err)
			}
		})
	}
	wg.Wait()
}

// Two schedulers on one JetStream, each writing records: the bill on
// either shows every record summed once.
func TestLedgerTwoSchedulers(t *testing.T) {
	addr := freeAddr(t)
	a := ledgerScheduler(t, t.TempDir(), WithNATS(NATSConfig{Listen: addr}))
	b := ledgerScheduler(t, t.TempDir(), WithNATS(NATSConfig{URL: "nats://" + addr, Replicas: 1}))
	var wg sync.WaitGroup
	wg.Go(func() { writeAll(t, a, ledgerTestRecords(150, "fa")) })
	wg.Go(func() { writeAll(t, b, ledgerTestRecords(120, "fb")) })
	wg.Go(func() { writeAll(t, a, ledgerTestRecords(40, "both")) })
	wg.Go(func() { writeAll(t, b, ledgerTestRecords(60, "both")) })
	wg.Wait()
	for name, s := range map[string]*Scheduler{"first": a, "second": b} {
		per, tot := ledgerTotals(t, s)
		if tot.Requests != 370 || per["fa"].Requests != 150 || per["fb"].Requests != 120 || per["both"].Requests != 100 ||
			!near(tot.GBSeconds, 370*0.002) || tot.BilledMs != 740 {
			t.Errorf("%s scheduler's bill: %+v, %+v", name, tot, per)
		}
		recs, err := s.ledgerRecords("both", time.Time{}, 1000)
		if err != nil || len(recs) != 100 {
			t.Errorf("%s scheduler lists %d records of both (%v), want 100", name, len(recs), err)
		}
	}
}

// A scheduler whose summer dies between receiving records and summing
// them, or between storing the sums and acknowledging the records: the
// other scheduler sums the rest, nothing is counted twice.
func TestLedgerSummerCrash(t *testing.T) {
	defer func(d time.Duration) { ledgerAckWait = d }(ledgerAckWait)
	ledgerAckWait = time.Second
	for _, tc := range []struct {
		name  string
		stage int32
	}{
		{"before the sums are stored", crashBeforeSum},
		{"after the sums are stored, before the ack", crashBeforeAck},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := freeAddr(t)
			a := ledgerScheduler(t, t.TempDir(), WithNATS(NATSConfig{Listen: addr}))
			a.ledger.crashAt.Store(tc.stage)
			writeAll(t, a, ledgerTestRecords(200, "f"))
			select {
			case <-a.ledger.sumDone: // the summer received a batch and died
			case <-time.After(30 * time.Second):
				t.Fatal("the first scheduler's summer never received a record")
			}
			ctx := context.Background()
			ent, err := a.ledger.kv.Get(ctx, usageKey(ledgerTestHour, "f"))
			switch tc.stage {
			case crashBeforeSum:
				if !errors.Is(err, jetstream.ErrKeyNotFound) {
					t.Fatalf("sums stored before the crash: %v", err)
				}
			case crashBeforeAck:
				var e usageEntry
				if err != nil || json.Unmarshal(ent.Value(), &e) != nil || e.Usage.Requests == 0 {
					t.Fatalf("no sums stored before the crash: %v", err)
				}
				t.Logf("%d records summed, not acknowledged, before the crash", e.Usage.Requests)
			}
			// The first scheduler still takes records; the second sums.
			b := ledgerScheduler(t, t.TempDir(), WithNATS(NATSConfig{URL: "nats://" + addr, Replicas: 1}))
			writeAll(t, a, ledgerTestRecords(30, "f"))
			writeAll(t, b, ledgerTestRecords(20, "f"))
			for name, s := range map[string]*Scheduler{"first": a, "second": b} {
				if _, tot := ledgerTotals(t, s); tot.Requests != 250 || tot.BilledMs != 500 {
					t.Errorf("%s scheduler's bill: %d requests, %d ms; want 250, 500", name, tot.Requests, tot.BilledMs)
				}
			}
		})
	}
}

// Writers racing a Close: every write that returned nil is in the ledger
// when it is opened again; the others got errLedgerClosed.
func TestLedgerCloseUnderWriters(t *testing.T) {
	dir := t.TempDir()
	clock := WithClock(func() time.Time { return ledgerTestHour.Add(time.Hour) }) // the records are within the retention
	s, err := New(WithDataDir(dir), WithStartGrace(0), clock)
	if err != nil {
		t.Fatal(err)
	}
	var ok atomic.Int64
	var wg sync.WaitGroup
	rec := ledgerTestRecords(1, "c")[0]
	for range 32 {
		wg.Go(func() {
			for {
				if err := s.ledger.write(rec); err != nil {
					if !errors.Is(err, errLedgerClosed) {
						t.Errorf("write: %v", err)
					}
					return
				}
				ok.Add(1)
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	s = ledgerScheduler(t, dir, clock)
	recs, err := s.ledgerRecords("c", time.Time{}, 100000)
	if err != nil || int64(len(recs)) != ok.Load() {
		t.Fatalf("%d records (%v); %d writes acknowledged", len(recs), err, ok.Load())
	}
	if _, tot := ledgerTotals(t, s); tot.Requests != ok.Load() {
		t.Fatalf("%d requests billed; %d writes acknowledged", tot.Requests, ok.Load())
	}
	t.Logf("%d writes acknowledged before the close", ok.Load())
}

// When JetStream cannot take a record the caller still gets its answer;
// the record waits in memory and is stored once JetStream is back.
func TestLedgerPendingRetried(t *testing.T) {
	ts := newTestScheduler(t)
	ctx := context.Background()
	info, err := ts.ledger.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.eng.JS.DeleteStream(ctx, ledgerStreamName); err != nil {
		t.Fatal(err)
	}
	fn := &api.Function{FunctionSpec: api.FunctionSpec{Name: "p", MemoryMB: 128}, Version: 1}
	ts.ledgerInvocation(ctx, fn, "kept", "a", &api.InvokeResult{BilledMs: 3, MemoryMB: 128, StartKind: api.StartWarm}, false)
	if n := ts.ledger.pendingRecords(); n != 1 {
		t.Fatalf("%d records pending, want 1", n)
	}
	ts.ledger.retryPending() // still no stream
	if n := ts.ledger.pendingRecords(); n != 1 {
		t.Fatalf("%d records pending after a failed retry, want 1", n)
	}
	if _, err := ts.eng.Stream(ctx, info.Config); err != nil {
		t.Fatal(err)
	}
	ts.ledger.retryPending()
	if n := ts.ledger.pendingRecords(); n != 0 {
		t.Fatalf("%d records pending once JetStream is back", n)
	}
	recs, err := ts.ledgerRecords("p", time.Time{}, 10)
	if err != nil || len(recs) != 1 || recs[0].RequestID != "kept" {
		t.Fatalf("records %+v, %v", recs, err)
	}
}

func TestUsageEntryAdd(t *testing.T) {
	u := func(n int64) api.Usage { return api.Usage{Requests: n} }
	tests := []struct {
		name      string
		entry     usageEntry
		items     []seqUsage
		floor     uint64
		changed   bool
		requests  int64
		wantFloor uint64
		applied   []uint64
	}{
		{"new", usageEntry{}, []seqUsage{{5, u(1)}, {7, u(2)}}, 0, true, 3, 0, []uint64{5, 7}},
		{"redelivered, applied", usageEntry{Usage: u(3), Applied: []uint64{5, 7}}, []seqUsage{{7, u(2)}}, 0, false, 3, 0, []uint64{5, 7}},
		{"redelivered, below the floor", usageEntry{Usage: u(3), Floor: 9}, []seqUsage{{7, u(2)}}, 0, false, 3, 9, nil},
		{"out of order", usageEntry{Usage: u(2), Seq: 9, Applied: []uint64{9}}, []seqUsage{{4, u(1)}}, 0, true, 3, 0, []uint64{4, 9}},
		{"floor prunes", usageEntry{Usage: u(2), Applied: []uint64{3, 4}}, []seqUsage{{10, u(1)}}, 4, true, 3, 4, []uint64{10}},
		{"mixed", usageEntry{Usage: u(2), Floor: 2, Applied: []uint64{6}}, []seqUsage{{1, u(1)}, {6, u(1)}, {8, u(1)}}, 3, true, 3, 3, []uint64{6, 8}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.entry
			if got := e.add(tc.items, tc.floor); got != tc.changed || e.Usage.Requests != tc.requests || e.Floor != tc.wantFloor || !slices.Equal(e.Applied, tc.applied) {
				t.Fatalf("changed %v, entry %+v; want %v, %d requests, floor %d, applied %v", got, e, tc.changed, tc.requests, tc.wantFloor, tc.applied)
			}
		})
	}
}

func TestUsageKeysAndFilters(t *testing.T) {
	h := time.Date(2025, 1, 2, 3, 0, 0, 0, time.UTC)
	if k := usageKey(h, "fn-1"); k != "2025.01.02.03.fn-1" {
		t.Fatalf("key %q", k)
	}
	if hh, fn, ok := parseUsageKey("2025.01.02.03.fn-1"); !ok || !hh.Equal(h) || fn != "fn-1" {
		t.Fatalf("parsed %v %q %v", hh, fn, ok)
	}
	for _, k := range []string{"import.ledger", "import.ledger.progress", "2025.01.02"} {
		if _, _, ok := parseUsageKey(k); ok {
			t.Errorf("%q parsed as an hourly key", k)
		}
	}
	tests := []struct {
		from, to time.Time
		want     []string
	}{
		{h, h.Add(time.Hour), []string{"2025.01.02.03.*"}},
		{h.Add(21 * time.Hour), h.Add(23 * time.Hour), []string{"2025.01.03.00.*", "2025.01.03.01.*"}},
		{time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2025, 2, 2, 1, 0, 0, 0, time.UTC),
			[]string{"2025.01.>", "2025.02.01.>", "2025.02.02.00.*"}},
		{time.Date(2024, 12, 31, 23, 0, 0, 0, time.UTC), time.Date(2025, 1, 2, 0, 0, 0, 0, time.UTC),
			[]string{"2024.12.31.23.*", "2025.01.01.>"}},
		{h, h, nil},
	}
	for _, tc := range tests {
		if got := usageFilters(tc.from, tc.to); !slices.Equal(got, tc.want) {
			t.Errorf("filters %s – %s = %v, want %v", tc.from, tc.to, got, tc.want)
		}
	}
}

func TestLedgerRefusesBadFunction(t *testing.T) {
	ts := newTestScheduler(t)
	for _, fn := range []string{"", "a.b", "a*", "a b", "a>"} {
		r := ledgerTestRecords(1, "x")[0]
		r.Function = fn
		if err := ts.ledger.write(r); !errors.Is(err, errLedgerFunction) {
			t.Errorf("function %q: %v", fn, err)
		}
	}
	if _, err := ts.ledgerRecords("a.b", time.Time{}, 10); err == nil {
		t.Error("listing a.b accepted")
	}
}

// oldWALFrame encodes a record as the bbolt ledger's log did.
func oldWALFrame(rec api.LedgerRecord) []byte {
	data, _ := json.Marshal(rec)
	b := binary.BigEndian.AppendUint32(nil, uint32(len(data)))
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)))
	return append(b, data...)
}

// writeOldLedger builds DATA/ledger.db and DATA/ledger.wal as the bbolt
// ledger left them: raw records with their hourly sums, a warmth-only
// hour, and a log whose tail (past wal_applied) was never applied, ending
// in a torn frame.
func writeOldLedger(t *testing.T, dir string, raw, tail []api.LedgerRecord, warmth api.Usage, warmHour time.Time) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, "ledger.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wal []byte
	for _, r := range raw {
		wal = append(wal, oldWALFrame(r)...)
	}
	applied := len(wal)
	err = db.Update(func(tx *bolt.Tx) error {
		rb, _ := tx.CreateBucketIfNotExists([]byte("records"))
		hb, _ := tx.CreateBucketIfNotExists([]byte("hourly"))
		mb, _ := tx.CreateBucketIfNotExists([]byte("meta"))
		sums := map[string]*api.Usage{}
		for i, r := range raw {
			data, _ := json.Marshal(r)
			k := binary.BigEndian.AppendUint64(nil, uint64(r.Time.UnixNano()))
			k = binary.BigEndian.AppendUint64(k, uint64(i+1))
			if err := rb.Put(k, data); err != nil {
				return err
			}
			hk := string(binary.BigEndian.AppendUint64(nil, uint64(r.Time.Truncate(time.Hour).Unix()))) + r.Function
			if sums[hk] == nil {
				sums[hk] = &api.Usage{}
			}
			sums[hk].Add(api.Usage{Requests: 1, BilledMs: r.BilledMs, GBSeconds: r.GBSeconds})
		}
		sums[string(binary.BigEndian.AppendUint64(nil, uint64(warmHour.Unix())))+"f"] = &warmth
		for k, u := range sums {
			data, _ := json.Marshal(u)
			if err := hb.Put([]byte(k), data); err != nil {
				return err
			}
		}
		return mb.Put([]byte("wal_applied"), binary.BigEndian.AppendUint64(nil, uint64(applied)))
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	for _, r := range tail {
		wal = append(wal, oldWALFrame(r)...)
	}
	wal = append(wal, 0, 0, 1, 0, 9, 9, 9, 9, '{', '"') // torn: never acknowledged
	if err := os.WriteFile(filepath.Join(dir, "ledger.wal"), wal, 0o600); err != nil {
		t.Fatal(err)
	}
}

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestLedgerImportBolt(t *testing.T) {
	dir := t.TempDir()
	raw := append(ledgerTestRecords(40, "f"), ledgerTestRecords(25, "g")...)
	tail := ledgerTestRecords(7, "f") // in the log, not applied to ledger.db
	warmHour := ledgerTestHour.Add(-2 * time.Hour)
	writeOldLedger(t, dir, raw, tail, api.Usage{WarmthSeconds: 30, WarmthGBSeconds: 15}, warmHour)

	check := func(t *testing.T, s *Scheduler) {
		t.Helper()
		per, tot := ledgerTotals(t, s)
		if per["f"].Requests != 47 || per["g"].Requests != 25 || tot.BilledMs != 2*72 || !near(tot.GBSeconds, 72*0.002) {
			t.Errorf("bill after the import: %+v, %+v; want f 47, g 25", tot, per)
		}
		b, err := s.bill(warmHour, warmHour.Add(time.Hour), "")
		if err != nil || !near(b.Totals.WarmthSeconds, 30) || !near(b.Totals.WarmthGBSeconds, 15) || b.Totals.Requests != 0 {
			t.Errorf("warmth hour: %+v, %v", b.Totals, err)
		}
		recs, err := s.ledgerRecords("", time.Time{}, 1000)
		if err != nil || len(recs) != 72 {
			t.Errorf("%d records listed (%v), want 72", len(recs), err)
		}
		recs, _ = s.ledgerRecords("g", ledgerTestHour.Add(10*time.Millisecond), 1000)
		if len(recs) != 15 || !recs[0].Time.Equal(ledgerTestHour.Add(10*time.Millisecond)) {
			t.Errorf("%d records of g since +10ms, want 15", len(recs))
		}
	}
	open := func(t *testing.T) (*Scheduler, *logBuf) {
		lb := &logBuf{}
		now := func() time.Time { return ledgerTestHour.Add(90 * time.Minute) }
		s, err := New(WithDataDir(dir), WithStartGrace(0), WithClock(now), WithLogger(slog.New(slog.NewTextHandler(lb, nil))))
		if err != nil {
			t.Fatal(err)
		}
		return s, lb
	}

	s, lb := open(t)
	check(t, s)
	if !strings.Contains(lb.String(), "imported from bbolt") || !strings.Contains(lb.String(), "records=65") ||
		!strings.Contains(lb.String(), "unapplied_log_records=7") {
		t.Errorf("import log: %s", lb.String())
	}
	for _, f := range []string{"ledger.db", "ledger.wal"} {
		if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there: %v", f, err)
		}
		if _, err := os.Stat(filepath.Join(dir, f+".imported")); err != nil {
			t.Errorf("%s.imported: %v", f, err)
		}
	}
	s.Close()

	// A restart imports nothing again.
	s, lb = open(t)
	check(t, s)
	if strings.Contains(lb.String(), "imported from bbolt") {
		t.Errorf("imported again: %s", lb.String())
	}
	s.Close()

	// Nor when the file is back (a crash between marking the import done
	// and renaming): it is renamed, nothing added.
	if err := os.Rename(filepath.Join(dir, "ledger.db.imported"), filepath.Join(dir, "ledger.db")); err != nil {
		t.Fatal(err)
	}
	s, lb = open(t)
	defer s.Close()
	check(t, s)
	if strings.Contains(lb.String(), "imported from bbolt") {
		t.Errorf("imported again: %s", lb.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "ledger.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ledger.db not renamed: %v", err)
	}
}
