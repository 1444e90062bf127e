package scheduler

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/amberfn/amber/api"
)

// Per-minute history, its own bbolt file DATA/history.db so that its
// writes stay away from the registry and the ledger:
//
//	minutes/<uint64 BE unix s of the minute><name>   one function's minute (minuteRecord, JSON)
//
// Each finished invocation adds to its function's current minute in
// memory: counters (under the scheduler's lock, with the cumulative
// counters of the state stream) and a latency histogram per start kind
// (under the latency lock, with the cumulative histograms). A flush every
// few seconds and on Close writes the minutes that changed and deletes
// those older than the retention (24 hours), so the file holds at most
// 24 h × the functions that were invoked. The current minute and the two
// before stay in memory; older ones are read from the file.
var bucketMinutes = []byte("minutes")

const (
	minuteFlushEvery = 5 * time.Second
	minutesInMemory  = 2 // whole minutes kept in memory behind the current one
	// maxHistoryMinutes bounds one answer of GET /v1/history (function
	// minutes with activity): 15 minutes of 1,000 busy functions fit, a
	// day of all of them does not, and is refused rather than built.
	maxHistoryMinutes = 50_000
)

var errHistoryClosed = errors.New("history closed")

type minuteKey struct {
	min int64 // unix seconds of the minute's start
	fn  string
}

type minuteEntry struct {
	counts api.Counts
	lat    map[api.StartKind]*api.Histogram
	dirty  bool
}

// minuteLog keeps per-minute counters and latency histograms per function.
type minuteLog struct {
	db   *bolt.DB
	now  func() time.Time
	keep time.Duration
	log  *slog.Logger

	mu     sync.Mutex
	mem    map[minuteKey]*minuteEntry
	floor  int64 // minutes before it are complete and only in the file
	closed bool

	stop, done chan struct{}
}

type minuteLogOption func(*minuteLog)

func withMinuteClock(now func() time.Time) minuteLogOption {
	return func(l *minuteLog) { l.now = now }
}

func withMinuteKeep(d time.Duration) minuteLogOption {
	return func(l *minuteLog) { l.keep = d }
}

func withMinuteLogger(log *slog.Logger) minuteLogOption {
	return func(l *minuteLog) { l.log = log }
}

func minuteOf(t time.Time) int64 { return t.Unix() - t.Unix()%60 }

// openMinuteLog opens (or creates) the history file, drops minutes past
// the retention and loads the recent ones.
func openMinuteLog(path string, opts ...minuteLogOption) (_ *minuteLog, err error) {
	l := &minuteLog{now: time.Now, keep: api.HistoryKeep, log: slog.New(slog.DiscardHandler), mem: map[minuteKey]*minuteEntry{}}
	for _, o := range opts {
		o(l)
	}
	l.db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("history: open %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			l.db.Close()
		}
	}()
	if err := l.db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketMinutes)
		return err
	}); err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	if err := l.prune(); err != nil {
		return nil, err
	}
	l.floor = minuteOf(l.now()) - minutesInMemory*60
	err = l.db.View(func(tx *bolt.Tx) error {
		return scanMinutes(tx, l.floor, 1<<62, "", func(k minuteKey, e *minuteEntry) bool {
			l.mem[k] = e
			return true
		})
	})
	if err != nil {
		return nil, fmt.Errorf("history: load: %w", err)
	}
	return l, nil
}

// start flushes every few seconds until close.
func (l *minuteLog) start() {
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(l.done)
		t := time.NewTicker(minuteFlushEvery)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				if err := l.flush(); err != nil {
					l.log.Error("history: flush", "err", err.Error())
				}
			case <-l.stop:
				return
			}
		}
	}()
}

// close flushes and closes the file.
func (l *minuteLog) close() error {
	if l.stop != nil {
		close(l.stop)
		<-l.done
		l.stop = nil
	}
	err := l.flush()
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	return errors.Join(err, l.db.Close())
}

