package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
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
// returns. It leaves async_queue only when a delivery succeeded, or when
// its last attempt failed, in the same transaction that adds it to
// async_dead. An event in flight when the scheduler dies is still in
// async_queue and is delivered again on the next start: delivery is at
// least once.
//
// Delivery goes through the same admission, placement and forwarding as a
// synchronous invocation (Scheduler.invoke). A failed attempt — a function
// error, a platform error, a throttle (429 at max_instances) — is retried
// after backoff, 2^(n-1) × the base backoff (1s, 2s, …) until the
// function's max_retries (default 2) are spent.
var (
	bucketAsyncQueue  = []byte("async_queue")
	bucketAsyncDead   = []byte("async_dead")
	bucketAsyncConfig = []byte("async_config")
)

// Async defaults and bounds.
const (
	DefaultAsyncWorkers    = 4
	DefaultAsyncBackoff    = time.Second
	DefaultAsyncMaxRetries = 2
	MaxAsyncRetries        = 10
	// asyncDrain is how long Close lets deliveries in flight finish.
	asyncDrain = 5 * time.Second
	// maxDeadLetters bounds the dead-letter list; the oldest go first.
	maxDeadLetters = 10000
)

// Event sources.
const (
	sourceSync     = "sync"
	sourceEvent    = "event"
	sourceSchedule = "schedule"
)

// asyncEvent is one queued asynchronous invocation.
type asyncEvent struct {
	ID         string             `json:"id"`
	Function   string             `json:"function"`
	Version    int                `json:"version"`
	Payload    json.RawMessage    `json:"payload,omitempty"`
	EnqueuedAt time.Time          `json:"enqueued_at"`
	Source     string             `json:"source,omitempty"` // "event", "schedule"
	Attempts   []api.AsyncAttempt `json:"attempts,omitempty"`
	NextAt     time.Time          `json:"next_at"`
}

// backgroundConfig holds the options of the background loops.
type backgroundConfig struct {
	asyncWorkers int
	asyncBackoff time.Duration
	cronTick     time.Duration
	prices       *api.Prices
	retention    time.Duration
	warmthFlush  time.Duration
}

// WithAsyncWorkers sets how many async events are delivered at once (default 4).
func WithAsyncWorkers(n int) Option { return func(s *Scheduler) { s.bgCfg.asyncWorkers = n } }

// WithAsyncBackoff sets the base retry backoff of async events (default 1s;
// attempt n waits 2^(n-1) × base).
func WithAsyncBackoff(d time.Duration) Option { return func(s *Scheduler) { s.bgCfg.asyncBackoff = d } }

// startBackground opens the ledger and starts the async, cron and ledger
// loops. Called by New.
func (s *Scheduler) startBackground() error {
	c := &s.bgCfg
	if c.asyncWorkers <= 0 {
		c.asyncWorkers = DefaultAsyncWorkers
	}
	if c.asyncBackoff <= 0 {
		c.asyncBackoff = DefaultAsyncBackoff
	}
	if c.cronTick <= 0 {
		c.cronTick = time.Second
	}
	if c.retention <= 0 {
		c.retention = DefaultLedgerRetention
	}
	if c.warmthFlush <= 0 {
		c.warmthFlush = 10 * time.Second
	}
	if c.prices == nil {
		p, err := loadPrices(s.dataDir)
		if err != nil {
			return err
		}
		c.prices = &p
	}
	err := s.reg.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketAsyncQueue, bucketAsyncDead, bucketAsyncConfig, bucketSchedules} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("async buckets: %w", err)
	}
	l, err := s.openLedger()
	if err != nil {
		return err
	}
	s.ledger = l
	go s.ledgerLoop()
	s.async = newAsyncQueue(c.asyncWorkers)
	go s.asyncLoop()
	s.cron = &cronLoop{stop: make(chan struct{}), done: make(chan struct{})}
	go s.cronRun()
	return nil
}

// stopBackground stops taking events, gives deliveries in flight a few
// seconds, and closes the ledger. Pending events stay in bbolt.
func (s *Scheduler) stopBackground() {
	if s.async == nil {
		return
	}
	close(s.cron.stop)
	<-s.cron.done
	s.async.shutdown(asyncDrain)
	s.ledgerClose()
}

// asyncQueue is the in-memory side of the delivery loop.
type asyncQueue struct {
	workers int
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu       sync.Mutex
	inflight map[uint64]bool
}

func newAsyncQueue(workers int) *asyncQueue {
	ctx, cancel := context.WithCancel(context.Background())
	return &asyncQueue{
		workers: workers, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		ctx: ctx, cancel: cancel, inflight: map[uint64]bool{},
	}
}

