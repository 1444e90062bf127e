package tui

import (
	"context"
	"errors"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/amberfn/amber/api"
)

// Source is how the console sees the cluster. *api.Client satisfies it
// (cmd/amber asserts so); tests use a fake.
type Source interface {
	// Stream follows the scheduler's stream from event seq since; the
	// channel closes when the connection breaks or ctx ends.
	Stream(ctx context.Context, since int64) (<-chan api.StreamMessage, error)
	// SetPool changes a function's pool and returns what the scheduler confirmed.
	SetPool(ctx context.Context, name string, change api.PoolChange) (*api.PoolStatus, error)
	// Invoke runs a function synchronously.
	Invoke(ctx context.Context, name string, payload []byte) (*api.InvokeResult, error)
	// Logs returns a function's most recent log lines, oldest first.
	Logs(ctx context.Context, name string, since time.Time, limit int) ([]api.LogRecord, error)
}

// Biller is the scheduler's bill, from its ledger. A Source that is also a
// Biller (as *api.Client is) gives the billing view real figures; without
// it the view estimates from the counters and says so.
type Biller interface {
	Bill(ctx context.Context, since, until time.Time, by string) (*api.Bill, error)
}

// Historian is the scheduler's per-minute history. A Source that is also
// a Historian (as *api.Client is) fills the latency windows, cold starts
// per minute and the rate sparkline with what happened before the console
// opened, fetched at every (re)connect.
type Historian interface {
	History(ctx context.Context, since time.Time, function string) (*api.History, error)
}

var (
	errNoSource    = errors.New("no source")
	errStreamEnded = errors.New("stream ended")
	errStale       = errors.New("no data from the scheduler for 5s")
)

const (
	backoffMin   = 250 * time.Millisecond
	backoffMax   = 8 * time.Second
	staleAfter   = 5 * time.Second // the scheduler sends a state every second
	renderEvery  = 100 * time.Millisecond
	clockEvery   = time.Second
	logsEvery    = 2 * time.Second
	billEvery    = 30 * time.Second
	flashFor     = 8 * time.Second
	logLimit     = 200
	eventKeep    = 500
	actionTimout = 10 * time.Second
)

// backoff is the wait before reconnect attempt n (1-based): 250 ms,
// doubling, at most 8 s.
func backoff(n int) time.Duration {
	d := backoffMin
	for i := 1; i < n && d < backoffMax; i++ {
		d *= 2
	}
	return min(d, backoffMax)
}

// Messages of the data flow. gen ties a message to one connection, so a
// message of a connection the console gave up on is ignored.
type (
	streamOpenMsg struct {
		gen int
		ch  <-chan api.StreamMessage
	}
	streamDataMsg struct {
		gen int
		msg api.StreamMessage
		ch  <-chan api.StreamMessage // to receive the next one
	}
	streamClosedMsg struct {
		gen int
		err error
	}
	reconnectMsg struct{ gen int }
	// renderMsg lets the view draw the data that arrived since the last
	// frame: data alone never redraws, so renders stay under 10 a second.
	renderMsg struct{}
	// clockMsg drives the watchdog, log tail and bill refresh, and the
	// reconnect countdown.
	clockMsg   struct{ t time.Time }
	poolSetMsg struct {
		name   string
		want   api.PoolChange
		status *api.PoolStatus
		err    error
	}
	invokeMsg struct {
		name    string
		payload string
		res     *api.InvokeResult
		err     error
		took    time.Duration
	}
	logsMsg struct {
		name string
		recs []api.LogRecord
		err  error
	}
	billMsg struct {
		period int
		bill   *api.Bill
		err    error
	}
	historyMsg struct {
		gen  int
		hist *api.History
		err  error
	}
)

// connect opens the stream. Its context is the connection's own, so that
// the watchdog can drop a silent connection.
func connect(ctx context.Context, src Source, gen int, since int64) tea.Cmd {
	return func() tea.Msg {
		if src == nil {
			return streamClosedMsg{gen: gen, err: errNoSource}
		}
		ch, err := src.Stream(ctx, since)
		if err == nil && ch == nil {
			err = errStreamEnded
		}
		if err != nil {
			return streamClosedMsg{gen: gen, err: err}
		}
		return streamOpenMsg{gen: gen, ch: ch}
	}
}

// receive waits for the stream's next message.
func receive(gen int, ch <-chan api.StreamMessage) tea.Cmd {
	return func() tea.Msg {
		m, ok := <-ch
		if !ok {
			return streamClosedMsg{gen: gen, err: errStreamEnded}
		}
		return streamDataMsg{gen: gen, msg: m, ch: ch}
	}
}

func setPoolCmd(ctx context.Context, src Source, name string, ch api.PoolChange) tea.Cmd {
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, actionTimout)
		defer cancel()
		st, err := src.SetPool(ctx, name, ch)
		if err == nil && st == nil {
			err = errors.New("scheduler confirmed nothing")
		}
		return poolSetMsg{name: name, want: ch, status: st, err: err}
	}
}

func invokeCmd(ctx context.Context, src Source, name, payload string, timeout time.Duration, now func() time.Time) tea.Cmd {
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		start := now()
		res, err := src.Invoke(ctx, name, []byte(payload))
		return invokeMsg{name: name, payload: payload, res: res, err: err, took: now().Sub(start)}
	}
}

func logsCmd(ctx context.Context, src Source, name string) tea.Cmd {
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, actionTimout)
		defer cancel()
		recs, err := src.Logs(ctx, name, time.Time{}, logLimit)
		return logsMsg{name: name, recs: recs, err: err}
	}
}

// Bill periods of the billing view.
var billPeriods = []struct {
	label string
	d     time.Duration
}{{"1h", time.Hour}, {"24h", 24 * time.Hour}, {"7d", 7 * 24 * time.Hour}, {"30d", 30 * 24 * time.Hour}}

func billCmd(ctx context.Context, b Biller, period int, now time.Time) tea.Cmd {
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, actionTimout)
		defer cancel()
		since := now.Add(-billPeriods[period].d).Truncate(time.Hour)
		bill, err := b.Bill(ctx, since, time.Time{}, "")
		if err == nil && bill == nil {
			err = errors.New("empty bill")
		}
		return billMsg{period: period, bill: bill, err: err}
	}
}

// historyCmd fetches the minutes the 15 minute window needs.
func historyCmd(ctx context.Context, h Historian, gen int, now time.Time) tea.Cmd {
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, actionTimout)
		defer cancel()
		hist, err := h.History(ctx, now.Add(-latKeep), "")
		return historyMsg{gen: gen, hist: hist, err: err}
	}
}

func renderLater() tea.Cmd {
	return tea.Tick(renderEvery, func(time.Time) tea.Msg { return renderMsg{} })
}

func clockTick() tea.Cmd {
	return tea.Tick(clockEvery, func(t time.Time) tea.Msg { return clockMsg{t: t} })
}