// entryLocked returns fn's entry for the current minute (never one before
// the in-memory floor, should the clock step back).
func (l *minuteLog) entryLocked(fn string) *minuteEntry {
	k := minuteKey{min: max(minuteOf(l.now()), l.floor), fn: fn}
	e := l.mem[k]
	if e == nil {
		e = &minuteEntry{}
		l.mem[k] = e
	}
	e.dirty = true
	return e
}

// count adds one finished invocation (see Scheduler.record).
func (l *minuteLog) count(fn string, kind api.StartKind, failed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entryLocked(fn)
	e.counts.Invocations++
	if failed {
		e.counts.Errors++
	}
	switch kind {
	case api.StartCold, api.StartRestore:
		e.counts.ColdStarts++
	case api.StartWarm:
		e.counts.WarmStarts++
	}
}

// throttle adds one 429.
func (l *minuteLog) throttle(fn string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entryLocked(fn).counts.Throttles++
}

// observe adds one latency in ms.
func (l *minuteLog) observe(fn string, kind api.StartKind, ms float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entryLocked(fn)
	if e.lat == nil {
		e.lat = map[api.StartKind]*api.Histogram{}
	}
	h := e.lat[kind]
	if h == nil {
		h = &api.Histogram{}
		e.lat[kind] = h
	}
	h.Observe(ms)
}

// memCut is a copy of the in-memory minutes from since on, for fn ("" for
// all), and the floor below which the file holds the rest.
type memCut struct {
	floor int64
	mins  map[minuteKey]*minuteEntry
}

// cut copies the counters, or (lat) the histograms, of the in-memory
// minutes: each is copied under the lock it is recorded under, and the
// scheduler's lock is not held for histograms.
func (l *minuteLog) cut(since int64, fn string, lat bool) memCut {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := memCut{floor: l.floor, mins: map[minuteKey]*minuteEntry{}}
	for k, e := range l.mem {
		if k.min < since || k.min < l.floor || (fn != "" && k.fn != fn) {
			continue
		}
		cp := &minuteEntry{counts: e.counts}
		if lat && len(e.lat) > 0 {
			cp.lat = make(map[api.StartKind]*api.Histogram, len(e.lat))
			for kind, h := range e.lat {
				cp.lat[kind] = h.Clone()
			}
		}
		c.mins[k] = cp
	}
	return c
}

// read returns the minutes in the file in [from, to) for fn ("" for
// all); more than limit of them is errHistoryTooBig.
func (l *minuteLog) read(from, to int64, fn string, limit int) (map[minuteKey]*minuteEntry, error) {
	out := map[minuteKey]*minuteEntry{}
	if from >= to {
		return out, nil
	}
	err := l.db.View(func(tx *bolt.Tx) error {
		return scanMinutes(tx, from, to, fn, func(k minuteKey, e *minuteEntry) bool {
			out[k] = e
			return len(out) <= limit
		})
	})
	if err != nil {
		return nil, fmt.Errorf("history: read: %w", err)
	}
	return out, nil
}

var errHistoryTooBig = errors.New("too much history")

// flush writes the minutes that changed, drops those past the retention,
// and moves the in-memory floor up.
func (l *minuteLog) flush() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return errHistoryClosed
	}
	type kv struct{ k, v []byte }
	var writes []kv
	for k, e := range l.mem {
		if !e.dirty {
			continue
		}
		v, err := json.Marshal(toRecord(e))
		if err != nil {
			l.mu.Unlock()
			return fmt.Errorf("history: encode: %w", err)
		}
		writes = append(writes, kv{minuteKeyBytes(k), v})
		e.dirty = false
	}
	l.mu.Unlock()

	err := l.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMinutes)
		for _, w := range writes {
			if err := b.Put(w.k, w.v); err != nil {
				return err
			}
		}
		return deleteBefore(b, minuteOf(l.now().Add(-l.keep)))
	})
	if err != nil {
		// Try again next time.
		l.mu.Lock()
		for _, w := range writes {
			if e := l.mem[parseMinuteKey(w.k)]; e != nil {
				e.dirty = true
			}
		}
		l.mu.Unlock()
		return fmt.Errorf("history: write: %w", err)
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	floor := minuteOf(l.now()) - minutesInMemory*60
	for k, e := range l.mem {
		if e.dirty && k.min < floor {
			floor = k.min // changed since the write: stays in memory
		}
	}
	if floor > l.floor {
		l.floor = floor
	}
	for k := range l.mem {
		if k.min < l.floor {
			delete(l.mem, k)
		}
	}
	return nil
}

