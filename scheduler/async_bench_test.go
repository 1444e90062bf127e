package scheduler

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/amberfn/amber/api"
)

// BenchmarkAsyncEnqueue measures async events accepted per second: on
// JetStream (an embedded node, fsync on every write) directly and over
// HTTP, next to the bbolt queue it replaced (the old enqueue's
// transaction, reproduced here), each one at a time and from many
// goroutines. Delivery is stopped so that only acceptance is measured.
//
//	go test -run '^$' -bench AsyncEnqueue -benchtime 3s ./scheduler/
func BenchmarkAsyncEnqueue(b *testing.B) {
	payload := []byte(`{"order":12345,"items":["a","b","c"],"note":"` + strings.Repeat("x", 200) + `"}`)
	newJS := func(b *testing.B) (*Scheduler, *api.Function) {
		s, err := New(WithDataDir(b.TempDir()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		s.async.stopFetch()
		s.async.fetchers.Wait()
		fn, _, err := s.reg.put(api.FunctionSpec{Name: "f", Image: "sha256:" + strings.Repeat("a", 64), MemoryMB: 128})
		if err != nil {
			b.Fatal(err)
		}
		return s, fn
	}
	report := func(b *testing.B) {
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	}
	b.Run("jetstream", func(b *testing.B) {
		s, fn := newJS(b)
		b.ResetTimer()
		for range b.N {
			if _, err := s.enqueue(fn, payload); err != nil {
				b.Fatal(err)
			}
		}
		report(b)
	})
	b.Run("jetstream-parallel", func(b *testing.B) {
		s, fn := newJS(b)
		b.SetParallelism(16)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.enqueue(fn, payload); err != nil {
					b.Error(err)
					return
				}
			}
		})
		report(b)
	})
	b.Run("jetstream-http-parallel", func(b *testing.B) {
		s, _ := newJS(b)
		srv := httptest.NewServer(s.Handler())
		defer srv.Close()
		b.SetParallelism(16)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req, _ := http.NewRequest("POST", srv.URL+"/v1/functions/f/invoke", bytes.NewReader(payload))
				req.Header.Set(api.HeaderInvocationType, "Event")
				resp, err := srv.Client().Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
		report(b)
	})
	newBolt := func(b *testing.B) (*bolt.DB, *Scheduler, *api.Function) {
		db, err := bolt.Open(filepath.Join(b.TempDir(), "amber.db"), 0o600, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { db.Close() })
		s := &Scheduler{now: newFakeClock().Now, newRequestID: newRequestID}
		return db, s, &api.Function{FunctionSpec: api.FunctionSpec{Name: "f"}, Version: 1}
	}
	// The bbolt enqueue as it was: validate, then one transaction (fsync'd
	// by bbolt's commit) adding the event under the bucket's next sequence.
	boltEnqueue := func(db *bolt.DB, s *Scheduler, fn *api.Function) error {
		if !json.Valid(payload) {
			b.Fatal("invalid payload")
		}
		ev := s.newEvent(fn, payload, sourceEvent)
		return db.Update(func(tx *bolt.Tx) error {
			data, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			bk, err := tx.CreateBucketIfNotExists(bucketAsyncQueue)
			if err != nil {
				return err
			}
			seq, err := bk.NextSequence()
			if err != nil {
				return err
			}
			return bk.Put(u64(seq), data)
		})
	}
	b.Run("bbolt", func(b *testing.B) {
		db, s, fn := newBolt(b)
		b.ResetTimer()
		for range b.N {
			if err := boltEnqueue(db, s, fn); err != nil {
				b.Fatal(err)
			}
		}
		report(b)
	})
	b.Run("bbolt-parallel", func(b *testing.B) {
		db, s, fn := newBolt(b)
		b.SetParallelism(16)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := boltEnqueue(db, s, fn); err != nil {
					b.Error(err)
					return
				}
			}
		})
		report(b)
	})
}
