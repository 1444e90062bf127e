package scheduler

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/scheduler/internal/engine"
)

// Async invocations live in JetStream, shared by every scheduler:
//
//	AMBER_ASYNC            work-queue stream, subject amber.async.<function>:
//	                       one JSON asyncEvent per pending (or in-flight) event
//	AMBER_ASYNC_ATTEMPTS   key-value bucket, key <event id>: the failed
//	                       attempts of an event that is being retried
//	AMBER_DEAD             limits stream, subject amber.dead.<function>: one
//	                       JSON api.DeadLetter per event out of retries (the
//	                       newest maxDeadLetters; the oldest go first)
//	AMBER_IMPORTS          key-value bucket, key "async": the one-time import
//	                       of the bbolt queue (async_queue, async_dead in
//	                       DATA/amber.db) is done
//
// A function's async settings (retries) live in its head key (registry.go).
//
// enqueue returns (and the front door answers 202) only once JetStream has
// acknowledged the event: an embedded node has fsync'd it, a cluster holds
// it on a quorum. When JetStream cannot take it the caller gets 503 naming
// the cause (ErrStoreUnavailable), never a 202.
//
// Every scheduler runs workers that pull from one durable consumer
// (amber-async), so each event is with one scheduler at a time. A worker
// sends in-progress acknowledgements while the invocation runs (the
// consumer's AckWait is short; a function may run for minutes) and
// acknowledges the event once it is delivered. Delivery goes through the
// same admission, placement and forwarding as a synchronous invocation
// (Scheduler.invoke). A failed attempt — a function error, a platform
// error, a throttle (429 at max_instances) — is appended to the event's
// attempt log and the event handed back with a delay (NakWithDelay) of
// 2^(n-1) × the base backoff (1s, 2s, …) on JetStream's clock; when the
// function's max_retries (default 2) are spent, the event goes to
// AMBER_DEAD with every attempt, and is terminated in the queue.
//
// Delivery is at least once. An event whose scheduler died during a
// delivery (or before its acknowledgement reached JetStream) is delivered
// again by any scheduler after AckWait, and such a delivery records no
// attempt. A delivery cut short by a graceful stop is handed back at once
// and records no attempt either. So that a function that kills its
// scheduler cannot be delivered for ever, an event delivered more than
// max_retries+1+asyncLostDeliveries times in all is dead-lettered.
var (
	bucketAsyncQueue  = []byte("async_queue") // read once by importAsyncBolt
	bucketAsyncDead   = []byte("async_dead")  // read once by importAsyncBolt
	bucketAsyncConfig = []byte("async_config")
)

// JetStream names of the async queue.
const (
	asyncStreamName    = "AMBER_ASYNC"
	deadStreamName     = "AMBER_DEAD"
	attemptsBucketName = "AMBER_ASYNC_ATTEMPTS"
	importsBucketName  = "AMBER_IMPORTS"
	asyncConsumerName  = "amber-async"
	asyncSubjectPrefix = "amber.async."
	deadSubjectPrefix  = "amber.dead."
	importKeyAsync     = "async"
)

