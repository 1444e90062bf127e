package scheduler

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/scheduler/internal/engine"
)

// The ledger lives in NATS JetStream, shared by every scheduler of the
// cluster:
//
//	stream AMBER_LEDGER (file storage, MaxAge = the retention)
//	  amber.ledger.<function>             JSON [api.LedgerRecord], finished invocations (a group commit)
//	  amber.warmth.<function>             JSON ledgerWarmth: provisioned warmth one scheduler gathered
//	bucket AMBER_USAGE
//	  <YYYY>.<MM>.<DD>.<HH>.<function>    JSON usageEntry: that hour's sums (api.Usage, no costs)
//	  import.ledger                       DATA/ledger.db was imported (ledger_import.go)
//
// Records. Every finished invocation (sync, event, schedule) is published
// to the stream and its acknowledgement awaited before the caller gets the
// answer: JetStream acknowledges what its node has fsynced (SyncAlways), or
// in a cluster what a quorum of replicas holds. JetStream stores a stream's
// messages one after the other and syncs each, so one message per record
// caps the ledger at about 1,000 records/s here; instead concurrent
// records are committed as a group, as the write-ahead log did: while one
// batch awaits its ack, the records that arrive gather, and the next batch
// is one message per function (a JSON array of records, at most
// ledgerMaxBatch), published asynchronously together. Each writer waits
// for the ack of its batch. Each message carries a random Nats-Msg-Id, so
// a message sent again after a lost ack is stored once (within the
// stream's two-minute duplicate window).
//
// No quorum. When JetStream cannot take a record (no quorum, no server, no
// ack within ledgerAckTimeout), the invocation's answer is unaffected: the
// caller gets it once that wait is over, and the record's message is kept
// in memory and published again every second, with the same message id,
// until JetStream stores it. The log says so (a warning with the number of
// records pending when one is kept, an info line when they are stored) and
// ledger.pendingRecords is the figure for /metrics. At most
// ledgerMaxPending records wait in memory; records still pending when the
// scheduler stops are lost, and the log says how many.
//
// Hourly sums. Every scheduler pulls from one durable consumer ("usage")
// on the stream, so each record is delivered to one of them; it adds the
// record into its hour's entry in AMBER_USAGE with a compare-and-set update
// (revision), and acknowledges the record only after the entry is stored.
// A crash between the two redelivers the record (to any scheduler, after
// the consumer's AckWait), so the entries are made idempotent: an entry
// keeps the stream sequences summed into it. A plain "last applied
// sequence, skip at or below" is not enough here, because the schedulers
// pull in parallel and a redelivered record comes after later ones; so an
// entry keeps Floor — the consumer's ack floor when it was written: every
// record at or below it was acknowledged, hence summed — and Applied, the
// sequences above Floor summed into it. A record at or below Floor or in
// Applied is skipped (and acknowledged). Seq is the highest sequence
// summed. Applied stays short (the floor follows the acks), except while a
// dead scheduler's unacknowledged records hold the floor back: then it
// grows by the messages summed in the AckWait (ledgerAckWait) until they
// are redelivered. A summer gathers messages for up to ledgerSumGather so
// one compare-and-set sums many; a clean stop drains what its consumer
// holds and sums it. A record of a failed platform call (no start kind) is listed,
// not billed, as before. Reads (bill) first wait until the consumer's ack
// floor has reached the stream's last sequence as it was when the read
// began, so a bill includes every record acknowledged before it.
//
// Provisioned warmth — idle instance time of functions with min_warm > 0,
// integrated from heartbeats — is gathered in memory and published every
// 10 seconds and on Close as one amber.warmth.<function> message per
// function, summed like the records: each scheduler's warmth is published
// once (message id) and summed once. A crash can lose up to those 10
// seconds of warmth, never an invocation.
//
// Retention. The stream drops records older than the retention (MaxAge,
// default 30 days); compactLedger also drops, once an hour, the records
// whose own time is past the retention, but never one the consumer has not
// acknowledged yet (not yet in the sums). The hourly sums are kept (one
// small value per function per hour), so bills over any range stay exact;
// only the per-invocation listing (GET /v1/ledger) forgets.
const (
	ledgerStreamName = "AMBER_LEDGER"
	usageBucket      = "AMBER_USAGE"
	ledgerConsumer   = "usage"
	ledgerRecordPfx  = "amber.ledger."
	ledgerWarmthPfx  = "amber.warmth."
	// ledgerAckTimeout bounds how long an invocation's answer waits for
	// its record's acknowledgement. When a node holding the stream's
	// leader dies, JetStream elects another in a few seconds: 1 s keeps
	// invocations answered meanwhile (their records wait in memory), where
	// 3 s made the first answer after a SIGKILL take 3.5 s.
	ledgerAckTimeout  = time.Second
	ledgerMaxPending  = 100_000
	ledgerSumBatch    = 512
	ledgerSumGather   = 20 * time.Millisecond
	ledgerReadTimeout = 10 * time.Second
	// ledgerClockSkew widens a listing's start: records are sought by the
	// stream's own time, which is at or after the record's unless the
	// scheduler's clock is ahead of the NATS node's.
	ledgerClockSkew = time.Minute
	// hdrLedgerImported marks records imported from DATA/ledger.db: their
	// sums were imported with the hourly sums, so they are not summed again.
	hdrLedgerImported = "Amber-Imported"
)

// ledgerAckWait is how long the usage consumer waits for a scheduler to
// acknowledge a record before it hands it to another (tests shorten it).
var ledgerAckWait = 10 * time.Second

// DefaultLedgerRetention is how long raw ledger records are kept.
const DefaultLedgerRetention = 30 * 24 * time.Hour

// pricesFile, in the data folder, overrides the default prices field by
// field when WithPrices is not given, e.g. {"free_tier": true} or
// {"per_gb_second": 0.0000133334}.
const pricesFile = "prices.json"

