package scheduler

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/amberfn/amber/api"
)

// The ledger is its own bbolt file, DATA/ledger.db, so its fsyncs and its
// growth stay away from the registry:
//
//	records/<uint64 BE unix ns><uint64 BE seq>   JSON api.LedgerRecord, one per finished invocation
//	hourly/<uint64 BE unix s of the hour><name>  JSON api.Usage (sums, no costs) per function per hour
//	meta/wal_applied                             uint64 BE: how much of ledger.wal is in the buckets
//
// Every finished invocation (sync, event, schedule) is written to the
// write-ahead log DATA/ledger.wal (ledgerwal.go) and made durable there
// before its response is written to the caller, so an answer a client
// received is never missing from the ledger. Concurrent invocations share
// an append and its fdatasync (group commit). The ledger loop applies the
// log — records and hourly sums, with the applied offset, in one bbolt
// transaction — every 200 ms, every 512 records, and before every read, and
// empties it once it passes 4 MB; opening the ledger applies whatever a
// crash left unapplied. One fdatasync of an append costs about half of a
// bbolt commit (two fsyncs and the page writes), and bbolt's commits now
// carry hundreds of records each.
//
// Provisioned warmth — idle instance time of functions with min_warm > 0,
// integrated from heartbeats — is added to the hourly sums every 10
// seconds and on Close (a crash can lose up to those 10 seconds of
// warmth, never an invocation).
//
// Compaction: raw records older than the retention (default 30 days) are
// deleted once an hour. The hourly sums already hold them, and they are
// kept (one small value per function per hour), so bills over any range
// stay exact; only the per-invocation listing (GET /v1/ledger) forgets.
var (
	bucketLedgerRecords = []byte("records")
	bucketLedgerHourly  = []byte("hourly")
	bucketLedgerMeta    = []byte("meta")
	keyWALApplied       = []byte("wal_applied")
)

const (
	walApplyEvery   = 200 * time.Millisecond
	walApplyRecords = 512
	walMaxSize      = 4 << 20
)

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
	db  *bolt.DB
	wal *ledgerWAL

	// Group commit. A writer that finds no append going on leads one, in
	// its own goroutine: it appends every queued record with one
	// fdatasync. The others queue and wait for their leader. A leader that
	// finds more queued after its round hands the lead to the ledger loop
	// (lead), so its own answer waits for no one else's.
	qmu        sync.Mutex
	queue      []*ledgerWrite
	leading    bool
	closed     bool
	pending    []api.LedgerRecord // in the log, not yet applied to db
	pendingEnd int64              // the log's end after pending

	walMu   sync.Mutex // the log file: appends and resets
	applyMu sync.Mutex // one apply at a time

	lead chan struct{} // the loop takes the lead (buffered)
	kick chan struct{} // the loop applies now (buffered)
	stop chan struct{}
	done chan struct{}

	mu   sync.Mutex
	warm map[string]*warmAcc
}

type warmAcc struct{ seconds, mbSeconds, unknownSeconds float64 }

type ledgerWrite struct {
	rec  api.LedgerRecord
	done chan error
}

var errLedgerClosed = errors.New("ledger closed")

// openLedger opens DATA/ledger.db and DATA/ledger.wal and applies what the
// log holds beyond the applied offset (records a crash left unapplied).
func openLedger(dir string, log *slog.Logger) (_ *ledger, err error) {
	path := filepath.Join(dir, "ledger.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("ledger: open %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			db.Close()
		}
	}()
	var applied int64
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketLedgerRecords, bucketLedgerHourly, bucketLedgerMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if v := tx.Bucket(bucketLedgerMeta).Get(keyWALApplied); len(v) == 8 {
			applied = int64(binary.BigEndian.Uint64(v))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: init %s: %w", path, err)
	}
	wal, err := openWAL(filepath.Join(dir, "ledger.wal"))
	if err != nil {
		return nil, err
	}
	l := &ledger{db: db, wal: wal, lead: make(chan struct{}, 1), kick: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}), warm: map[string]*warmAcc{}}
	recs, dropped, err := wal.readFrom(applied)
	if err == nil && dropped > 0 {
		log.Warn("ledger: torn record at the end of the log dropped (written, never acknowledged)", "bytes", dropped)
	}
	if err == nil && (len(recs) > 0 || applied != wal.size) {
		log.Info("ledger: applying the log after a crash", "records", len(recs))
		if err = l.commit(recs, wal.size); err == nil {
			l.pendingEnd = wal.size
			err = l.apply() // empties the log if it is large
		}
	}
	if err != nil {
		wal.close()
		return nil, fmt.Errorf("ledger: recover %s: %w", wal.path, err)
	}
	return l, nil
}

