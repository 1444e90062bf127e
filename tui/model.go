// Package tui is amber's operations console: a Bubble Tea program that
// polls the scheduler for the cluster state and draws agents and functions
// as live tables.
//
// The package is split k9s-style: rows.go turns an api.ClusterState into
// table rows (pure and testable), model.go holds the Bubble Tea model and
// its messages, and view.go renders the model with lipgloss.
package tui

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/amberfn/amber/api"
)

// Source feeds the console. *api.Client satisfies it.
type Source interface {
	State(ctx context.Context) (*api.ClusterState, error)
}

const (
	defaultInterval = time.Second
	// minFetchTimeout bounds one State call; a longer poll interval gives
	// the call as long as the interval.
	minFetchTimeout = 3 * time.Second
	defaultWidth    = 80
	defaultHeight   = 24
)

// errNoState is reported when a Source returns neither state nor error.
var errNoState = errors.New("source returned no state")

// Which table has the keyboard.
const (
	focusAgents = iota
	focusFunctions
	numTables
)

// Option configures a Model.
type Option func(*Model)

// WithInterval sets the poll interval (default 1s). Non-positive values
// are ignored.
func WithInterval(d time.Duration) Option {
	return func(m *Model) {
		if d > 0 {
			m.interval = d
		}
	}
}

// WithColor turns colour on or off. By default colour is on unless the
// NO_COLOR environment variable is set.
func WithColor(on bool) Option { return func(m *Model) { m.color = on } }

// WithClock sets the clock used to stamp updates (for tests).
func WithClock(now func() time.Time) Option {
	return func(m *Model) {
		if now != nil {
			m.now = now
		}
	}
}

// Messages.
type (
	// stateMsg carries the result of one State call. seq orders fetches so
	// that a slow, older answer never replaces a newer one.
	stateMsg struct {
		state *api.ClusterState
		err   error
		seq   int
	}
	// tickMsg asks for the next poll; only the tick with the current id
	// counts, so a manual refresh never doubles the poll loop.
	tickMsg struct{ id int }
)

// tableState is the cursor of one table. key is the name of the selected
// row, which the cursor follows when the data changes.
type tableState struct {
	cursor int
	key    string
}

// Model is the console's Bubble Tea model.
type Model struct {
	src      Source
	ctx      context.Context
	interval time.Duration
	color    bool
	now      func() time.Time

	width, height int

	state      *api.ClusterState // last good state; kept while disconnected
	err        error             // error of the last fetch, nil when connected
	lastUpdate time.Time         // when state was received (zero: never)

	agents    []row
	functions []row
	sum       summary

	focus  int
	tables [numTables]tableState

	keys keyMap
	help help.Model // footer; ShowAll is the full help toggled by ?

	tickID   int // id of the only tick that may start a poll
	fetchSeq int // seq of the newest fetch started
	applied  int // seq of the newest stateMsg applied
}

var _ tea.Model = Model{}

// New returns a console model reading from src.
func New(src Source, opts ...Option) Model {
	m := Model{
		src:      src,
		ctx:      context.Background(),
		interval: defaultInterval,
		color:    os.Getenv("NO_COLOR") == "",
		now:      time.Now,
		width:    defaultWidth,
		height:   defaultHeight,
		keys:     defaultKeyMap(),
		help:     newHelp(),
	}
	for _, o := range opts {
		o(&m)
	}
	return m
}

// Init starts the first poll at once.
func (m Model) Init() tea.Cmd { return m.fetch(0) }

// Update handles window sizes, keys, ticks and fetch results. It never
// blocks: State is called only inside the commands it returns.
func (m Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = max(msg.Width, 0), max(msg.Height, 0)
		return m, nil
	case tea.KeyMsg:
		return m.handleKey(msg)
	case tickMsg:
		if msg.id != m.tickID {
			return m, nil // superseded by a refresh
		}
		return m.startFetch()
	case stateMsg:
		if msg.seq < m.applied {
			return m, nil // an older fetch answered late
		}
		m.applied = msg.seq
		m.apply(msg)
		m.tickID++
		return m, m.tick(m.tickID)
	}
	return m, nil
}