func loadPrices(dir string) (api.Prices, error) {
	p := api.DefaultPrices()
	data, err := os.ReadFile(filepath.Join(dir, pricesFile))
	if errors.Is(err, os.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return p, fmt.Errorf("prices: %w", err)
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return p, fmt.Errorf("prices: %s: %w", filepath.Join(dir, pricesFile), err)
	}
	if p.PerGBSecond < 0 || p.PerMillionRequests < 0 || p.WarmthPerGBSecond < 0 || p.FreeGBSeconds < 0 || p.FreeRequests < 0 {
		return p, fmt.Errorf("prices: %s: negative price or allowance", filepath.Join(dir, pricesFile))
	}
	return p, nil
}

// WithPrices sets the prices the bill charges (default api.DefaultPrices,
// overridden by DATA/prices.json when present).
func WithPrices(p api.Prices) Option { return func(s *Scheduler) { s.bgCfg.prices = &p } }

// WithLedgerRetention sets how long raw ledger records are kept before
// compaction drops them (their hourly sums stay). Default 30 days.
func WithLedgerRetention(d time.Duration) Option { return func(s *Scheduler) { s.bgCfg.retention = d } }

type ledger struct {
	js     jetstream.JetStream // own context: async publishes time out after ledgerAckTimeout
	stream jetstream.Stream
	kv     jetstream.KeyValue
	cons   jetstream.Consumer
	log    *slog.Logger

	mu       sync.Mutex
	closed   bool
	queue    []*ledgerWrite // records waiting for the next batch
	pending  []pendingMsg   // messages JetStream did not take yet, retried
	pendingN int            // records in pending
	warm     map[string]*warmAcc

	// Group commit: pubLoop publishes what is queued as one message per
	// function, at most ledgerInflight batches awaiting their acks.
	kick    chan struct{}
	slots   chan struct{}
	pubStop chan struct{}
	pubDone chan struct{}

	stop chan struct{} // the ledger loop
	done chan struct{}

	// The summer: Consume hands records to sumLoop through msgs.
	cc       jetstream.ConsumeContext
	msgs     chan jetstream.Msg
	sumStop  chan struct{}
	sumDone  chan struct{}
	stopOnce sync.Once

	// crashAt, in tests, stops the summer as a killed process would:
	// crashBeforeSum after receiving a batch, crashBeforeAck after storing
	// its sums; nothing of that batch is acknowledged.
	crashAt atomic.Int32
}

const (
	crashBeforeSum = 1
	crashBeforeAck = 2
)

type warmAcc struct{ seconds, mbSeconds, unknownSeconds float64 }

type pendingMsg struct {
	m *nats.Msg
	n int // records in it (0: warmth)
}

type ledgerWrite struct {
	rec  api.LedgerRecord
	done chan error
}

// ledgerWarmth is one scheduler's provisioned warmth of a function since
// its previous flush.
type ledgerWarmth struct {
	Time            time.Time `json:"time"`
	Function        string    `json:"function"`
	WarmthSeconds   float64   `json:"warmth_seconds"`
	WarmthGBSeconds float64   `json:"warmth_gb_seconds"`
}

// usageEntry is the value of an hourly key in AMBER_USAGE.
type usageEntry struct {
	Usage api.Usage `json:"usage"`
	// Seq is the highest stream sequence summed here.
	Seq uint64 `json:"seq,omitempty"`
	// Floor: every record of this hour and function at or below it is in
	// Usage (the consumer's ack floor when the entry was last written).
	Floor uint64 `json:"floor,omitempty"`
	// Applied are the sequences above Floor summed here, ascending.
	Applied []uint64 `json:"applied,omitempty"`
	// Imported: DATA/ledger.db's sums of this hour are in Usage.
	Imported bool `json:"imported,omitempty"`
}

// seqUsage is one record's contribution to an hourly entry.
type seqUsage struct {
	seq uint64
	u   api.Usage
}

// add sums the items not summed yet and raises the floor; it reports
// whether the entry changed.
func (e *usageEntry) add(items []seqUsage, floor uint64) bool {
	changed := false
	for _, it := range items {
		if it.seq <= e.Floor {
			continue
		}
		i, found := slices.BinarySearch(e.Applied, it.seq)
		if found {
			continue
		}
		e.Applied = slices.Insert(e.Applied, i, it.seq)
		e.Usage.Add(it.u)
		e.Seq = max(e.Seq, it.seq)
		changed = true
	}
	if changed && floor > e.Floor {
		e.Floor = floor
		i, _ := slices.BinarySearch(e.Applied, floor+1)
		e.Applied = slices.Delete(e.Applied, 0, i)
	}
	return changed
}

var (
	errLedgerClosed = errors.New("ledger closed")
	// errLedgerFunction: the name cannot be a subject or key token.
	errLedgerFunction = errors.New("ledger: function name cannot be stored")
	ledgerTokenRE     = regexp.MustCompile(`^[A-Za-z0-9_-]{1,63}$`)
)

func ledgerToken(function string) error {
	if !ledgerTokenRE.MatchString(function) {
		return fmt.Errorf("%w: %q (want [A-Za-z0-9_-]{1,63})", errLedgerFunction, function)
	}
	return nil
}

// usageKey is the AMBER_USAGE key of an hour's sums of a function.
func usageKey(hour time.Time, function string) string {
	h := hour.UTC()
	return fmt.Sprintf("%04d.%02d.%02d.%02d.%s", h.Year(), h.Month(), h.Day(), h.Hour(), function)
}

// parseUsageKey reads an hourly key back; ok is false for other keys.
func parseUsageKey(key string) (hour time.Time, function string, ok bool) {
	p := strings.SplitN(key, ".", 5)
	if len(p) != 5 {
		return time.Time{}, "", false
	}
	var n [4]int
	for i := range n {
		v, err := strconv.Atoi(p[i])
		if err != nil {
			return time.Time{}, "", false
		}
		n[i] = v
	}
	return time.Date(n[0], time.Month(n[1]), n[2], n[3], 0, 0, 0, time.UTC), p[4], true
}