// write makes rec durable in the log, blocking until it is on disk.
func (l *ledger) write(rec api.LedgerRecord) error {
	w := &ledgerWrite{rec: rec, done: make(chan error, 1)}
	l.qmu.Lock()
	if l.closed {
		l.qmu.Unlock()
		return errLedgerClosed
	}
	l.queue = append(l.queue, w)
	if !l.leading {
		l.leading = true
		l.appendQueuedLocked()
		if len(l.queue) > 0 {
			signal(l.lead) // leading stays set: the loop drains the queue
		} else {
			l.leading = false
		}
		if len(l.pending) >= walApplyRecords {
			signal(l.kick)
		}
	}
	l.qmu.Unlock()
	return <-w.done
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// appendQueuedLocked appends the queued records as one group and answers
// their writers. Called by the leader with qmu held; qmu is released
// while the log is written.
func (l *ledger) appendQueuedLocked() {
	batch := l.queue
	l.queue = nil
	l.qmu.Unlock()
	recs := make([]api.LedgerRecord, len(batch))
	for i, w := range batch {
		recs[i] = w.rec
	}
	l.walMu.Lock()
	err := l.wal.append(recs, true)
	end := l.wal.size
	l.walMu.Unlock()
	l.qmu.Lock()
	if err == nil {
		l.pending = append(l.pending, recs...)
		l.pendingEnd = end
	}
	for _, w := range batch {
		w.done <- err
	}
}

// drain appends until the queue is empty and gives up the lead (the
// ledger loop, after a leader handed it over).
func (l *ledger) drain() {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	for len(l.queue) > 0 {
		l.appendQueuedLocked()
	}
	l.leading = false
}

// sync applies every logged record to db, so that reads see them.
func (l *ledger) sync() error {
	l.qmu.Lock()
	closed := l.closed
	l.qmu.Unlock()
	if closed {
		return nil // Close applied everything
	}
	return l.apply()
}

// apply commits the pending records to db with the log's end as the
// applied offset, then empties the log when it has grown large.
func (l *ledger) apply() error {
	l.applyMu.Lock()
	defer l.applyMu.Unlock()
	l.qmu.Lock()
	recs, end := l.pending, l.pendingEnd
	l.pending = nil
	l.qmu.Unlock()
	if len(recs) > 0 {
		if err := l.commit(recs, end); err != nil {
			l.qmu.Lock()
			l.pending = append(recs, l.pending...) // tried again next time
			l.qmu.Unlock()
			return err
		}
	}
	if end < walMaxSize {
		return nil
	}
	// Empty the log, unless records were appended since (next time, then).
	// Appends wait meanwhile. Truncate first: a crash before the offset is
	// reset leaves an offset past the end of an empty log, which
	// openLedger reads as "all applied".
	l.walMu.Lock()
	defer l.walMu.Unlock()
	if l.wal.size != end {
		return nil
	}
	if err := l.wal.reset(); err != nil {
		return err
	}
	l.qmu.Lock()
	l.pendingEnd = 0
	l.qmu.Unlock()
	return l.commit(nil, 0)
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

func hourKey(hour time.Time, function string) []byte {
	return append(u64(uint64(hour.Unix())), function...)
}

// addUsage adds delta into the hourly sums of (hour, function) inside tx.
func addUsage(tx *bolt.Tx, hour time.Time, function string, delta api.Usage) error {
	b := tx.Bucket(bucketLedgerHourly)
	k := hourKey(hour, function)
	var u api.Usage
	if v := b.Get(k); v != nil {
		if err := json.Unmarshal(v, &u); err != nil {
			return fmt.Errorf("decode hourly sums of %q: %w", function, err)
		}
	}
	u.Add(delta)
	data, err := json.Marshal(u)
	if err != nil {
		return err
	}
	return b.Put(k, data)
}

type hourFn struct {
	hour int64
	fn   string
}

// commit writes a batch of records, their hourly sums and the log offset
// they end at in one transaction.
func (l *ledger) commit(recs []api.LedgerRecord, walApplied int64) error {
	return l.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketLedgerMeta).Put(keyWALApplied, u64(uint64(walApplied))); err != nil {
			return err
		}
		rb := tx.Bucket(bucketLedgerRecords)
		sums := map[hourFn]*api.Usage{}
		for _, r := range recs {
			seq, err := rb.NextSequence()
			if err != nil {
				return err
			}
			data, err := json.Marshal(r)
			if err != nil {
				return err
			}
			if err := rb.Put(append(u64(uint64(r.Time.UnixNano())), u64(seq)...), data); err != nil {
				return err
			}
			if r.StartKind == "" {
				// No agent answered (it died mid-call, replied 5xx, or was
				// unreachable): the record stays in the listing, but a
				// request the platform failed is not billed.
				continue
			}
			k := hourFn{r.Time.Truncate(time.Hour).Unix(), r.Function}
			u := sums[k]
			if u == nil {
				u = &api.Usage{}
				sums[k] = u
			}
			u.Requests++
			if r.Error {
				u.Errors++
			}
			if r.StartKind == api.StartCold || r.StartKind == api.StartRestore {
				u.ColdStarts++
			}
			u.BilledMs += r.BilledMs
			u.GBSeconds += r.GBSeconds
		}
		for k, u := range sums {
			if err := addUsage(tx, time.Unix(k.hour, 0).UTC(), k.fn, *u); err != nil {
				return err
			}
		}
		return nil
	})
}