func (q *asyncQueue) nudge() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// shutdown stops the dispatcher, waits up to drain for deliveries, then
// cancels the rest (their events stay queued, with no attempt recorded).
func (q *asyncQueue) shutdown(drain time.Duration) {
	close(q.stop)
	<-q.done
	finished := make(chan struct{})
	go func() { q.wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(drain):
		q.cancel()
		<-finished
	}
	q.cancel()
}

// enqueue stores an asynchronous invocation of fn (that version) with
// payload durably and returns its event id. The delivery loop invokes it.
func (s *Scheduler) enqueue(fn *api.Function, payload []byte) (eventID string, err error) {
	if fn == nil {
		return "", api.Invalid("function", "no function")
	}
	if len(payload) > api.MaxAsyncPayload {
		return "", fmt.Errorf("event payload of %d bytes is over %d bytes: %w", len(payload), api.MaxAsyncPayload, api.ErrTooLarge)
	}
	if len(bytes.TrimSpace(payload)) > 0 && !json.Valid(payload) {
		return "", api.Invalid("payload", "the request body is not valid JSON (%d bytes)", len(payload))
	}
	ev := s.newEvent(fn, payload, sourceEvent)
	err = s.reg.db.Update(func(tx *bolt.Tx) error { return putEvent(tx, ev) })
	if err != nil {
		return "", fmt.Errorf("enqueue event for %q: %w", fn.Name, err)
	}
	s.log.Debug("event queued", "function", fn.Name, "version", fn.Version, "event_id", ev.ID)
	s.wakeAsync()
	return ev.ID, nil
}

func (s *Scheduler) newEvent(fn *api.Function, payload []byte, source string) *asyncEvent {
	now := s.now().UTC()
	ev := &asyncEvent{ID: s.newRequestID(), Function: fn.Name, Version: fn.Version, EnqueuedAt: now, NextAt: now, Source: source}
	if len(bytes.TrimSpace(payload)) > 0 {
		ev.Payload = append(json.RawMessage(nil), payload...)
	}
	return ev
}

// putEvent adds ev to the queue inside tx.
func putEvent(tx *bolt.Tx, ev *asyncEvent) error {
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	b, err := tx.CreateBucketIfNotExists(bucketAsyncQueue)
	if err != nil {
		return err
	}
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	return b.Put(u64(seq), data)
}

// wakeAsync nudges the delivery loop (non-blocking).
func (s *Scheduler) wakeAsync() {
	if s.async != nil {
		s.async.nudge()
	}
}

// handleEnqueue answers an Event invocation: 202 with the event id.
func (s *Scheduler) handleEnqueue(w http.ResponseWriter, fn *api.Function, payload []byte) {
	id, err := s.enqueue(fn, payload)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	w.Header().Set(api.HeaderEventID, id)
	w.Header().Set(api.HeaderRequestID, id)
	api.WriteJSON(w, http.StatusAccepted, api.AsyncAccepted{EventID: id})
}

// asyncLoop hands due events to delivery goroutines until stopped.
func (s *Scheduler) asyncLoop() {
	q := s.async
	defer close(q.done)
	for {
		wait := s.dispatchDue()
		t := time.NewTimer(wait)
		select {
		case <-q.stop:
			t.Stop()
			return
		case <-q.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// dispatchDue starts deliveries of due events on free workers and returns
// how long to sleep (at most a second: the clock may be a fake one).
func (s *Scheduler) dispatchDue() time.Duration {
	q := s.async
	q.mu.Lock()
	free := q.workers - len(q.inflight)
	q.mu.Unlock()
	wait := time.Second
	if free <= 0 {
		return wait
	}
	now := s.now()
	type due struct {
		key uint64
		ev  asyncEvent
	}
	var picked []due
	err := s.reg.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAsyncQueue)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.First(); k != nil && len(picked) < free; k, v = c.Next() {
			key := be64(k)
			q.mu.Lock()
			busy := q.inflight[key]
			q.mu.Unlock()
			if busy {
				continue
			}
			var ev asyncEvent
			if err := json.Unmarshal(v, &ev); err != nil {
				s.log.Error("undecodable async event; skipped", "key", key, "err", err.Error())
				continue
			}
			if ev.NextAt.After(now) {
				wait = min(wait, ev.NextAt.Sub(now))
				continue
			}
			picked = append(picked, due{key, ev})
		}
		return nil
	})
	if err != nil {
		s.log.Error("read async queue", "err", err.Error())
		return wait
	}
	for _, d := range picked {
		q.mu.Lock()
		q.inflight[d.key] = true
		q.mu.Unlock()
		q.wg.Add(1)
		go func() {
			defer q.wg.Done()
			// The queue was read before this event was marked in flight: a
			// delivery of it that ended since then may have removed it or
			// recorded an attempt (and un-marked it), so read it again.
			// Without this a delivered event was now and then delivered twice.
			if ev, ok := s.dueEvent(d.key, now); ok {
				s.deliver(d.key, ev)
			}
			q.mu.Lock()
			delete(q.inflight, d.key)
			q.mu.Unlock()
			q.nudge()
		}()
	}
	return max(wait, time.Millisecond)
}