// usageFilters returns key filters that cover the hours in [from, to):
// whole months, then whole days, then single hours.
func usageFilters(from, to time.Time) []string {
	var out []string
	t := from.UTC().Truncate(time.Hour)
	for t.Before(to) {
		monthStart := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		dayStart := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
		switch {
		case t.Equal(monthStart) && !monthStart.AddDate(0, 1, 0).After(to):
			out = append(out, fmt.Sprintf("%04d.%02d.>", t.Year(), t.Month()))
			t = monthStart.AddDate(0, 1, 0)
		case t.Equal(dayStart) && !dayStart.AddDate(0, 0, 1).After(to):
			out = append(out, fmt.Sprintf("%04d.%02d.%02d.>", t.Year(), t.Month(), t.Day()))
			t = dayStart.AddDate(0, 0, 1)
		default:
			out = append(out, fmt.Sprintf("%04d.%02d.%02d.%02d.*", t.Year(), t.Month(), t.Day(), t.Hour()))
			t = t.Add(time.Hour)
		}
	}
	return out
}

// openLedger creates (or joins) the ledger stream, the usage bucket and
// the usage consumer, imports DATA/ledger.db once, and starts summing.
func (s *Scheduler) openLedger() (_ *ledger, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(s.eng.Conn, jetstream.WithPublishAsyncTimeout(ledgerAckTimeout), jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	dup := min(2*time.Minute, s.bgCfg.retention)
	st, err := s.eng.Stream(ctx, jetstream.StreamConfig{
		Name:        ledgerStreamName,
		Description: "amber billing ledger: one record per finished invocation, provisioned warmth",
		Subjects:    []string{ledgerRecordPfx + "*", ledgerWarmthPfx + "*"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      s.bgCfg.retention,
		Duplicates:  dup,
		AllowDirect: true,
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	kv, err := s.eng.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      usageBucket,
		Description: "amber billing: hourly sums per function",
		History:     1,
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	cons, err := s.eng.Consumer(ctx, ledgerStreamName, jetstream.ConsumerConfig{
		Durable:       ledgerConsumer,
		Description:   "sums ledger records into " + usageBucket,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ledgerAckWait,
		MaxDeliver:    -1,
		MaxAckPending: 8 * ledgerSumBatch,
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: consumer %s: %w", ledgerConsumer, engine.Wrap(err))
	}
	l := &ledger{js: js, stream: st, kv: kv, cons: cons, log: s.log, warm: map[string]*warmAcc{},
		stop: make(chan struct{}), done: make(chan struct{}),
		kick: make(chan struct{}, 1), slots: make(chan struct{}, ledgerInflight), pubStop: make(chan struct{}), pubDone: make(chan struct{}),
		msgs: make(chan jetstream.Msg, ledgerSumBatch), sumStop: make(chan struct{}), sumDone: make(chan struct{})}
	if err := l.importBolt(ctx, s.dataDir); err != nil {
		return nil, err
	}
	l.cc, err = cons.Consume(func(m jetstream.Msg) {
		select {
		case l.msgs <- m:
		case <-l.sumStop:
		}
	}, jetstream.PullMaxMessages(ledgerSumBatch), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		l.log.Debug("ledger: usage consumer", "err", err.Error())
	}))
	if err != nil {
		return nil, fmt.Errorf("ledger: consume %s: %w", ledgerConsumer, engine.Wrap(err))
	}
	go l.sumLoop()
	go l.pubLoop()
	return l, nil
}

func newMsgID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// recordsMsg makes one stream message of records of one function: a JSON
// array, with a random message id.
func recordsMsg(function string, recs []api.LedgerRecord) (*nats.Msg, error) {
	if err := ledgerToken(function); err != nil {
		return nil, err
	}
	data, err := json.Marshal(recs)
	if err != nil {
		return nil, fmt.Errorf("ledger: encode records: %w", err)
	}
	m := nats.NewMsg(ledgerRecordPfx + function)
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, newMsgID())
	return m, nil
}

// decodeRecords reads the records of a stream message.
func decodeRecords(data []byte) ([]api.LedgerRecord, error) {
	var recs []api.LedgerRecord
	if err := json.Unmarshal(data, &recs); err != nil {
		return nil, err
	}
	return recs, nil
}

// errLedgerPending: JetStream did not take the record now; it is kept in
// memory and published again until stored.
var errLedgerPending = errors.New("ledger: record kept in memory until JetStream takes it")

// write stores rec, returning once JetStream has acknowledged the batch
// it went in. An error wrapping errLedgerPending means the record is kept
// and retried; errLedgerClosed that it was refused.
func (l *ledger) write(rec api.LedgerRecord) error {
	if err := ledgerToken(rec.Function); err != nil {
		return err
	}
	w := &ledgerWrite{rec: rec, done: make(chan error, 1)}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return errLedgerClosed
	}
	l.queue = append(l.queue, w)
	l.mu.Unlock()
	signal(l.kick)
	return <-w.done
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// pubLoop is the group commit: whenever a slot is free it publishes every
// queued record, one message per function, and answers their writers when
// JetStream acknowledges. While ledgerInflight batches await their acks
// (JetStream syncs each message), records gather for the next batch. It
// returns once Close began and everything queued is answered.
func (l *ledger) pubLoop() {
	defer close(l.pubDone)
	for {
		select {
		case <-l.kick:
		case <-l.pubStop:
			for l.publishQueued() {
			}
			for range cap(l.slots) { // the batches in flight
				l.slots <- struct{}{}
			}
			return
		}
		for l.publishQueued() {
		}
	}
}

// ledgerInflight bounds the batches awaiting their acks. One is fastest:
// JetStream stores a stream's messages one after the other, syncing each,
// so the records gathered while a batch is stored make the next batch
// (16 writers: 14-18k records/s with one, 7-10k with two or four).
const ledgerInflight = 1

// publishQueued takes a slot and publishes the queue as one batch; false
// when the queue was empty.
func (l *ledger) publishQueued() bool {
	l.slots <- struct{}{}
	l.mu.Lock()
	batch := l.queue
	l.queue = nil
	l.mu.Unlock()
	if len(batch) == 0 {
		<-l.slots
		return false
	}
	byFn := map[string][]*ledgerWrite{}
	var order []string
	for _, w := range batch {
		if byFn[w.rec.Function] == nil {
			order = append(order, w.rec.Function)
		}
		byFn[w.rec.Function] = append(byFn[w.rec.Function], w)
	}
	var msgs []*nats.Msg
	var writers [][]*ledgerWrite
	for _, fn := range order {
		ws := byFn[fn]
		for len(ws) > 0 {
			n := min(len(ws), ledgerMaxBatch)
			recs := make([]api.LedgerRecord, n)
			for i, w := range ws[:n] {
				recs[i] = w.rec
			}
			m, err := recordsMsg(fn, recs)
			if err != nil {
				for _, w := range ws[:n] {
					w.done <- err
				}
			} else {
				msgs = append(msgs, m)
				writers = append(writers, ws[:n])
			}
			ws = ws[n:]
		}
	}
	futs := l.sendAsync(msgs)
	go func() {
		defer func() { <-l.slots }()
		for i, err := range l.await(futs) {
			if err != nil {
				if n, kerr := l.keep(msgs[i], len(writers[i])); kerr != nil {
					err = fmt.Errorf("%w (%w)", err, kerr)
				} else {
					err = fmt.Errorf("%w (%d records pending): %w", errLedgerPending, n, err)
				}
			}
			for _, w := range writers[i] {
				w.done <- err
			}
		}
	}()
	return true
}

// ledgerMaxBatch bounds the records in one message (~300 bytes each).
const ledgerMaxBatch = 1000

type pubResult struct {
	f   jetstream.PubAckFuture
	err error
}

func (l *ledger) sendAsync(msgs []*nats.Msg) []pubResult {
	out := make([]pubResult, len(msgs))
	for i, m := range msgs {
		out[i].f, out[i].err = l.js.PublishMsgAsync(m)
	}
	return out
}

func (l *ledger) await(futs []pubResult) []error {
	errs := make([]error, len(futs))
	for i, r := range futs {
		if r.err != nil {
			errs[i] = ledgerErr(r.err)
			continue
		}
		select {
		case <-r.f.Ok():
		case err := <-r.f.Err():
			errs[i] = ledgerErr(err)
		}
	}
	return errs
}

// send publishes msgs together and waits for every ack; errs[i] is
// msgs[i]'s outcome.
func (l *ledger) send(msgs []*nats.Msg) []error { return l.await(l.sendAsync(msgs)) }

func ledgerErr(err error) error {
	if errors.Is(err, jetstream.ErrAsyncPublishTimeout) || errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
		return fmt.Errorf("ledger: %w: %w", engine.ErrUnavailable, err)
	}
	return fmt.Errorf("ledger: %w", engine.Wrap(err))
}

// keep holds a message JetStream did not take, to publish it again with
// the same id; it returns how many are pending, or an error when the
// message is lost (too many pending).
func (l *ledger) keep(m *nats.Msg, records int) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pendingN+records > ledgerMaxPending {
		return l.pendingN, fmt.Errorf("ledger: %d records already wait for JetStream, these %d are lost", l.pendingN, records)
	}
	l.pending = append(l.pending, pendingMsg{m, records})
	l.pendingN += records
	return l.pendingN, nil
}

