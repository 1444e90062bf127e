package scheduler

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/amberfn/amber/api"
)

func walRecords(n int, fn string) []api.LedgerRecord {
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	out := make([]api.LedgerRecord, n)
	for i := range out {
		out[i] = api.LedgerRecord{Time: at.Add(time.Duration(i) * time.Millisecond), RequestID: "r", Function: fn,
			Version: 1, BilledMs: 2, MemoryMB: 1024, GBSeconds: 0.002, StartKind: api.StartWarm}
	}
	return out
}

// counts reads what ledger.db holds: raw records, and the hourly request sum of fn.
func ledgerCounts(t *testing.T, l *ledger, fn string) (records int, requests int64) {
	t.Helper()
	err := l.db.View(func(tx *bolt.Tx) error {
		records = tx.Bucket(bucketLedgerRecords).Stats().KeyN
		return tx.Bucket(bucketLedgerHourly).ForEach(func(k, v []byte) error {
			if string(k[8:]) != fn {
				return nil
			}
			var u api.Usage
			if err := json.Unmarshal(v, &u); err != nil {
				return err
			}
			requests += u.Requests
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return records, requests
}

// crash closes the files as a killed process would leave them: nothing applied.
func crash(t *testing.T, l *ledger) {
	t.Helper()
	if err := l.db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.wal.close(); err != nil {
		t.Fatal(err)
	}
}

func openTestLedger(t *testing.T, dir string) *ledger {
	t.Helper()
	l, err := openLedger(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestLedgerLogRecovery(t *testing.T) {
	tests := []struct {
		name      string
		logged    int  // records appended to the log and acknowledged
		applied   int  // of those, applied to ledger.db before the crash
		torn      bool // a half-written frame follows them
		reopen    int  // extra clean reopen cycles
		wantTotal int
	}{
		{name: "nothing applied", logged: 50, wantTotal: 50},
		{name: "part applied", logged: 50, applied: 20, wantTotal: 50},
		{name: "all applied", logged: 50, applied: 50, wantTotal: 50},
		{name: "torn tail", logged: 30, torn: true, wantTotal: 30},
		{name: "reopened twice", logged: 40, applied: 10, reopen: 2, wantTotal: 40},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openTestLedger(t, dir)
			recs := walRecords(tc.logged, "f")
			if err := l.wal.append(recs[:tc.applied], true); err != nil {
				t.Fatal(err)
			}
			l.pending, l.pendingEnd = append(l.pending, recs[:tc.applied]...), l.wal.size
			if err := l.apply(); err != nil {
				t.Fatal(err)
			}
			if err := l.wal.append(recs[tc.applied:], true); err != nil {
				t.Fatal(err)
			}
			if tc.torn {
				f, err := os.OpenFile(filepath.Join(dir, "ledger.wal"), os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					t.Fatal(err)
				}
				f.Write([]byte{0, 0, 1, 0, 9, 9, 9, 9, '{', '"'}) // a frame header promising 256 bytes, and two
				f.Close()
			}
			crash(t, l)
			for range 1 + tc.reopen {
				l = openTestLedger(t, dir)
				if n, req := ledgerCounts(t, l, "f"); n != tc.wantTotal || req != int64(tc.wantTotal) {
					t.Fatalf("after reopen: %d records, %d requests in the hourly sums; want %d", n, req, tc.wantTotal)
				}
				crash(t, l)
			}
			// A torn tail is overwritten by the next append, which then reads back whole.
			l = openTestLedger(t, dir)
			more := walRecords(5, "f")
			if err := l.wal.append(more, true); err != nil {
				t.Fatal(err)
			}
			crash(t, l)
			l = openTestLedger(t, dir)
			defer crash(t, l)
			if n, _ := ledgerCounts(t, l, "f"); n != tc.wantTotal+5 {
				t.Fatalf("after one more append: %d records, want %d", n, tc.wantTotal+5)
			}
		})
	}
}

func TestLedgerLogEmptiedWhenLarge(t *testing.T) {
	dir := t.TempDir()
	l := openTestLedger(t, dir)
	total := 0
	for l.wal.size < walMaxSize {
		recs := walRecords(1000, "big")
		if err := l.wal.append(recs, false); err != nil {
			t.Fatal(err)
		}
		l.pending, l.pendingEnd = append(l.pending, recs...), l.wal.size
		total += len(recs)
	}
	if err := l.apply(); err != nil {
		t.Fatal(err)
	}
	if l.wal.size != 0 {
		t.Fatalf("log not emptied: %d bytes", l.wal.size)
	}
	if st, err := os.Stat(filepath.Join(dir, "ledger.wal")); err != nil || st.Size() != 0 {
		t.Fatalf("log file: %v %v", st, err)
	}
	crash(t, l)
	l = openTestLedger(t, dir)
	defer crash(t, l)
	if n, req := ledgerCounts(t, l, "big"); n != total || req != int64(total) {
		t.Fatalf("%d records, %d requests; want %d", n, req, total)
	}
}

func TestDecodeWALFrameRefusesDamage(t *testing.T) {
	w := &ledgerWAL{}
	good := func() []byte {
		dir := t.TempDir()
		var err error
		if w, err = openWAL(filepath.Join(dir, "l.wal")); err != nil {
			t.Fatal(err)
		}
		defer w.close()
		if err := w.append(walRecords(1, "f"), false); err != nil {
			t.Fatal(err)
		}
		return append([]byte(nil), w.buf...)
	}()
	if _, n, err := decodeWALFrame(good); err != nil || n != len(good) {
		t.Fatalf("good frame: %d %v", n, err)
	}
	for name, mangle := range map[string]func([]byte) []byte{
		"short header":  func(b []byte) []byte { return b[:5] },
		"short payload": func(b []byte) []byte { return b[:len(b)-1] },
		"zero length":   func(b []byte) []byte { b[0], b[1], b[2], b[3] = 0, 0, 0, 0; return b },
		"huge length":   func(b []byte) []byte { b[0] = 0x7f; return b },
		"bad checksum":  func(b []byte) []byte { b[5] ^= 0xff; return b },
		"flipped byte":  func(b []byte) []byte { b[len(b)-3] ^= 0x01; return b },
	} {
		if _, _, err := decodeWALFrame(mangle(append([]byte(nil), good...))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// Writers racing a Close: every write that returned nil is in the ledger
// when it is opened again; the others got errLedgerClosed.
func TestLedgerCloseUnderWriters(t *testing.T) {
	dir := t.TempDir()
	s, err := New(WithDataDir(dir), WithStartGrace(0))
	if err != nil {
		t.Fatal(err)
	}
	var ok atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				err := s.ledger.write(walRecords(1, "c")[0])
				if err != nil {
					if !errors.Is(err, errLedgerClosed) {
						t.Errorf("write: %v", err)
					}
					return
				}
				ok.Add(1)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	l := openTestLedger(t, dir)
	defer crash(t, l)
	if n, req := ledgerCounts(t, l, "c"); int64(n) != ok.Load() || req != ok.Load() {
		t.Fatalf("%d records, %d requests; %d writes acknowledged", n, req, ok.Load())
	}
	t.Logf("%d writes acknowledged before the close", ok.Load())
}