// Async defaults and bounds.
const (
	DefaultAsyncWorkers    = 4
	DefaultAsyncBackoff    = time.Second
	DefaultAsyncMaxRetries = 2
	MaxAsyncRetries        = 10
	// asyncDrain is how long Close lets deliveries in flight finish.
	asyncDrain = 5 * time.Second
	// maxDeadLetters bounds the dead-letter stream; the oldest go first.
	maxDeadLetters = 10000
	// asyncDuplicates is the queue's duplicate window: a cron tick
	// published again (by another scheduler, or by the next pass after a
	// lost schedule update) within it is dropped. It covers the cron tick
	// (1s) plus clock skew between schedulers plus a stalled pass, with a
	// wide margin; it costs memory only for messages that carry an id
	// (cron ticks, imports, dead letters), not for every enqueue.
	asyncDuplicates = 10 * time.Minute
	// defaultAsyncAckWait is how long JetStream waits for a word from the
	// delivering scheduler before handing the event to another; workers
	// send in-progress every third of it.
	defaultAsyncAckWait = 30 * time.Second
	// asyncMaxAckPending bounds events handed out and not acknowledged,
	// over every scheduler; events in backoff count.
	asyncMaxAckPending = 20000
	// asyncLostDeliveries is how many deliveries with no recorded outcome
	// an event may have on top of max_retries+1.
	asyncLostDeliveries = 3
	// asyncOpTimeout bounds one JetStream request (publish, ack, KV).
	asyncOpTimeout = 5 * time.Second
	// asyncFetchWait is how long a worker's pull request waits for an event.
	asyncFetchWait = 5 * time.Second
	// attemptsMaxAge drops the attempt log of an event that was never
	// finished (its function was deleted and its queue purged).
	attemptsMaxAge = 7 * 24 * time.Hour
)

// Event sources.
const (
	sourceSync     = "sync"
	sourceEvent    = "event"
	sourceSchedule = "schedule"
)

// asyncEvent is one queued asynchronous invocation: the body of an
// AMBER_ASYNC message (and of an async_queue record in the old bbolt
// layout). Attempts holds failures before the event came to JetStream
// (imported); later failures are in the attempt log.
type asyncEvent struct {
	ID         string             `json:"id"`
	Function   string             `json:"function"`
	Version    int                `json:"version"`
	Payload    json.RawMessage    `json:"payload,omitempty"`
	EnqueuedAt time.Time          `json:"enqueued_at"`
	Source     string             `json:"source,omitempty"` // "event", "schedule"
	Attempts   []api.AsyncAttempt `json:"attempts,omitempty"`
}

// backgroundConfig holds the options of the background loops.
type backgroundConfig struct {
	asyncWorkers int
	asyncBackoff time.Duration
	asyncAckWait time.Duration
	cronTick     time.Duration
	prices       *api.Prices
	retention    time.Duration
	warmthFlush  time.Duration
}

// WithAsyncWorkers sets how many async events this scheduler delivers at
// once (default 4).
func WithAsyncWorkers(n int) Option { return func(s *Scheduler) { s.bgCfg.asyncWorkers = n } }

// WithAsyncBackoff sets the base retry backoff of async events (default 1s;
// attempt n waits 2^(n-1) × base).
func WithAsyncBackoff(d time.Duration) Option { return func(s *Scheduler) { s.bgCfg.asyncBackoff = d } }

// withAsyncAckWait sets the async consumer's AckWait (tests: how soon an
// event of a dead scheduler is delivered again).
func withAsyncAckWait(d time.Duration) Option { return func(s *Scheduler) { s.bgCfg.asyncAckWait = d } }