// pendingRecords is how many records wait in memory for JetStream.
func (l *ledger) pendingRecords() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pendingN
}

// retryPending publishes the pending messages again, with their ids.
func (l *ledger) retryPending() {
	l.mu.Lock()
	pend := l.pending
	l.pending, l.pendingN = nil, 0
	l.mu.Unlock()
	if len(pend) == 0 {
		return
	}
	msgs := make([]*nats.Msg, len(pend))
	for i, p := range pend {
		msgs[i] = p.m
	}
	var failed []pendingMsg
	stored, failedN := 0, 0
	var lastErr error
	for i, err := range l.send(msgs) {
		if err != nil {
			failed = append(failed, pend[i])
			failedN += pend[i].n
			lastErr = err
		} else {
			stored += pend[i].n
		}
	}
	l.mu.Lock()
	l.pending = append(failed, l.pending...)
	l.pendingN += failedN
	n := l.pendingN
	l.mu.Unlock()
	if len(failed) < len(pend) {
		l.log.Info("ledger: pending records stored", "records", stored, "pending", n)
	}
	if lastErr != nil {
		l.log.Warn("ledger: records still wait for JetStream", "pending", n, "err", lastErr.Error())
	}
}

// addIdle accumulates idle instance time (called under Scheduler.mu).
func (l *ledger) addIdle(function string, memoryMB int, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.warm[function]
	if a == nil {
		a = &warmAcc{}
		l.warm[function] = a
	}
	a.seconds += d.Seconds()
	if memoryMB > 0 {
		a.mbSeconds += float64(memoryMB) * d.Seconds()
	} else {
		a.unknownSeconds += d.Seconds()
	}
}

func (l *ledger) takeWarmth() map[string]*warmAcc {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.warm
	l.warm = map[string]*warmAcc{}
	return w
}