// ledgerLoop is the ledger's background writer: it takes the lead of
// group appends under load, applies the log to db, flushes warmth and
// compacts, until the ledger is closed.
func (s *Scheduler) ledgerLoop() {
	l := s.ledger
	defer close(l.done)
	flush := time.NewTicker(s.bgCfg.warmthFlush)
	defer flush.Stop()
	applyTick := time.NewTicker(walApplyEvery)
	defer applyTick.Stop()
	apply := func() {
		if err := l.apply(); err != nil {
			s.log.Error("ledger: apply the log", "err", err.Error())
		}
	}
	s.compactLedger()
	lastCompact := time.Now()
	for {
		select {
		case <-l.lead:
			l.drain()
		case <-l.kick:
			apply()
		case <-applyTick.C:
			apply()
		case <-flush.C:
			s.flushWarmth()
			if time.Since(lastCompact) > time.Hour {
				s.compactLedger()
				lastCompact = time.Now()
			}
		case <-l.stop:
			l.qmu.Lock()
			l.closed = true // no new writes
			l.qmu.Unlock()
			// A leader in the middle of its round either finishes with
			// an empty queue or hands the rest over.
			for {
				select {
				case <-l.lead:
					l.drain()
					continue
				default:
				}
				l.qmu.Lock()
				leading := l.leading
				l.qmu.Unlock()
				if !leading {
					break
				}
				time.Sleep(time.Millisecond)
			}
			apply()
			s.flushWarmth()
			return
		}
	}
}

func (s *Scheduler) ledgerClose() {
	l := s.ledger
	if l == nil {
		return
	}
	close(l.stop)
	<-l.done
	if err := l.db.Close(); err != nil {
		s.log.Warn("close ledger", "err", err.Error())
	}
	if err := l.wal.close(); err != nil {
		s.log.Warn("close ledger log", "err", err.Error())
	}
}

