package scheduler

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/amberfn/amber/api"
)

// Async invocations live in bbolt, in the registry's database:
//
//	async_queue/<uint64 BE seq>   JSON asyncEvent: pending (or in flight)
//	async_dead/<uint64 BE seq>    JSON api.DeadLetter: out of retries
//	async_config/<name>           JSON api.AsyncConfig: per-function retries
//
// An event is written (and fsync'd by bbolt's commit) before enqueue
// returns; it is deleted only after a delivery finished (success) or moved to
// async_dead in the same transaction. An event in flight when the scheduler
// dies is still in async_queue and is delivered again on the next start:
// delivery is at least once.
var (
	bucketAsyncQueue  = []byte("async_queue")
	bucketAsyncDead   = []byte("async_dead")
	bucketAsyncConfig = []byte("async_config")
)

// asyncEvent is one queued asynchronous invocation.
type asyncEvent struct {
	ID         string             `json:"id"`
	Function   string             `json:"function"`
	Version    int                `json:"version"`
	Payload    json.RawMessage    `json:"payload,omitempty"`
	EnqueuedAt time.Time          `json:"enqueued_at"`
	Source     string             `json:"source,omitempty"` // "api", "lambda", "schedule"
	Attempts   []api.AsyncAttempt `json:"attempts,omitempty"`
	NextAt     time.Time          `json:"next_at"`
}

// enqueue stores an asynchronous invocation of fn (that version) with
// payload durably and returns its event id. The worker loop delivers it.
func (s *Scheduler) enqueue(fn *api.Function, payload []byte) (eventID string, err error) {
	return s.enqueueFrom(fn, payload, "api")
}

func (s *Scheduler) enqueueFrom(fn *api.Function, payload []byte, source string) (string, error) {
	if fn == nil {
		return "", api.Invalid("function", "no function")
	}
	if len(payload) > api.MaxAsyncPayload {
		return "", fmt.Errorf("event payload of %d bytes is over %d bytes: %w", len(payload), api.MaxAsyncPayload, api.ErrTooLarge)
	}
	now := s.now().UTC()
	ev := asyncEvent{ID: s.newRequestID(), Function: fn.Name, Version: fn.Version, EnqueuedAt: now, NextAt: now, Source: source}
	if len(payload) > 0 {
		if !json.Valid(payload) {
			return "", api.Invalid("payload", "the request body is not valid JSON (%d bytes)", len(payload))
		}
		ev.Payload = append(json.RawMessage(nil), payload...)
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return "", err
	}
	err = s.reg.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketAsyncQueue)
		if err != nil {
			return err
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		return b.Put(u64(seq), data)
	})
	if err != nil {
		return "", fmt.Errorf("enqueue event for %q: %w", fn.Name, err)
	}
	s.wakeAsync()
	return ev.ID, nil
}

// wakeAsync nudges the delivery loop (non-blocking).
func (s *Scheduler) wakeAsync() {
	if s.asyncWake == nil {
		return
	}
	select {
	case s.asyncWake <- struct{}{}:
	default:
	}
}