// sumLoop adds the records the usage consumer delivers into the hourly
// sums, a batch at a time, until the ledger closes.
func (l *ledger) sumLoop() {
	defer close(l.sumDone)
	for {
		var batch []jetstream.Msg
		select {
		case m := <-l.msgs:
			batch = append(batch, m)
		case <-l.sumStop:
			l.sumLast()
			return
		}
		// Gather for a moment: one compare-and-set per hour and function
		// sums many records.
		gather := time.NewTimer(ledgerSumGather)
	more:
		for len(batch) < ledgerSumBatch {
			select {
			case m := <-l.msgs:
				batch = append(batch, m)
			case <-gather.C:
				break more
			case <-l.sumStop:
				break more
			}
		}
		gather.Stop()
		for {
			err := l.sumBatch(batch)
			if err == nil {
				break
			}
			if errors.Is(err, errSummerCrashed) {
				l.cc.Stop()
				return
			}
			l.log.Warn("ledger: hourly sums not stored, trying again", "records", len(batch), "err", err.Error())
			select {
			case <-time.After(500 * time.Millisecond):
			case <-l.sumStop:
				return // unacknowledged: redelivered to another scheduler, or after a restart
			}
		}
	}
}

// sumLast sums what was delivered before the consumer stopped, once; what
// it cannot sum now is handed back (nak) for another scheduler.
func (l *ledger) sumLast() {
	var batch []jetstream.Msg
	for {
		select {
		case m := <-l.msgs:
			batch = append(batch, m)
			continue
		default:
		}
		break
	}
	if len(batch) == 0 {
		return
	}
	if err := l.sumBatch(batch); err != nil {
		for _, m := range batch {
			m.Nak()
		}
	}
}

var errSummerCrashed = errors.New("summer stopped (test)")

// sumBatch stores the sums of batch, then acknowledges its records. Sums
// are idempotent (usageEntry), so a batch may be summed again after an
// error part-way.
func (l *ledger) sumBatch(batch []jetstream.Msg) error {
	if l.crashAt.Load() == crashBeforeSum {
		return errSummerCrashed
	}
	ctx, cancel := context.WithTimeout(context.Background(), ledgerReadTimeout)
	defer cancel()
	info, err := l.cons.Info(ctx)
	if err != nil {
		return engine.Wrap(err)
	}
	floor := info.AckFloor.Stream
	items := map[string][]seqUsage{}
	for _, m := range batch {
		for key, su := range l.usageOf(m) {
			items[key] = append(items[key], su)
		}
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range items {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range keys {
		if err := l.addUsage(ctx, k, items[k], floor, false); err != nil {
			return err
		}
	}
	if l.crashAt.Load() == crashBeforeAck {
		return errSummerCrashed
	}
	for _, m := range batch {
		if err := m.Ack(); err != nil {
			// Redelivered later and skipped: the sums have it.
			l.log.Debug("ledger: ack", "err", err.Error())
		}
	}
	return nil
}

// usageOf reads what a stream message adds to the sums, by hourly key.
// Imported records and records of failed platform calls add nothing; an
// undecodable message is logged and skipped.
func (l *ledger) usageOf(m jetstream.Msg) map[string]seqUsage {
	meta, err := m.Metadata()
	if err != nil {
		l.log.Error("ledger: message without metadata, not summed", "subject", m.Subject(), "err", err.Error())
		return nil
	}
	seq := meta.Sequence.Stream
	if m.Headers().Get(hdrLedgerImported) != "" {
		return nil
	}
	out := map[string]seqUsage{}
	add := func(key string, u api.Usage) {
		su := out[key]
		su.seq = seq
		su.u.Add(u)
		out[key] = su
	}
	switch {
	case strings.HasPrefix(m.Subject(), ledgerRecordPfx):
		recs, err := decodeRecords(m.Data())
		if err != nil {
			l.log.Error("ledger: undecodable records, not summed", "seq", seq, "subject", m.Subject(), "err", err.Error())
			return nil
		}
		for _, r := range recs {
			if r.StartKind == "" || ledgerToken(r.Function) != nil {
				// No agent answered (it died mid-call, replied 5xx, or was
				// unreachable): the record stays in the listing, but a
				// request the platform failed is not billed.
				continue
			}
			u := api.Usage{Requests: 1, BilledMs: r.BilledMs, GBSeconds: r.GBSeconds}
			if r.Error {
				u.Errors = 1
			}
			if r.StartKind == api.StartCold || r.StartKind == api.StartRestore {
				u.ColdStarts = 1
			}
			add(usageKey(r.Time.Truncate(time.Hour), r.Function), u)
		}
	case strings.HasPrefix(m.Subject(), ledgerWarmthPfx):
		var w ledgerWarmth
		if err := json.Unmarshal(m.Data(), &w); err != nil || ledgerToken(w.Function) != nil {
			l.log.Error("ledger: undecodable warmth, not summed", "seq", seq, "subject", m.Subject(), "err", fmt.Sprint(err))
			return nil
		}
		add(usageKey(w.Time.Truncate(time.Hour), w.Function), api.Usage{WarmthSeconds: w.WarmthSeconds, WarmthGBSeconds: w.WarmthGBSeconds})
	}
	return out
}

// addUsage adds items into the entry of key with compare-and-set, trying
// again when another scheduler wrote it meanwhile. imported adds
// DATA/ledger.db's sums (items[0].u) once.
func (l *ledger) addUsage(ctx context.Context, key string, items []seqUsage, floor uint64, imported bool) error {
	for {
		var e usageEntry
		var rev uint64
		ent, err := l.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("ledger: read %s: %w", key, engine.Wrap(err))
		default:
			if err := json.Unmarshal(ent.Value(), &e); err != nil {
				// Never overwrite what cannot be read.
				return fmt.Errorf("ledger: decode hourly sums %s: %w", key, err)
			}
			rev = ent.Revision()
		}
		if imported {
			if e.Imported {
				return nil
			}
			e.Imported = true
			for _, it := range items {
				e.Usage.Add(it.u)
			}
		} else if !e.add(items, floor) {
			return nil
		}
		data, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = l.kv.Create(ctx, key, data)
		} else {
			_, err = l.kv.Update(ctx, key, data, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // another scheduler wrote it: read again
		}
		if err != nil {
			return fmt.Errorf("ledger: write %s: %w", key, engine.Wrap(err))
		}
		return nil
	}
}

// waitSummed waits until the usage consumer has acknowledged every record
// the stream held when it was called.
func (l *ledger) waitSummed(ctx context.Context) error {
	si, err := l.stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("ledger: %w", engine.Wrap(err))
	}
	last := si.State.LastSeq
	wait := time.Millisecond
	for {
		ci, err := l.cons.Info(ctx)
		if err != nil {
			return fmt.Errorf("ledger: %w", engine.Wrap(err))
		}
		if ci.AckFloor.Stream >= last {
			return nil
		}
		select {
		case <-time.After(wait):
			wait = min(2*wait, 20*time.Millisecond)
		case <-ctx.Done():
			return fmt.Errorf("ledger: the hourly sums are %d records behind the ledger (no scheduler sums them?): %w",
				last-ci.AckFloor.Stream, engine.ErrUnavailable)
		}
	}
}