// startBackground opens the async queue and the ledger and starts the
// async, cron and ledger loops. Called by New.
func (s *Scheduler) startBackground() error {
	c := &s.bgCfg
	if c.asyncWorkers <= 0 {
		c.asyncWorkers = DefaultAsyncWorkers
	}
	if c.asyncBackoff <= 0 {
		c.asyncBackoff = DefaultAsyncBackoff
	}
	if c.asyncAckWait <= 0 {
		c.asyncAckWait = defaultAsyncAckWait
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
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	q, err := openAsyncQueue(ctx, s.eng, c.asyncWorkers, c.asyncAckWait)
	if err != nil {
		return err
	}
	s.async = q
	if err := s.importAsyncFile(ctx, boltFile(s.dataDir)); err != nil {
		return fmt.Errorf("import the async queue from %s: %w", boltFile(s.dataDir), err)
	}
	l, err := s.openLedger()
	if err != nil {
		return err
	}
	s.ledger = l
	go s.ledgerLoop()
	for range q.workers {
		q.fetchers.Add(1)
		go s.asyncWorker()
	}
	s.cron = &cronLoop{stop: make(chan struct{}), done: make(chan struct{})}
	go s.cronRun()
	return nil
}

// stopBackground stops cron and taking events, gives deliveries in flight
// a few seconds, and closes the ledger. Pending events stay in JetStream.
func (s *Scheduler) stopBackground() {
	if s.async == nil || s.cron == nil {
		return
	}
	close(s.cron.stop)
	<-s.cron.done
	s.async.shutdown(asyncDrain)
	s.ledgerClose()
}

// asyncQueue is this scheduler's handle on the JetStream queue and its
// delivery workers.
type asyncQueue struct {
	js       jetstream.JetStream
	stream   jetstream.Stream
	dead     jetstream.Stream
	cons     jetstream.Consumer
	attempts jetstream.KeyValue
	imports  jetstream.KeyValue
	workers  int
	ackWait  time.Duration

	// fetchCtx stops the workers' pull requests; ctx cuts deliveries short.
	fetchCtx  context.Context
	stopFetch context.CancelFunc
	ctx       context.Context
	cancel    context.CancelFunc
	fetchers  sync.WaitGroup // worker loops and their deliveries
}

// openAsyncQueue creates (or updates) the async streams, buckets and the
// shared consumer.
func openAsyncQueue(ctx context.Context, eng *engine.Engine, workers int, ackWait time.Duration) (*asyncQueue, error) {
	q := &asyncQueue{js: eng.JS, workers: workers, ackWait: ackWait}
	var err error
	q.stream, err = eng.Stream(ctx, jetstream.StreamConfig{
		Name:        asyncStreamName,
		Description: "amber: pending asynchronous invocations",
		Subjects:    []string{asyncSubjectPrefix + ">"},
		Retention:   jetstream.WorkQueuePolicy,
		Duplicates:  asyncDuplicates,
		MaxMsgSize:  api.MaxAsyncPayload + 64<<10,
	})
	if err != nil {
		return nil, err
	}
	q.dead, err = eng.Stream(ctx, jetstream.StreamConfig{
		Name:        deadStreamName,
		Description: "amber: asynchronous invocations out of retries",
		Subjects:    []string{deadSubjectPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		MaxMsgs:     maxDeadLetters,
		Discard:     jetstream.DiscardOld,
		Duplicates:  asyncDuplicates,
	})
	if err != nil {
		return nil, err
	}
	if q.attempts, err = eng.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: attemptsBucketName, Description: "amber: failed attempts of async events being retried", TTL: attemptsMaxAge,
	}); err != nil {
		return nil, err
	}
	if q.imports, err = eng.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: importsBucketName, Description: "amber: one-time imports from the bbolt layout, done",
	}); err != nil {
		return nil, err
	}
	q.cons, err = eng.Consumer(ctx, asyncStreamName, jetstream.ConsumerConfig{
		Durable:       asyncConsumerName,
		Description:   "amber: async deliveries, shared by every scheduler",
		FilterSubject: asyncSubjectPrefix + ">",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1, // counted per event: see deliver
		MaxAckPending: asyncMaxAckPending,
	})
	if err != nil {
		return nil, engine.Wrap(fmt.Errorf("consumer %s: %w", asyncConsumerName, err))
	}
	q.fetchCtx, q.stopFetch = context.WithCancel(context.Background())
	q.ctx, q.cancel = context.WithCancel(context.Background())
	return q, nil
}

// shutdown stops the workers' pull requests, waits up to drain for
// deliveries, then cancels the rest (they are handed back to JetStream
// with no attempt recorded).
func (q *asyncQueue) shutdown(drain time.Duration) {
	q.stopFetch()
	finished := make(chan struct{})
	go func() { q.fetchers.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(drain):
		q.cancel()
		<-finished
	}
	q.cancel()
}

func asyncSubject(function string) string { return asyncSubjectPrefix + function }
func deadSubject(function string) string  { return deadSubjectPrefix + function }