// flushWarmth bills the idle time gathered since the last flush for the
// functions that keep min_warm instances (provisioned warmth).
func (s *Scheduler) flushWarmth() {
	warm := s.ledger.takeWarmth()
	if len(warm) == 0 {
		return
	}
	hour := s.now().UTC().Truncate(time.Hour)
	type item struct {
		fn string
		u  api.Usage
	}
	var items []item
	for name, a := range warm {
		p, err := s.reg.pool(name)
		if err != nil || s.effectiveMinWarm(name, p) == 0 {
			continue
		}
		mbs := a.mbSeconds
		if a.unknownSeconds > 0 {
			if fn, err := s.reg.latest(name); err == nil {
				mbs += a.unknownSeconds * float64(fn.MemoryMB)
			}
		}
		items = append(items, item{name, api.Usage{WarmthSeconds: a.seconds, WarmthGBSeconds: mbs / 1024}})
	}
	if len(items) == 0 {
		return
	}
	err := s.ledger.db.Update(func(tx *bolt.Tx) error {
		for _, it := range items {
			if err := addUsage(tx, hour, it.fn, it.u); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.log.Error("ledger: write warmth", "err", err.Error())
	}
}

// compactLedger drops raw records older than the retention; their hourly
// sums stay.
func (s *Scheduler) compactLedger() {
	cutoff := u64(uint64(s.now().Add(-s.bgCfg.retention).UnixNano()))
	total := 0
	for {
		n := 0
		err := s.ledger.db.Update(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketLedgerRecords).Cursor()
			for k, _ := c.First(); k != nil && string(k[:8]) < string(cutoff) && n < 10000; k, _ = c.Next() {
				if err := c.Delete(); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		total += n
		if err != nil {
			s.log.Error("ledger: compaction", "err", err.Error())
			return
		}
		if n < 10000 {
			break
		}
	}
	if total > 0 {
		s.log.Info("ledger compacted", "records_dropped", total, "retention", s.bgCfg.retention)
	}
}

// ledgerInvocation writes the record of a finished invocation. It blocks
// until the record is on disk; a failure is logged, not returned: the
// invocation already ran.
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
	if err := s.ledger.write(rec); err != nil {
		s.log.Error("ledger: record lost", "function", fn.Name, "request_id", reqID, "err", err.Error())
	}
}

// readHourly returns the hourly sums in [from, to), by hour then function.
func (s *Scheduler) readHourly(from, to time.Time) ([]api.Usage, error) {
	if err := s.ledger.sync(); err != nil {
		return nil, err
	}
	var out []api.Usage
	err := s.ledger.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketLedgerHourly).Cursor()
		for k, v := c.Seek(u64(uint64(max(from.Unix(), 0)))); k != nil; k, v = c.Next() {
			if len(k) < 8 {
				continue
			}
			h := int64(binary.BigEndian.Uint64(k[:8]))
			if h >= to.Unix() {
				break
			}
			var u api.Usage
			if err := json.Unmarshal(v, &u); err != nil {
				return err
			}
			u.Period = time.Unix(h, 0).UTC()
			u.Function = string(k[8:])
			out = append(out, u)
		}
		return nil
	})
	return out, err
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

// ledgerRecords lists raw records from since, oldest first, at most limit.
func (s *Scheduler) ledgerRecords(function string, since time.Time, limit int) ([]api.LedgerRecord, error) {
	if err := s.ledger.sync(); err != nil {
		return nil, err
	}
	out := []api.LedgerRecord{}
	err := s.ledger.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketLedgerRecords).Cursor()
		for k, v := c.Seek(u64(uint64(max(since.UnixNano(), 0)))); k != nil && len(out) < limit; k, v = c.Next() {
			var rec api.LedgerRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return err
			}
			if function == "" || rec.Function == function {
				out = append(out, rec)
			}
		}
		return nil
	})
	return out, err
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