// ledgerLoop is the ledger's background writer: it flushes warmth,
// publishes pending records again and compacts, until the ledger closes.
func (s *Scheduler) ledgerLoop() {
	l := s.ledger
	defer close(l.done)
	flush := time.NewTicker(s.bgCfg.warmthFlush)
	defer flush.Stop()
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	s.compactLedger()
	lastCompact := time.Now()
	for {
		select {
		case <-retry.C:
			l.retryPending()
		case <-flush.C:
			s.flushWarmth()
			if time.Since(lastCompact) > time.Hour {
				s.compactLedger()
				lastCompact = time.Now()
			}
		case <-l.stop:
			s.flushWarmth()
			l.retryPending()
			return
		}
	}
}

// ledgerClose refuses new records, waits for those in flight, flushes
// warmth and stops summing (records delivered but not summed are
// redelivered to another scheduler, or after a restart).
func (s *Scheduler) ledgerClose() {
	l := s.ledger
	if l == nil {
		return
	}
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	close(l.pubStop)
	<-l.pubDone
	close(l.stop)
	<-l.done
	l.stopSumming()
	if n := l.pendingRecords(); n > 0 {
		s.log.Error("ledger: records JetStream never took are lost", "records", n)
	}
}

func (l *ledger) stopSumming() {
	l.stopOnce.Do(func() {
		select {
		case <-l.sumDone: // crashed (tests)
		default:
			// Hand what the client holds to the summer, then sum it, so
			// no record waits out the AckWait for another scheduler.
			l.cc.Drain()
			select {
			case <-l.cc.Closed():
			case <-time.After(5 * time.Second):
				l.cc.Stop()
			}
		}
		close(l.sumStop)
		<-l.sumDone
	})
}

// flushWarmth publishes the idle time gathered since the last flush for
// the functions that keep min_warm instances (provisioned warmth).
func (s *Scheduler) flushWarmth() {
	warm := s.ledger.takeWarmth()
	if len(warm) == 0 {
		return
	}
	now := s.now().UTC()
	var msgs []*nats.Msg
	for name, a := range warm {
		p, err := s.reg.pool(name)
		if err != nil || s.effectiveMinWarm(name, p) == 0 || ledgerToken(name) != nil {
			continue
		}
		mbs := a.mbSeconds
		if a.unknownSeconds > 0 {
			if fn, err := s.reg.latest(name); err == nil {
				mbs += a.unknownSeconds * float64(fn.MemoryMB)
			}
		}
		data, err := json.Marshal(ledgerWarmth{Time: now, Function: name, WarmthSeconds: a.seconds, WarmthGBSeconds: mbs / 1024})
		if err != nil {
			continue
		}
		m := nats.NewMsg(ledgerWarmthPfx + name)
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, newMsgID())
		msgs = append(msgs, m)
	}
	for i, err := range s.ledger.send(msgs) {
		if err == nil {
			continue
		}
		n, kerr := s.ledger.keep(msgs[i], 0)
		if kerr != nil {
			s.log.Error("ledger: warmth lost", "subject", msgs[i].Subject, "err", err.Error(), "why", kerr.Error())
			continue
		}
		s.log.Warn("ledger: JetStream did not take the warmth; kept in memory and retried", "subject", msgs[i].Subject, "pending", n, "err", err.Error())
	}
}

// compactLedger drops raw records whose time is past the retention,
// oldest first, but none the usage consumer has not acknowledged (their
// sums stay).
func (s *Scheduler) compactLedger() {
	l := s.ledger
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cutoff := s.now().Add(-s.bgCfg.retention)
	si, err := l.stream.Info(ctx)
	if err != nil || si.State.Msgs == 0 {
		return
	}
	ci, err := l.cons.Info(ctx)
	if err != nil {
		s.log.Warn("ledger: compaction", "err", engine.Wrap(err).Error())
		return
	}
	first := si.State.FirstSeq
	// The first sequence, among the summed ones, whose time is not past
	// the cutoff (records arrive in time order, give or take the clocks).
	lo, hi := first, min(si.State.LastSeq, ci.AckFloor.Stream)+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		old, err := l.olderThan(ctx, mid, cutoff)
		if err != nil {
			s.log.Warn("ledger: compaction", "seq", mid, "err", err.Error())
			return
		}
		if old {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo <= first {
		return
	}
	if err := l.stream.Purge(ctx, jetstream.WithPurgeSequence(lo)); err != nil {
		s.log.Error("ledger: compaction", "err", engine.Wrap(err).Error())
		return
	}
	s.log.Info("ledger compacted", "records_dropped", lo-first, "retention", s.bgCfg.retention)
}

// olderThan reports whether the message at seq is from before t (a
// message gone already counts as old).
func (l *ledger) olderThan(ctx context.Context, seq uint64, t time.Time) (bool, error) {
	m, err := l.stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return true, nil
	}
	if err != nil {
		return false, engine.Wrap(err)
	}
	if strings.HasPrefix(m.Subject, ledgerRecordPfx) {
		if recs, err := decodeRecords(m.Data); err == nil && len(recs) > 0 {
			return recs[len(recs)-1].Time.Before(t), nil
		}
	}
	var w ledgerWarmth
	if err := json.Unmarshal(m.Data, &w); err == nil && !w.Time.IsZero() {
		return w.Time.Before(t), nil
	}
	return m.Time.Before(t), nil
}