// prune deletes the minutes past the retention.
func (l *minuteLog) prune() error {
	err := l.db.Update(func(tx *bolt.Tx) error {
		return deleteBefore(tx.Bucket(bucketMinutes), minuteOf(l.now().Add(-l.keep)))
	})
	if err != nil {
		return fmt.Errorf("history: prune: %w", err)
	}
	return nil
}

func deleteBefore(b *bolt.Bucket, min int64) error {
	c := b.Cursor()
	end := binary.BigEndian.AppendUint64(nil, uint64(max(min, 0)))
	for k, _ := c.First(); k != nil && bytes.Compare(k[:8], end) < 0; k, _ = c.Next() {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

func minuteKeyBytes(k minuteKey) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(k.min)), k.fn...)
}

func parseMinuteKey(b []byte) minuteKey {
	return minuteKey{min: int64(binary.BigEndian.Uint64(b[:8])), fn: string(b[8:])}
}

// scanMinutes calls f for every minute in [from, to) of fn ("" for all);
// f returning false stops it with errHistoryTooBig.
func scanMinutes(tx *bolt.Tx, from, to int64, fn string, f func(minuteKey, *minuteEntry) bool) error {
	c := tx.Bucket(bucketMinutes).Cursor()
	for k, v := c.Seek(binary.BigEndian.AppendUint64(nil, uint64(max(from, 0)))); k != nil; k, v = c.Next() {
		if len(k) < 8 {
			continue
		}
		mk := parseMinuteKey(k)
		if mk.min >= to {
			break
		}
		if fn != "" && mk.fn != fn {
			continue
		}
		var r minuteRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("minute %d %s: %w", mk.min, mk.fn, err)
		}
		if !f(mk, r.entry()) {
			return errHistoryTooBig
		}
	}
	return nil
}

// minuteRecord is a minute as stored: histograms sparse, as [bucket,
// count] pairs, since most of a minute's buckets are empty.
type minuteRecord struct {
	api.Counts
	Lat map[api.StartKind]sparseHist `json:"lat,omitempty"`
}

type sparseHist struct {
	Buckets [][2]int64 `json:"b"`
	Count   int64      `json:"n"`
	SumMs   float64    `json:"s"`
	MaxMs   float64    `json:"m"`
}

func toRecord(e *minuteEntry) minuteRecord {
	r := minuteRecord{Counts: e.counts}
	if len(e.lat) > 0 {
		r.Lat = make(map[api.StartKind]sparseHist, len(e.lat))
		for k, h := range e.lat {
			s := sparseHist{Count: h.Count, SumMs: h.SumMs, MaxMs: h.MaxMs}
			for i, c := range h.Counts {
				if c != 0 {
					s.Buckets = append(s.Buckets, [2]int64{int64(i), c})
				}
			}
			r.Lat[k] = s
		}
	}
	return r
}

func (r minuteRecord) entry() *minuteEntry {
	e := &minuteEntry{counts: r.Counts}
	if len(r.Lat) > 0 {
		e.lat = make(map[api.StartKind]*api.Histogram, len(r.Lat))
		for k, s := range r.Lat {
			h := &api.Histogram{Counts: make([]int64, api.HistBuckets), Count: s.Count, SumMs: s.SumMs, MaxMs: s.MaxMs}
			for _, b := range s.Buckets {
				if b[0] >= 0 && b[0] < api.HistBuckets {
					h.Counts[b[0]] = b[1]
				}
			}
			e.lat[k] = h
		}
	}
	return e
}