// dueEvent reads a queued event afresh: false when it is gone or not due.
func (s *Scheduler) dueEvent(key uint64, now time.Time) (asyncEvent, bool) {
	var ev asyncEvent
	found := false
	_ = s.reg.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAsyncQueue)
		if b == nil {
			return nil
		}
		v := b.Get(u64(key))
		if v == nil || json.Unmarshal(v, &ev) != nil {
			return nil
		}
		found = !ev.NextAt.After(now)
		return nil
	})
	return ev, found
}

func be64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	var n uint64
	for _, c := range b {
		n = n<<8 | uint64(c)
	}
	return n
}

// maxCapture bounds what an async delivery keeps of an answer: enough for
// the error to explain a failed attempt.
const maxCapture = 64 << 10

// outcome describes a captured invocation: "" on success, else the error.
func (c *recorder) outcome() string {
	code := c.status
	if code == 0 {
		code = http.StatusOK
	}
	if fe := c.header.Get(api.HeaderFunctionError); fe != "" {
		var ferr api.FunctionError
		if json.Unmarshal(c.body.Bytes(), &ferr) == nil && (ferr.ErrorMessage != "" || ferr.ErrorType != "") {
			return fmt.Sprintf("function error (%s): %s: %s", fe, ferr.ErrorType, ferr.ErrorMessage)
		}
		return fmt.Sprintf("function error (%s): %s", fe, truncate(c.body.String(), 512))
	}
	if code >= 200 && code < 300 {
		return ""
	}
	var eb api.ErrorBody
	if json.Unmarshal(c.body.Bytes(), &eb) == nil && eb.Error.Message != "" {
		return fmt.Sprintf("%d %s: %s", code, eb.Error.Code, eb.Error.Message)
	}
	return fmt.Sprintf("%d %s: %s", code, http.StatusText(code), truncate(c.body.String(), 512))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

type ctxKey int

const sourceKey ctxKey = 0

// withSource marks ctx with the invocation's source for the ledger.
func withSource(ctx context.Context, src string) context.Context {
	return context.WithValue(ctx, sourceKey, src)
}

func sourceOf(ctx context.Context) string {
	if v, ok := ctx.Value(sourceKey).(string); ok {
		return v
	}
	return sourceSync
}

// deliver makes one attempt at an event and records its outcome.
func (s *Scheduler) deliver(key uint64, ev asyncEvent) {
	q := s.async
	reqID := s.newRequestID()
	log := s.log.With("function", ev.Function, "version", ev.Version, "event_id", ev.ID, "request_id", reqID, "attempt", len(ev.Attempts)+1)
	var failure, agent string
	fn, err := s.reg.version(ev.Function, ev.Version)
	if err != nil {
		failure = err.Error()
	} else {
		cw := newRecorder(maxCapture)
		s.invoke(cw, withSource(q.ctx, ev.Source), fn, reqID, ev.Payload)
		failure = cw.outcome()
		agent = cw.header.Get(api.HeaderAgent)
		if failure != "" && q.ctx.Err() != nil {
			// Cut short by Close: keep the event as it was for the next start.
			log.Info("delivery interrupted by shutdown; event stays queued")
			return
		}
	}
	now := s.now().UTC()
	retries := s.asyncConfig(ev.Function).MaxRetries
	var dead bool
	err = s.reg.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAsyncQueue)
		if b.Get(u64(key)) == nil {
			return nil // gone already
		}
		if failure == "" {
			return b.Delete(u64(key))
		}
		ev.Attempts = append(ev.Attempts, api.AsyncAttempt{At: now, RequestID: reqID, Agent: agent, Error: failure})
		if len(ev.Attempts) <= retries {
			ev.NextAt = now.Add(s.bgCfg.asyncBackoff << (len(ev.Attempts) - 1))
			data, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			return b.Put(u64(key), data)
		}
		dead = true
		if err := b.Delete(u64(key)); err != nil {
			return err
		}
		return putDead(tx, api.DeadLetter{
			EventID: ev.ID, Function: ev.Function, Version: ev.Version, Payload: ev.Payload,
			EnqueuedAt: ev.EnqueuedAt, DeadAt: now, Source: ev.Source, Attempts: ev.Attempts,
		})
	})
	switch {
	case err != nil:
		log.Error("record async outcome", "err", err.Error())
	case failure == "":
		log.Debug("event delivered")
	case dead:
		log.Warn("event dead-lettered", "attempts", len(ev.Attempts), "err", failure)
		s.event(api.EventInvokeFailed, ev.Function, agent, "event %s dead-lettered after %d attempts: %s", ev.ID, len(ev.Attempts), failure)
	default:
		log.Info("event delivery failed; will retry", "err", failure, "next_at", ev.NextAt)
	}
}