// ledgerInvocation writes the record of a finished invocation. It blocks
// until JetStream has acknowledged it, or for at most ledgerAckTimeout: a
// record JetStream does not take is kept and published again until it is
// stored (see the top of this file); the invocation already ran, so its
// answer does not change.
func (s *Scheduler) ledgerInvocation(ctx context.Context, fn *api.Function, reqID, agent string, res *api.InvokeResult, failed bool) {
	if s.ledger == nil {
		return
	}
	rec := api.LedgerRecord{
		Time: s.now().UTC(), RequestID: reqID, Function: fn.Name, Version: fn.Version, Agent: agent,
		Source: sourceOf(ctx), Error: failed, MemoryMB: fn.MemoryMB,
	}
	if res != nil {
		rec.StartKind = res.StartKind
		rec.DurationUs = res.Duration.Microseconds()
		rec.BilledMs = res.BilledMs
		if res.MemoryMB > 0 {
			rec.MemoryMB = res.MemoryMB
		}
		if res.Version > 0 {
			rec.Version = res.Version
		}
	}
	rec.GBSeconds = float64(rec.BilledMs) / 1000 * float64(rec.MemoryMB) / 1024
	err := s.ledger.write(rec)
	switch {
	case err == nil:
	case errors.Is(err, errLedgerPending):
		s.log.Warn("ledger: JetStream did not take the record; kept in memory and retried until stored",
			"function", fn.Name, "request_id", reqID, "err", err.Error())
	default:
		s.log.Error("ledger: record lost", "function", fn.Name, "request_id", reqID, "err", err.Error())
	}
}

// readHourly returns the hourly sums in [from, to), by hour then function,
// once every record acknowledged so far is in them.
func (s *Scheduler) readHourly(from, to time.Time) ([]api.Usage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ledgerReadTimeout)
	defer cancel()
	if err := s.ledger.waitSummed(ctx); err != nil {
		return nil, err
	}
	filters := usageFilters(from, to)
	if len(filters) == 0 {
		return nil, nil
	}
	w, err := s.ledger.kv.WatchFiltered(ctx, filters, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("ledger: read hourly sums: %w", engine.Wrap(err))
	}
	defer w.Stop()
	var out []api.Usage
	for {
		var ent jetstream.KeyValueEntry
		select {
		case ent = <-w.Updates():
		case <-ctx.Done():
			return nil, fmt.Errorf("ledger: read hourly sums: %w", engine.Wrap(ctx.Err()))
		}
		if ent == nil {
			break
		}
		h, fn, ok := parseUsageKey(ent.Key())
		if !ok || h.Before(from) || !h.Before(to) {
			continue
		}
		var e usageEntry
		if err := json.Unmarshal(ent.Value(), &e); err != nil {
			return nil, fmt.Errorf("ledger: decode hourly sums %s: %w", ent.Key(), err)
		}
		u := e.Usage
		u.Period, u.Function = h, fn
		out = append(out, u)
	}
	slices.SortFunc(out, func(a, b api.Usage) int {
		if d := a.Period.Compare(b.Period); d != 0 {
			return d
		}
		return strings.Compare(a.Function, b.Function)
	})
	return out, nil
}

type hourFn struct {
	hour int64
	fn   string
}

// ceilHour rounds t up to a whole hour.
func ceilHour(t time.Time) time.Time {
	h := t.Truncate(time.Hour)
	if h.Before(t) {
		h = h.Add(time.Hour)
	}
	return h
}

// bill aggregates the ledger over [since, until), widened to whole UTC
// hours, per function and (by "hour" or "day") per period.
func (s *Scheduler) bill(since, until time.Time, by string) (*api.Bill, error) {
	prices := *s.bgCfg.prices
	since, until = since.UTC().Truncate(time.Hour), ceilHour(until.UTC())
	if !until.After(since) {
		until = since.Add(time.Hour)
	}
	rows, err := s.readHourly(since, until)
	if err != nil {
		return nil, err
	}
	b := &api.Bill{Since: since, Until: until, By: by, Prices: prices, Functions: []api.Usage{}, WarmPools: []api.WarmPoolCost{}}
	periods := map[hourFn]*api.Usage{}
	fns := map[string]*api.Usage{}
	for _, u := range rows {
		b.Totals.Add(u)
		f := fns[u.Function]
		if f == nil {
			f = &api.Usage{Function: u.Function}
			fns[u.Function] = f
		}
		f.Add(u)
		if by == "" {
			continue
		}
		p := u.Period
		if by == "day" {
			p = time.Date(p.Year(), p.Month(), p.Day(), 0, 0, 0, 0, time.UTC)
		}
		k := hourFn{p.Unix(), u.Function}
		pu := periods[k]
		if pu == nil {
			pu = &api.Usage{Period: p, Function: u.Function}
			periods[k] = pu
		}
		pu.Add(u)
	}
	for _, f := range fns {
		f.Price(prices)
		b.Functions = append(b.Functions, *f)
	}
	slices.SortFunc(b.Functions, func(a, c api.Usage) int { return strings.Compare(a.Function, c.Function) })
	for _, p := range periods {
		p.Price(prices)
		b.Periods = append(b.Periods, *p)
	}
	slices.SortFunc(b.Periods, func(a, c api.Usage) int {
		if d := a.Period.Compare(c.Period); d != 0 {
			return d
		}
		return strings.Compare(a.Function, c.Function)
	})
	b.Totals.Price(prices)
	if prices.FreeTier {
		if err := s.applyFreeTier(b, prices); err != nil {
			return nil, err
		}
	}
	// What the warm pools cost now.
	fnList, err := s.reg.list()
	if err != nil {
		return nil, err
	}
	for _, fn := range fnList {
		p, err := s.reg.pool(fn.Name)
		if err != nil {
			return nil, err
		}
		n := s.effectiveMinWarm(fn.Name, p)
		if n == 0 {
			continue
		}
		c := float64(n) * float64(fn.MemoryMB) / 1024 * 3600 * prices.WarmthPerGBSecond
		b.WarmPools = append(b.WarmPools, api.WarmPoolCost{Function: fn.Name, MinWarm: n, MemoryMB: fn.MemoryMB, CostPerHour: c})
		b.WarmPoolsCostPerHour += c
	}
	return b, nil
}

