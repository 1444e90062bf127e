package agent

import (
	"context"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/amberfn/amber/api"
)

// Bounds on what the agent keeps of a function's log, so a function that
// floods its output cannot grow the agent without bound.
const (
	maxLogRecords = api.MaxLogLines // per function
	maxLogBytes   = 1 << 20         // per function, text only
	maxLogLine    = 8 << 10         // longer lines are cut
)

// logStore keeps the recent log lines of each function in a ring.
type logStore struct {
	mu  sync.Mutex
	fns map[string]*logRing
}

type logRing struct {
	recs  []api.LogRecord // oldest first
	bytes int
}

func newLogStore() *logStore { return &logStore{fns: map[string]*logRing{}} }

// add appends a record, cutting an over-long line, repairing invalid
// UTF-8, and dropping the oldest records beyond the bounds. It returns the
// record as kept.
func (s *logStore) add(r api.LogRecord) api.LogRecord {
	if len(r.Text) > maxLogLine {
		r.Text = r.Text[:maxLogLine] + " …[cut]"
	}
	r.Text = strings.ToValidUTF8(r.Text, "\uFFFD")
	s.mu.Lock()
	defer s.mu.Unlock()
	ring := s.fns[r.Function]
	if ring == nil {
		ring = &logRing{}
		s.fns[r.Function] = ring
	}
	ring.recs = append(ring.recs, r)
	ring.bytes += len(r.Text)
	if len(ring.recs) <= maxLogRecords && ring.bytes <= maxLogBytes {
		return r
	}
	// Over a bound: drop the oldest, an eighth more than needed, so the
	// copy below happens once per many lines rather than on every line.
	drop := 0
	for len(ring.recs)-drop > maxLogRecords || ring.bytes > maxLogBytes {
		ring.bytes -= len(ring.recs[drop].Text)
		drop++
	}
	for extra := len(ring.recs) / 8; extra > 0 && drop < len(ring.recs)-1; extra-- {
		ring.bytes -= len(ring.recs[drop].Text)
		drop++
	}
	ring.recs = append(ring.recs[:0:0], ring.recs[drop:]...)
	return r
}

// since returns up to limit of the newest records of fn after t.
func (s *logStore) since(fn string, t time.Time, limit int) []api.LogRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	ring := s.fns[fn]
	if ring == nil {
		return []api.LogRecord{}
	}
	i := sort.Search(len(ring.recs), func(i int) bool { return ring.recs[i].Time.After(t) })
	out := ring.recs[i:]
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return append([]api.LogRecord{}, out...)
}

// lines splits a chunk of runtime output into lines; a trailing partial
// line is its own line (amber-init forwards output as it reads it).
func lines(b []byte) []string {
	s := strings.TrimRight(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// functionOutput keeps a line of a function's output and, when the agent
// logs at debug level (AMBER_LOG=debug), writes it to the agent's log as
// well. At info level it costs one Enabled check.
func (a *Agent) functionOutput(r api.LogRecord) {
	r = a.logs.add(r)
	if !a.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	a.log.LogAttrs(context.Background(), slog.LevelDebug, "function output",
		slog.String("function", r.Function), slog.Int("version", r.Version),
		slog.String("instance", r.Instance), slog.String("request_id", r.RequestID),
		slog.String("stream", r.Stream), slog.String("text", r.Text))
}