func (m Model) handleKey(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	switch {
	case key.Matches(k, m.keys.Quit):
		return m, tea.Quit
	case key.Matches(k, m.keys.NextTable):
		m.focus = (m.focus + 1) % numTables
	case key.Matches(k, m.keys.Down):
		m.move(1)
	case key.Matches(k, m.keys.Up):
		m.move(-1)
	case key.Matches(k, m.keys.Top):
		m.moveTo(0)
	case key.Matches(k, m.keys.Bottom):
		m.moveTo(len(m.rows(m.focus)) - 1)
	case key.Matches(k, m.keys.Refresh):
		return m.startFetch()
	case key.Matches(k, m.keys.Help):
		m.help.ShowAll = !m.help.ShowAll
		desc := helpOpenDesc
		if m.help.ShowAll {
			desc = helpCloseDesc
		}
		m.keys.Help.SetHelp(m.keys.Help.Help().Key, desc)
	}
	return m, nil
}

// startFetch starts a poll now with the next sequence number.
func (m Model) startFetch() (tea.Model, tea.Cmd) {
	m.fetchSeq++
	return m, m.fetch(m.fetchSeq)
}

// fetch returns the command that calls the Source with a timeout.
func (m Model) fetch(seq int) tea.Cmd {
	src, parent := m.src, m.ctx
	timeout := max(m.interval, minFetchTimeout)
	return func() tea.Msg {
		if src == nil {
			return stateMsg{err: errNoState, seq: seq}
		}
		ctx, cancel := context.WithTimeout(parent, timeout)
		defer cancel()
		st, err := src.State(ctx)
		if err == nil && st == nil {
			err = errNoState
		}
		return stateMsg{state: st, err: err, seq: seq}
	}
}

func (m Model) tick(id int) tea.Cmd {
	return tea.Tick(m.interval, func(time.Time) tea.Msg { return tickMsg{id: id} })
}

// apply takes a fetch result in. An error keeps the last good data.
func (m *Model) apply(msg stateMsg) {
	if msg.err != nil {
		m.err = msg.err
		return
	}
	m.err = nil
	m.state = msg.state
	m.lastUpdate = m.now()
	m.agents = agentRows(msg.state)
	m.functions = functionRows(msg.state)
	m.sum = summarize(msg.state)
	m.tables[focusAgents] = follow(m.tables[focusAgents], m.agents)
	m.tables[focusFunctions] = follow(m.tables[focusFunctions], m.functions)
}

// follow keeps the cursor on the row with the same key after the rows
// changed; if that row is gone the cursor keeps its index, clamped.
func follow(t tableState, rows []row) tableState {
	if len(rows) == 0 {
		return tableState{}
	}
	if t.key != "" {
		for i, r := range rows {
			if r.key == t.key {
				t.cursor = i
				return t
			}
		}
	}
	t.cursor = min(max(t.cursor, 0), len(rows)-1)
	t.key = rows[t.cursor].key
	return t
}

func (m *Model) rows(table int) []row {
	if table == focusAgents {
		return m.agents
	}
	return m.functions
}

// move moves the cursor of the focused table by delta, within bounds.
func (m *Model) move(delta int) {
	m.moveTo(m.tables[m.focus].cursor + delta)
}

// moveTo puts the cursor of the focused table on row i, within bounds.
func (m *Model) moveTo(i int) {
	rows := m.rows(m.focus)
	if len(rows) == 0 {
		return
	}
	t := &m.tables[m.focus]
	t.cursor = min(max(i, 0), len(rows)-1)
	t.key = rows[t.cursor].key
}

// Run runs the console full-screen until q or ctrl+c is pressed or ctx
// ends; both are a normal exit and return nil.
func Run(ctx context.Context, src Source, opts ...Option) error {
	return run(ctx, src, opts, tea.WithAltScreen())
}

func run(ctx context.Context, src Source, opts []Option, popts ...tea.ProgramOption) error {
	m := New(src, opts...)
	m.ctx = ctx
	popts = append(popts, tea.WithContext(ctx))
	_, err := tea.NewProgram(m, popts...).Run()
	if err != nil && errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil {
		return nil
	}
	return err
}