// applyFreeTier takes the monthly free allowance (requests and compute
// GB-s, not warmth) off the totals. Usage earlier in the same month but
// before Since uses up the allowance first.
func (s *Scheduler) applyFreeTier(b *api.Bill, p api.Prices) error {
	for m := time.Date(b.Since.Year(), b.Since.Month(), 1, 0, 0, 0, 0, time.UTC); m.Before(b.Until); m = m.AddDate(0, 1, 0) {
		next := m.AddDate(0, 1, 0)
		var before, in api.Usage
		if b.Since.After(m) {
			rows, err := s.readHourly(m, b.Since)
			if err != nil {
				return err
			}
			for _, u := range rows {
				before.Add(u)
			}
		}
		rows, err := s.readHourly(maxTime(m, b.Since), minTime(next, b.Until))
		if err != nil {
			return err
		}
		for _, u := range rows {
			in.Add(u)
		}
		freeGB := max(0, p.FreeGBSeconds-before.GBSeconds)
		freeReq := max(0, p.FreeRequests-before.Requests)
		b.FreeTierGBSeconds += min(in.GBSeconds, freeGB)
		b.FreeTierRequests += min(in.Requests, freeReq)
	}
	b.FreeTierDiscount = b.FreeTierGBSeconds*p.PerGBSecond + float64(b.FreeTierRequests)*p.PerMillionRequests/1e6
	b.Totals.Cost = max(0, b.Totals.Cost-b.FreeTierDiscount)
	return nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// parseWhen reads an RFC 3339 time or a duration back from now ("24h").
func parseWhen(field, v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, api.Invalid(field, "%q: want an RFC 3339 time or a duration back from now (24h)", v)
}

func (s *Scheduler) handleBill(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	now := s.now().UTC()
	since, until := now.Add(-24*time.Hour), now
	var err error
	if v := q.Get("since"); v != "" {
		if since, err = parseWhen("since", v, now); err != nil {
			api.WriteError(w, err)
			return
		}
	}
	if v := q.Get("until"); v != "" {
		if until, err = parseWhen("until", v, now); err != nil {
			api.WriteError(w, err)
			return
		}
	}
	if until.Before(since) {
		api.WriteError(w, api.Invalid("until", "%s is before since %s", until.Format(time.RFC3339), since.Format(time.RFC3339)))
		return
	}
	by := q.Get("by")
	switch by {
	case "", "hour", "day":
	default:
		api.WriteError(w, api.Invalid("by", "%q: want hour or day", by))
		return
	}
	b, err := s.bill(since, until, by)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, b)
}

// ledgerRecords lists raw records from since, oldest first, at most limit
// (function "" lists every function).
func (s *Scheduler) ledgerRecords(function string, since time.Time, limit int) ([]api.LedgerRecord, error) {
	subject := ledgerRecordPfx + "*"
	if function != "" {
		if err := ledgerToken(function); err != nil {
			return nil, api.Invalid("function", "%q must match [a-z0-9-]{1,63}", function)
		}
		subject = ledgerRecordPfx + function
	}
	ctx, cancel := context.WithTimeout(context.Background(), ledgerReadTimeout)
	defer cancel()
	cfg := jetstream.ConsumerConfig{
		FilterSubject:     subject,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: time.Minute,
	}
	if !since.IsZero() {
		// Sought by the stream's time (at or after each record's own), then
		// filtered by the record's.
		start := since.Add(-ledgerClockSkew)
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	c, err := s.ledger.stream.CreateConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("ledger: list records: %w", engine.Wrap(err))
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		s.ledger.stream.DeleteConsumer(dctx, c.CachedInfo().Name)
	}()
	out := []api.LedgerRecord{}
	left := c.CachedInfo().NumPending
	for left > 0 && len(out) < limit {
		batch, err := c.Fetch(int(min(left, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("ledger: list records: %w", engine.Wrap(err))
		}
		n := 0
		for m := range batch.Messages() {
			n++
			left--
			recs, err := decodeRecords(m.Data())
			if err != nil {
				return nil, fmt.Errorf("ledger: decode records %s: %w", m.Subject(), err)
			}
			for _, rec := range recs {
				if !rec.Time.Before(since) && len(out) < limit {
					out = append(out, rec)
				}
			}
		}
		if err := batch.Error(); err != nil {
			return nil, fmt.Errorf("ledger: list records: %w", engine.Wrap(err))
		}
		if n == 0 {
			break // purged meanwhile
		}
	}
	slices.SortStableFunc(out, func(a, b api.LedgerRecord) int { return a.Time.Compare(b.Time) })
	return out, nil
}

func (s *Scheduler) handleLedger(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	now := s.now().UTC()
	var since time.Time
	var err error
	if v := q.Get("since"); v != "" {
		if since, err = parseWhen("since", v, now); err != nil {
			api.WriteError(w, err)
			return
		}
	}
	limit := 1000
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100000 {
			api.WriteError(w, api.Invalid("limit", "%q: want 1–100000", v))
			return
		}
		limit = n
	}
	out, err := s.ledgerRecords(q.Get("function"), since, limit)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, out)
}