// storeError marks an error of JetStream as ErrStoreUnavailable and as
// api.ErrUnavailable, so front ends answer 503 with its message.
type storeError struct{ err error }

func (e *storeError) Error() string   { return e.err.Error() }
func (e *storeError) Unwrap() []error { return []error{e.err, api.ErrUnavailable} }

func unavailable(err error) error {
	err = engine.Wrap(err)
	if !errors.Is(err, ErrStoreUnavailable) {
		err = fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
	}
	return &storeError{err}
}

// enqueue stores an asynchronous invocation of fn (that version) with
// payload durably and returns its event id. A worker of some scheduler
// delivers it.
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
	ctx, cancel := context.WithTimeout(context.Background(), asyncOpTimeout)
	defer cancel()
	// A stream whose leader just went (a scheduler's node died) answers
	// nothing until a new one is elected, a few seconds: publish again
	// under the event's id, which the stream's duplicate window makes
	// safe, before refusing the event with 503.
	for {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		_, err := s.publishEvent(pctx, ev, "event/"+ev.ID)
		pcancel()
		if err == nil {
			break
		}
		if !errors.Is(err, ErrStoreUnavailable) || ctx.Err() != nil {
			return "", fmt.Errorf("enqueue event for %q: %w", fn.Name, err)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("enqueue event for %q: %w", fn.Name, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	s.log.Debug("event queued", "function", fn.Name, "version", fn.Version, "event_id", ev.ID)
	return ev.ID, nil
}

func (s *Scheduler) newEvent(fn *api.Function, payload []byte, source string) *asyncEvent {
	ev := &asyncEvent{ID: s.newRequestID(), Function: fn.Name, Version: fn.Version, EnqueuedAt: s.now().UTC(), Source: source}
	if len(bytes.TrimSpace(payload)) > 0 {
		ev.Payload = append(json.RawMessage(nil), payload...)
	}
	return ev
}

// publishEvent adds ev to the queue and waits for JetStream's
// acknowledgement. With a msgID, a second publish of it within the
// duplicate window is dropped: duplicate is true then.
func (s *Scheduler) publishEvent(ctx context.Context, ev *asyncEvent, msgID string) (duplicate bool, err error) {
	data, err := json.Marshal(ev)
	if err != nil {
		return false, err
	}
	opts := []jetstream.PublishOpt{jetstream.WithExpectStream(asyncStreamName)}
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	ack, err := s.async.js.Publish(ctx, asyncSubject(ev.Function), data, opts...)
	if err != nil {
		return false, unavailable(err)
	}
	return ack.Duplicate, nil
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

// asyncWorker pulls events from the shared consumer and delivers them, one
// at a time, until the queue stops fetching.
func (s *Scheduler) asyncWorker() {
	q := s.async
	defer q.fetchers.Done()
	var lastErr string
	for q.fetchCtx.Err() == nil {
		ctx, cancel := context.WithTimeout(q.fetchCtx, asyncFetchWait)
		msg, err := q.cons.Next(jetstream.FetchContext(ctx))
		expired := ctx.Err() != nil
		cancel()
		if err != nil {
			if q.fetchCtx.Err() != nil {
				return
			}
			if expired || errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages) {
				continue
			}
			if err.Error() != lastErr {
				s.log.Warn("fetch async events", "err", err.Error())
				lastErr = err.Error()
			}
			select {
			case <-q.fetchCtx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		lastErr = ""
		s.deliver(msg)
	}
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

// deliver makes one attempt at an event and records its outcome: an
// acknowledgement, or a failed attempt and then a delayed redelivery or a
// dead letter.
func (s *Scheduler) deliver(msg jetstream.Msg) {
	q := s.async
	meta, err := msg.Metadata()
	var ev asyncEvent
	if err == nil {
		err = json.Unmarshal(msg.Data(), &ev)
	}
	if err == nil && (ev.ID == "" || api.ValidateName("function", ev.Function) != nil) {
		err = fmt.Errorf("no event id or function name (id %q, function %q)", ev.ID, ev.Function)
	}
	if err != nil {
		s.log.Error("undecodable async event; dropped", "subject", msg.Subject(), "err", err.Error())
		_ = msg.TermWithReason("undecodable event")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), asyncOpTimeout)
	defer cancel()
	history := ev.Attempts
	if meta.NumDelivered > 1 {
		logged, err := q.loggedAttempts(ctx, ev.ID)
		if err != nil {
			s.log.Warn("read the attempts of an async event; will try again", "event_id", ev.ID, "err", err.Error())
			_ = msg.NakWithDelay(s.bgCfg.asyncBackoff)
			return
		}
		history = append(history, logged...)
	}
	maxAttempts := s.asyncConfig(ev.Function).MaxRetries + 1
	log := s.log.With("function", ev.Function, "version", ev.Version, "event_id", ev.ID, "attempt", len(history)+1, "delivery", meta.NumDelivered)
	switch {
	case len(history) >= maxAttempts:
		// Its last attempt failed on a scheduler that stopped before it
		// wrote the dead letter.
		s.deadLetter(ctx, msg, &ev, history, log)
		return
	case int(meta.NumDelivered) > maxAttempts+asyncLostDeliveries:
		history = append(history, api.AsyncAttempt{At: s.now().UTC(), Error: fmt.Sprintf(
			"delivered %d times, %d of them with no recorded outcome (the delivering scheduler stopped)",
			meta.NumDelivered-1, int(meta.NumDelivered)-1-(len(history)-len(ev.Attempts)))})
		s.deadLetter(ctx, msg, &ev, history, log)
		return
	}
	reqID := s.newRequestID()
	log = log.With("request_id", reqID)
	var failure, agent string
	fn, err := s.reg.version(ev.Function, ev.Version)
	if err != nil {
		failure = err.Error()
	} else {
		stop := q.keepAlive(msg)
		cw := newRecorder(maxCapture)
		s.invoke(cw, withSource(q.ctx, ev.Source), fn, reqID, ev.Payload)
		stop()
		failure = cw.outcome()
		agent = cw.header.Get(api.HeaderAgent)
		if failure != "" && q.ctx.Err() != nil {
			// Cut short by Close: hand it back as it was, to any scheduler.
			log.Info("delivery interrupted by shutdown; event handed back")
			_ = msg.Nak()
			return
		}
	}
	if failure == "" {
		if err := msg.DoubleAck(ctx); err != nil {
			log.Warn("acknowledge a delivered event (it may be delivered again)", "err", err.Error())
		} else {
			log.Debug("event delivered")
		}
		if meta.NumDelivered > 1 {
			q.forgetAttempts(ctx, ev.ID, log)
		}
		return
	}
	a := api.AsyncAttempt{At: s.now().UTC(), RequestID: reqID, Agent: agent, Error: failure}
	history = append(history, a)
	if err := q.logAttempt(ctx, ev.ID, a); err != nil {
		// Not counted then: the event has asyncLostDeliveries to spare.
		log.Error("record a failed async attempt", "err", err.Error())
	}
	if len(history) >= maxAttempts {
		s.deadLetter(ctx, msg, &ev, history, log)
		return
	}
	delay := retryDelay(s.bgCfg.asyncBackoff, len(history))
	if err := msg.NakWithDelay(delay); err != nil {
		log.Warn("hand back a failed event (JetStream delivers it again after AckWait)", "err", err.Error())
	}
	log.Info("event delivery failed; will retry", "err", failure, "retry_in", delay)
}

// retryDelay is the backoff after the n-th failed attempt: 2^(n-1) × base.
func retryDelay(base time.Duration, n int) time.Duration {
	n = min(max(n, 1), 21)
	return base << (n - 1)
}

// keepAlive tells JetStream the event is still being delivered, every
// third of AckWait, until stop is called.
func (q *asyncQueue) keepAlive(msg jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(q.ackWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	return func() { close(done) }
}

// deadLetter moves an event out of retries to AMBER_DEAD with its
// attempts, then terminates it in the queue. The dead letter's message id
// is the event's: writing it twice (the scheduler stopped before the
// termination) keeps one.
func (s *Scheduler) deadLetter(ctx context.Context, msg jetstream.Msg, ev *asyncEvent, history []api.AsyncAttempt, log interface {
	Warn(string, ...any)
	Error(string, ...any)
}) {
	q := s.async
	dl := api.DeadLetter{
		EventID: ev.ID, Function: ev.Function, Version: ev.Version, Payload: ev.Payload,
		EnqueuedAt: ev.EnqueuedAt, DeadAt: s.now().UTC(), Source: ev.Source, Attempts: history,
	}
	data, err := json.Marshal(dl)
	if err == nil {
		_, err = q.js.Publish(ctx, deadSubject(ev.Function), data, jetstream.WithMsgID("dead/"+ev.ID), jetstream.WithExpectStream(deadStreamName))
	}
	if err != nil {
		log.Error("write a dead letter; will try again", "err", err.Error())
		_ = msg.NakWithDelay(s.bgCfg.asyncBackoff)
		return
	}
	if err := msg.TermWithReason(fmt.Sprintf("dead-lettered after %d attempts", len(history))); err != nil {
		log.Warn("terminate a dead-lettered event", "err", err.Error())
	}
	q.forgetAttempts(ctx, ev.ID, log)
	var last api.AsyncAttempt
	if len(history) > 0 {
		last = history[len(history)-1]
	}
	log.Warn("event dead-lettered", "attempts", len(history), "err", last.Error)
	s.event(api.EventInvokeFailed, ev.Function, last.Agent, "event %s dead-lettered after %d attempts: %s", ev.ID, len(history), last.Error)
}

// loggedAttempts reads an event's attempt log (none: empty).
func (q *asyncQueue) loggedAttempts(ctx context.Context, eventID string) ([]api.AsyncAttempt, error) {
	e, err := q.attempts.Get(ctx, attemptsKey(eventID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, engine.Wrap(err)
	}
	var out []api.AsyncAttempt
	if err := json.Unmarshal(e.Value(), &out); err != nil {
		return nil, fmt.Errorf("attempt log of event %s: %w", eventID, err)
	}
	return out, nil
}

// logAttempt appends a failed attempt to an event's log (compare and set,
// so two writers cannot lose one).
func (q *asyncQueue) logAttempt(ctx context.Context, eventID string, a api.AsyncAttempt) error {
	key := attemptsKey(eventID)
	for range 5 {
		var list []api.AsyncAttempt
		var rev uint64
		e, err := q.attempts.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return engine.Wrap(err)
		default:
			rev = e.Revision()
			if err := json.Unmarshal(e.Value(), &list); err != nil {
				return fmt.Errorf("attempt log of event %s: %w", eventID, err)
			}
		}
		data, err := json.Marshal(append(list, a))
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = q.attempts.Create(ctx, key, data)
		} else {
			_, err = q.attempts.Update(ctx, key, data, rev)
		}
		var apiErr *jetstream.APIError
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !(errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence) {
			return engine.Wrap(err)
		}
	}
	return fmt.Errorf("attempt log of event %s: changed by others five times in a row", eventID)
}

func (q *asyncQueue) forgetAttempts(ctx context.Context, eventID string, log interface{ Warn(string, ...any) }) {
	if err := q.attempts.Purge(ctx, attemptsKey(eventID)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		log.Warn("drop the attempt log of a finished event (it ages out)", "err", err.Error())
	}
}

// attemptsKey is an event's key in the attempt log: its id when that is a
// valid key (ids are UUIDs), else the id's hash.
func attemptsKey(eventID string) string {
	ok := eventID != ""
	for _, c := range eventID {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			ok = false
			break
		}
	}
	if ok {
		return eventID
	}
	h := sha256.Sum256([]byte(eventID))
	return "h-" + hex.EncodeToString(h[:16])
}

// asyncConfig reads a function's async settings (defaults when unset),
// from memory.
func (s *Scheduler) asyncConfig(name string) api.AsyncConfig {
	if h, _ := s.reg.cache.head(name); h != nil && h.Async != nil {
		return *h.Async
	}
	return api.AsyncConfig{MaxRetries: DefaultAsyncMaxRetries}
}

// deadLetters lists dead-lettered events, oldest first; function "" is all.
func (s *Scheduler) deadLetters(function string) ([]api.DeadLetter, error) {
	q := s.async
	out := []api.DeadLetter{}
	filter := deadSubjectPrefix + ">"
	if function != "" {
		filter = deadSubject(function)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	total, err := subjectCount(ctx, q.dead, filter)
	if err != nil || total == 0 {
		return out, err
	}
	cons, err := q.js.OrderedConsumer(ctx, deadStreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		return nil, unavailable(err)
	}
	for seen := 0; ; {
		// Ask for no more than there are: a fetch waits for its whole batch.
		batch, err := cons.Fetch(min(max(total-seen, 1), 256), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, unavailable(err)
		}
		got, more := 0, true
		for m := range batch.Messages() {
			got++
			seen++
			var dl api.DeadLetter
			if err := json.Unmarshal(m.Data(), &dl); err != nil {
				s.log.Error("undecodable dead letter; skipped", "subject", m.Subject(), "err", err.Error())
			} else {
				out = append(out, dl)
			}
			if md, err := m.Metadata(); err == nil && md.NumPending == 0 {
				more = false
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, unavailable(err)
		}
		if got == 0 || !more {
			return out, nil
		}
	}
}

// subjectCount is how many messages of st match filter.
func subjectCount(ctx context.Context, st jetstream.Stream, filter string) (int, error) {
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return 0, unavailable(err)
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	return n, nil
}

// pendingEvents counts queued events (in flight and in backoff too) per
// function.
func (s *Scheduler) pendingEvents() (map[string]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), asyncOpTimeout)
	defer cancel()
	info, err := s.async.stream.Info(ctx, jetstream.WithSubjectFilter(asyncSubjectPrefix+">"))
	if err != nil {
		return nil, unavailable(err)
	}
	out := map[string]int{}
	for subj, n := range info.State.Subjects {
		out[strings.TrimPrefix(subj, asyncSubjectPrefix)] = int(n)
	}
	return out, nil
}

func (s *Scheduler) asyncStatus(name string) (*api.AsyncStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), asyncOpTimeout)
	defer cancel()
	pending, err := subjectCount(ctx, s.async.stream, asyncSubject(name))
	if err != nil {
		return nil, err
	}
	dead, err := subjectCount(ctx, s.async.dead, deadSubject(name))
	if err != nil {
		return nil, err
	}
	return &api.AsyncStatus{Function: name, AsyncConfig: s.asyncConfig(name), Pending: pending, DeadLetters: dead}, nil
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
	_, err := s.reg.updateHead(name, func(h *fnHead) error {
		h.Async = &cfg
		return nil
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

// purgeAsync drops a deleted function's queued events: none is delivered
// after it returns (one in flight finishes). Its dead letters stay.
func (s *Scheduler) purgeAsync(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), asyncOpTimeout)
	defer cancel()
	if err := s.async.stream.Purge(ctx, jetstream.WithPurgeSubject(asyncSubject(name))); err != nil {
		s.log.Warn("purge the async queue of a deleted function (its events fail into dead letters)", "function", name, "err", err.Error())
	}
}

// importAsyncFile imports the async queue of the bbolt file at path, if
// there is one (a data folder from before JetStream), opened read-only.
func (s *Scheduler) importAsyncFile(ctx context.Context, path string) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if _, err := s.async.imports.Get(ctx, importKeyAsync); err == nil {
		return nil // done (by this or another scheduler)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, ReadOnly: true})
	if err != nil {
		return err
	}
	defer db.Close()
	return s.importAsyncBolt(ctx, db)
}

// importAsyncBolt copies the bbolt queue (async_queue) and dead letters
// (async_dead) of the old layout into JetStream, once: the import is
// marked done in AMBER_IMPORTS, and amber.db is left as it was. Imported
// events keep their failed attempts (and start a fresh backoff); messages
// carry ids, so an import cut short and run again within the duplicate
// window adds nothing twice.
func (s *Scheduler) importAsyncBolt(ctx context.Context, db *bolt.DB) error {
	q := s.async
	if _, err := q.imports.Get(ctx, importKeyAsync); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return engine.Wrap(err)
	}
	var events []asyncEvent
	var dead []api.DeadLetter
	skipped := 0
	err := db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketAsyncQueue); b != nil {
			_ = b.ForEach(func(k, v []byte) error {
				var ev asyncEvent
				if err := json.Unmarshal(v, &ev); err != nil || ev.ID == "" || api.ValidateName("function", ev.Function) != nil {
					s.log.Error("bbolt async event cannot be imported; skipped", "key", hex.EncodeToString(k), "value", truncate(string(v), 256))
					skipped++
					return nil
				}
				events = append(events, ev)
				return nil
			})
		}
		if b := tx.Bucket(bucketAsyncDead); b != nil {
			_ = b.ForEach(func(k, v []byte) error {
				var dl api.DeadLetter
				if err := json.Unmarshal(v, &dl); err != nil || dl.EventID == "" || api.ValidateName("function", dl.Function) != nil {
					s.log.Error("bbolt dead letter cannot be imported; skipped", "key", hex.EncodeToString(k), "value", truncate(string(v), 256))
					skipped++
					return nil
				}
				dead = append(dead, dl)
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Publish asynchronously, a window at a time, then check every
	// acknowledgement.
	var acks []jetstream.PubAckFuture
	settle := func() error {
		select {
		case <-q.js.PublishAsyncComplete():
		case <-ctx.Done():
			return unavailable(fmt.Errorf("waiting for JetStream to acknowledge %d imported messages: %w", len(acks), ctx.Err()))
		}
		for _, f := range acks {
			select {
			case err := <-f.Err():
				return unavailable(fmt.Errorf("import message %s: %w", f.Msg().Header.Get(jetstream.MsgIDHeader), err))
			default:
			}
		}
		acks = acks[:0]
		return nil
	}
	publish := func(subject string, v any, id, stream string) error {
		data, err := json.Marshal(v)
		if err != nil {
			return err
		}
		f, err := q.js.PublishAsync(subject, data, jetstream.WithMsgID(id), jetstream.WithExpectStream(stream))
		if err != nil {
			return unavailable(err)
		}
		if acks = append(acks, f); len(acks) == 1000 {
			return settle()
		}
		return nil
	}
	for _, dl := range dead {
		if err := publish(deadSubject(dl.Function), dl, "dead/"+dl.EventID, deadStreamName); err != nil {
			return err
		}
	}
	for _, ev := range events {
		if err := publish(asyncSubject(ev.Function), ev, "import/"+ev.ID, asyncStreamName); err != nil {
			return err
		}
	}
	if err := settle(); err != nil {
		return err
	}
	host, _ := os.Hostname()
	mark, _ := json.Marshal(map[string]any{
		"at": time.Now().UTC(), "host": host, "file": db.Path(), "events": len(events), "dead_letters": len(dead), "skipped": skipped,
	})
	if _, err := q.imports.Create(ctx, importKeyAsync, mark); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return engine.Wrap(err)
	}
	s.log.Info("imported from bbolt", "part", "async", "file", db.Path(), "events", len(events), "dead_letters", len(dead), "skipped", skipped)
	return nil
}
