package engine

import (
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestConcurrentSetup: three schedulers starting together create the same
// bucket and work-queue stream at once, and all three get them.
func TestConcurrentSetup(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test: skipped in -short")
	}
	es, _ := startCluster(t, 3)
	defer func() {
		for _, e := range es {
			e.Close()
		}
	}()
	var wg sync.WaitGroup
	for i, e := range es {
		wg.Go(func() {
			start := time.Now()
			if _, err := e.KeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "REG"}); err != nil {
				t.Error(err)
			}
			t.Logf("%d kv %s", i, time.Since(start))
			start = time.Now()
			if _, err := e.Stream(t.Context(), jetstream.StreamConfig{Name: "WQ", Subjects: []string{"wq.>"}, Retention: jetstream.WorkQueuePolicy, Duplicates: 10 * time.Minute}); err != nil {
				t.Error(err)
			}
			t.Logf("%d wq %s", i, time.Since(start))
		})
	}
	wg.Wait()
}