func putDead(tx *bolt.Tx, dl api.DeadLetter) error {
	b, err := tx.CreateBucketIfNotExists(bucketAsyncDead)
	if err != nil {
		return err
	}
	data, err := json.Marshal(dl)
	if err != nil {
		return err
	}
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	if err := b.Put(u64(seq), data); err != nil {
		return err
	}
	// Bound the list: drop the oldest.
	for n := b.Stats().KeyN; n > maxDeadLetters; n-- {
		k, _ := b.Cursor().First()
		if k == nil {
			break
		}
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// asyncConfig reads a function's async settings (defaults when unset).
func (s *Scheduler) asyncConfig(name string) api.AsyncConfig {
	cfg := api.AsyncConfig{MaxRetries: DefaultAsyncMaxRetries}
	_ = s.reg.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketAsyncConfig); b != nil {
			if v := b.Get([]byte(name)); v != nil {
				return json.Unmarshal(v, &cfg)
			}
		}
		return nil
	})
	return cfg
}

// deadLetters lists dead-lettered events, oldest first; function "" is all.
func (s *Scheduler) deadLetters(function string) ([]api.DeadLetter, error) {
	out := []api.DeadLetter{}
	err := s.reg.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAsyncDead)
		if b == nil {
			return nil
		}
		return b.ForEach(func(_, v []byte) error {
			var dl api.DeadLetter
			if err := json.Unmarshal(v, &dl); err != nil {
				return err
			}
			if function == "" || dl.Function == function {
				out = append(out, dl)
			}
			return nil
		})
	})
	return out, err
}

// pendingEvents counts queued events per function.
func (s *Scheduler) pendingEvents() (map[string]int, error) {
	out := map[string]int{}
	err := s.reg.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAsyncQueue)
		if b == nil {
			return nil
		}
		return b.ForEach(func(_, v []byte) error {
			var ev struct {
				Function string `json:"function"`
			}
			if json.Unmarshal(v, &ev) == nil {
				out[ev.Function]++
			}
			return nil
		})
	})
	return out, err
}

func (s *Scheduler) asyncStatus(name string) (*api.AsyncStatus, error) {
	pending, err := s.pendingEvents()
	if err != nil {
		return nil, err
	}
	dead, err := s.deadLetters(name)
	if err != nil {
		return nil, err
	}
	return &api.AsyncStatus{Function: name, AsyncConfig: s.asyncConfig(name), Pending: pending[name], DeadLetters: len(dead)}, nil
}

func (s *Scheduler) handleGetAsync(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, err := s.reg.latest(name); err != nil {
		api.WriteError(w, err)
		return
	}
	st, err := s.asyncStatus(name)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, st)
}

func (s *Scheduler) handlePutAsync(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var cfg api.AsyncConfig
	if err := decodeJSON(w, r, 4<<10, &cfg); err != nil {
		api.WriteError(w, err)
		return
	}
	if cfg.MaxRetries < 0 || cfg.MaxRetries > MaxAsyncRetries {
		api.WriteError(w, api.Invalid("max_retries", "%d: want 0–%d", cfg.MaxRetries, MaxAsyncRetries))
		return
	}
	data, _ := json.Marshal(cfg)
	err := s.reg.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketFunctions).Bucket([]byte(name)) == nil {
			return notFound(name)
		}
		return tx.Bucket(bucketAsyncConfig).Put([]byte(name), data)
	})
	if err != nil {
		api.WriteError(w, err)
		return
	}
	s.log.Info("async settings changed", "function", name, "max_retries", cfg.MaxRetries)
	st, err := s.asyncStatus(name)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, st)
}

func (s *Scheduler) handleDeadLetters(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if name == "" {
		name = r.URL.Query().Get("function")
	}
	out, err := s.deadLetters(name)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].DeadAt.Before(out[j].DeadAt) })
	api.WriteJSON(w, http.StatusOK, out)
}

// dropAsync forgets a deleted function's async settings and schedule.
// Its queued events fail (function not found) into the dead-letter list.
func (s *Scheduler) dropAsync(name string) {
	err := s.reg.db.Update(func(tx *bolt.Tx) error {
		for _, bn := range [][]byte{bucketAsyncConfig, bucketSchedules} {
			if b := tx.Bucket(bn); b != nil {
				if err := b.Delete([]byte(name)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, bolt.ErrDatabaseNotOpen) {
		s.log.Warn("drop async settings", "function", name, "err", err.Error())
	}
}