// history reads the minutes from since on, for fn ("" for every
// function), joined with the cumulative counters and histograms read at
// the same instant (each under the lock its minutes are recorded with).
func (s *Scheduler) history(since time.Time, fn string) (*api.History, error) {
	now := s.now()
	from := max(minuteOf(since), minuteOf(now.Add(-api.HistoryKeep)))

	totals := map[string]api.Counts{}
	s.mu.Lock()
	for name, st := range s.stats {
		if fn == "" || name == fn {
			totals[name] = api.CountsOf(st.FunctionStats)
		}
	}
	countCut := s.minutes.cut(from, fn, false)
	s.mu.Unlock()

	lat, latCut := s.latency.cut(from, fn)

	disk, err := s.minutes.read(from, max(countCut.floor, latCut.floor), fn, maxHistoryMinutes)
	if errors.Is(err, errHistoryTooBig) {
		return nil, api.Invalid("since", "more than %d function minutes since %s: ask for less time, or for one function",
			maxHistoryMinutes, time.Unix(from, 0).UTC().Format(time.RFC3339))
	}
	if err != nil {
		return nil, err
	}
	merged := map[minuteKey]*minuteEntry{}
	get := func(k minuteKey) *minuteEntry {
		e := merged[k]
		if e == nil {
			e = &minuteEntry{}
			merged[k] = e
		}
		return e
	}
	for k, e := range disk {
		if k.min < countCut.floor {
			get(k).counts = e.counts
		}
		if k.min < latCut.floor {
			get(k).lat = e.lat
		}
	}
	for k, e := range countCut.mins {
		get(k).counts = e.counts
	}
	for k, e := range latCut.mins {
		get(k).lat = e.lat
	}

	byFn := map[string]*api.FunctionHistory{}
	fh := func(name string) *api.FunctionHistory {
		h := byFn[name]
		if h == nil {
			h = &api.FunctionHistory{Function: name, Minutes: []api.MinuteStats{}}
			byFn[name] = h
		}
		return h
	}
	for name, c := range totals {
		fh(name).Totals = c
	}
	for name, l := range lat {
		fh(name).Latency = l
	}
	for k, e := range merged {
		if e.counts == (api.Counts{}) && len(e.lat) == 0 {
			continue
		}
		h := fh(k.fn)
		h.Minutes = append(h.Minutes, api.MinuteStats{Minute: time.Unix(k.min, 0).UTC(), Counts: e.counts, Latency: e.lat})
	}
	out := &api.History{Time: now.UTC(), Since: time.Unix(from, 0).UTC(), Functions: []api.FunctionHistory{}}
	for _, h := range byFn {
		slices.SortFunc(h.Minutes, func(a, b api.MinuteStats) int { return a.Minute.Compare(b.Minute) })
		out.Functions = append(out.Functions, *h)
	}
	slices.SortFunc(out.Functions, func(a, b api.FunctionHistory) int { return strings.Compare(a.Function, b.Function) })
	return out, nil
}

// handleHistory serves GET /v1/history?since=15m&function=NAME.
func (s *Scheduler) handleHistory(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	now := s.now().UTC()
	since := now.Add(-15 * time.Minute)
	if v := q.Get("since"); v != "" {
		var err error
		if since, err = parseWhen("since", v, now); err != nil {
			api.WriteError(w, err)
			return
		}
	}
	fn := q.Get("function")
	if fn != "" {
		if err := api.ValidateName("function", fn); err != nil {
			api.WriteError(w, err)
			return
		}
	}
	h, err := s.history(since, fn)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, h)
}
