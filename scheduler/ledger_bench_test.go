package scheduler

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// BenchmarkLedgerWrite measures ledger records acknowledged per second
// (durable before write returns) with 16 concurrent writers, the way
// concurrent invocations write their records.
//
//	go test -run '^$' -bench BenchmarkLedgerWrite -benchtime 20000x ./scheduler/
func BenchmarkLedgerWrite(b *testing.B) {
	const writers = 16
	s, err := New(WithDataDir(b.TempDir()), WithStartGrace(0))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rec := api.LedgerRecord{Time: time.Now().UTC(), RequestID: "bench", Function: "bench", Version: 1, Agent: "a1",
		Source: sourceSync, StartKind: api.StartWarm, DurationUs: 1500, BilledMs: 2, MemoryMB: 128, GBSeconds: 0.002 * 0.125}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := s.ledger.write(rec); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}
