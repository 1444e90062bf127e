// Package tui is amber's operations console: a Bubble Tea program that
// follows the scheduler's stream and shows the cluster k9s-style, in views
// (overview, functions, pools, latency, billing, events, a function's
// drill-down) with a command palette, filters, sorting and actions on a
// function's warm pool.
//
// The package is split in three: the data layer (rows.go, stats.go,
// cost.go) turns api types and the console's history into table rows and
// figures, pure and testable; the model (model.go, source.go, keys.go)
// holds the state, the data flow and the keys; the view (view.go,
// views.go) renders the model with lipgloss.
package tui

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/cursor"
	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/amberfn/amber/api"
)

const (
	defaultWidth  = 80
	defaultHeight = 24
)

// Views.
type viewID int

const (
	viewOverview viewID = iota
	viewFunctions
	viewPools
	viewLatency
	viewBill
	viewEvents
	viewDetail
	numViews
)

var viewTitles = [numViews]string{"overview", "functions", "pools", "latency", "billing", "events", "function"}

// Tables.
const (
	tblAgents = iota
	tblTop
	tblFunctions
	tblPools
	tblBill
	tblEvents
	tblLogs
	tblInstances
	numTables
)

// viewPanes are the tables of each view, in tab order.
var viewPanes = [numViews][]int{
	viewOverview:  {tblAgents, tblTop},
	viewFunctions: {tblFunctions},
	viewPools:     {tblPools},
	viewLatency:   nil,
	viewBill:      {tblBill},
	viewEvents:    {tblEvents, tblLogs},
	viewDetail:    {tblInstances, tblLogs},
}

// fnTables are the tables whose rows are functions.
var fnTables = map[int]bool{tblTop: true, tblFunctions: true, tblPools: true, tblBill: true}

// commands of the palette; the first name is the canonical one.
var commands = []struct {
	names []string
	view  viewID
	pane  int
	desc  string
}{
	{[]string{"fn", "functions"}, viewFunctions, 0, "functions"},
	{[]string{"agents", "overview", "ov"}, viewOverview, 0, "agents, top functions"},
	{[]string{"pools"}, viewPools, 0, "warm pools by agent"},
	{[]string{"lat", "latency"}, viewLatency, 0, "latency histograms"},
	{[]string{"bill", "billing"}, viewBill, 0, "cost by function"},
	{[]string{"events", "logs"}, viewEvents, 0, "events and log tail"},
	{[]string{"help"}, -1, 0, "keys"},
	{[]string{"quit"}, -1, 0, "leave"},
}

// Option configures a Model.
type Option func(*Model)

// WithColor turns colour on or off. By default colour is on unless the
// NO_COLOR environment variable is set.
func WithColor(on bool) Option { return func(m *Model) { m.color = on } }

// WithReadOnly disables every change: +, -, e and i only say so.
func WithReadOnly(on bool) Option { return func(m *Model) { m.readOnly = on } }

// WithClock sets the clock (for tests).
func WithClock(now func() time.Time) Option {
	return func(m *Model) {
		if now != nil {
			m.now = now
		}
	}
}

// WithPrices sets the prices of the estimates (default: AWS Lambda x86).
func WithPrices(p api.Prices) Option { return func(m *Model) { m.prices = p } }

// Connection status.
const (
	connConnecting = iota
	connConnected
	connReconnecting
)

type connState struct {
	gen      int
	status   int
	attempt  int // failed attempts in a row
	err      error
	retryAt  time.Time
	lastData time.Time
	// cancel ends the current connection; shared by the model's copies
	// (Init runs on a copy).
	cancel *context.CancelFunc
}

// tableState is one table's cursor, sort and filter. key is the selected
// row's key, which the cursor follows when the data changes.
type tableState struct {
	cursor  int
	key     string
	sortCol int // -1: the rows' own order
	desc    bool
	filter  string
}

// Prompt kinds.
const (
	promptNone = iota
	promptCommand
	promptFilter
	promptInvoke
)

type prompt struct {
	kind  int
	in    textinput.Model
	table int    // filter: the table filtered
	fn    string // invoke: the function
	prev  string // filter: the filter before, restored by esc
}

// poolForm edits min warm, max and keep-alive.
type poolForm struct {
	fn     string
	fields [3]textinput.Model
	focus  int
	err    string
	orig   api.PoolSettings
}

var formLabels = [3]string{"min warm", "max instances", "keep-alive"}

type flash struct {
	text string
	tone tone
	at   time.Time
}

type invokeView struct {
	name    string
	payload string
	res     *api.InvokeResult
	err     error
	took    time.Duration
}

// confirmed is a pool value the scheduler confirmed, shown until the
// stream's states catch up (or for a few seconds).
type confirmed struct {
	settings api.PoolSettings
	until    time.Time
}

// renderCache keeps the last frame so that View is cheap when nothing
// visible changed; it is shared by the copies of a model.
type renderCache struct {
	seq     uint64 // last frame id handed out
	frame   uint64 // frame id of view
	w, h    int
	view    string
	renders int // frames actually drawn (tests count them)
}

func (c *renderCache) next() uint64 { c.seq++; return c.seq }

// Model is the console's Bubble Tea model.
type Model struct {
	src      Source
	ctx      context.Context
	color    bool
	readOnly bool
	now      func() time.Time
	prices   api.Prices

	width, height int

	conn       connState
	lastSeq    int64
	state      *api.ClusterState
	lastUpdate time.Time
	paused     bool
	held       *api.ClusterState
	heldN      int
	hist       *history
	events     []api.Event
	sum        summary
	kpi        kpis
	confirmed  map[string]confirmed
	pending    map[string]int // min_warm asked for and not yet confirmed

	rows   [numTables][]row
	tables [numTables]tableState
	view   viewID
	back   []viewID
	pane   [numViews]int

	detailFn  string
	selFn     string // the function of the last function row the cursor was on
	latFn     string // "" is every function
	latWindow int

	billPeriod int
	bill       *api.Bill
	billErr    error
	billBusy   bool
	billAt     time.Time

	logs     []api.LogRecord
	logsFn   string
	logsErr  error
	logsBusy bool
	logsAt   time.Time

	prompt   prompt
	form     *poolForm
	flash    flash
	invoke   *invokeView
	showHelp bool

	keys keyMap
	help help.Model

	cache         *renderCache
	frame         uint64
	renderPending bool

	in          intake // what the tables were built from (intake.go)
	fullRebuild bool   // build every table from scratch on each state (the benchmarks' baseline)
}

var _ tea.Model = Model{}

// New returns a console model reading from src.
func New(src Source, opts ...Option) Model {
	m := Model{
		src:        src,
		ctx:        context.Background(),
		color:      os.Getenv("NO_COLOR") == "",
		now:        time.Now,
		prices:     api.DefaultPrices(),
		width:      defaultWidth,
		height:     defaultHeight,
		hist:       newHistory(),
		confirmed:  map[string]confirmed{},
		pending:    map[string]int{},
		keys:       defaultKeyMap(),
		help:       newHelp(),
		cache:      &renderCache{},
		conn:       connState{cancel: new(context.CancelFunc)},
		latWindow:  1,
		billPeriod: 1,
	}
	for t := range m.tables {
		m.tables[t].sortCol = 0
	}
	m.tables[tblTop] = tableState{sortCol: topColRate, desc: true}
	m.tables[tblBill] = tableState{sortCol: billColCost, desc: true}
	m.tables[tblEvents].sortCol = -1
	m.tables[tblLogs].sortCol = -1
	m.tables[tblInstances].sortCol = insColAgent
	for _, o := range opts {
		o(&m)
	}
	m.frame = m.cache.next()
	return m
}

// Init opens the stream and starts the clock.
func (m Model) Init() tea.Cmd {
	return tea.Batch(m.openStream(), clockTick())
}

// openStream starts connection m.conn.gen with a context of its own.
func (m *Model) openStream() tea.Cmd {
	ctx, cancel := context.WithCancel(m.ctx)
	if m.conn.cancel != nil && *m.conn.cancel != nil {
		(*m.conn.cancel)()
	}
	*m.conn.cancel = cancel
	return connect(ctx, m.src, m.conn.gen, m.lastSeq)
}

// touch marks the screen as changed: the next View draws a new frame.
func (m *Model) touch() { m.frame = m.cache.next() }

// Update handles every message. It never blocks: the Source is called
// only inside the commands it returns.
func (m Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = max(msg.Width, 0), max(msg.Height, 0)
		m.touch()
		return m, nil
	case tea.KeyMsg:
		m.touch()
		return m.handleKey(msg)
	case streamOpenMsg:
		if msg.gen != m.conn.gen {
			return m, nil
		}
		m.conn.status, m.conn.err = connConnected, nil
		m.conn.lastData = m.now()
		m.touch()
		next := receive(msg.gen, msg.ch)
		if h, ok := m.src.(Historian); ok {
			return m, tea.Batch(next, historyCmd(m.ctx, h, msg.gen, m.now()))
		}
		return m, next
	case historyMsg:
		if msg.gen != m.conn.gen || msg.err != nil || msg.hist == nil {
			return m, nil // without history the windows start when the console does
		}
		m.hist.seed(msg.hist)
		if m.state != nil && !m.paused {
			m.rebuild()
		}
		return m, m.scheduleRender()
	case streamDataMsg:
		if msg.gen != m.conn.gen {
			return m, nil
		}
		m.conn.lastData = m.now()
		m.conn.attempt, m.conn.err = 0, nil
		if m.conn.status != connConnected {
			m.conn.status = connConnected
		}
		m.ingest(msg.msg)
		var next tea.Cmd
		if msg.ch != nil {
			next = receive(msg.gen, msg.ch)
		}
		return m, tea.Batch(next, m.scheduleRender())
	case streamClosedMsg:
		if msg.gen != m.conn.gen {
			return m, nil
		}
		return m.lost(msg.err)
	case reconnectMsg:
		if msg.gen != m.conn.gen || m.conn.status == connConnected {
			return m, nil
		}
		return m, m.openStream()
	case renderMsg:
		m.renderPending = false
		m.touch()
		return m, nil
	case clockMsg:
		return m.onClock()
	case poolSetMsg:
		m.touch()
		return m.onPoolSet(msg), nil
	case invokeMsg:
		m.touch()
		m.invoke = &invokeView{name: msg.name, payload: msg.payload, res: msg.res, err: msg.err, took: msg.took}
		m.flash = flash{}
		return m, nil
	case logsMsg:
		m.logsBusy = false
		if msg.name == m.logTarget() {
			m.logs, m.logsErr, m.logsFn = msg.recs, msg.err, msg.name
			if msg.err == nil {
				m.rows[tblLogs] = logRows(msg.recs)
				m.follow(tblLogs)
			}
			return m, m.scheduleRender()
		}
		return m, nil
	case billMsg:
		m.billBusy = false
		if msg.period == m.billPeriod {
			m.bill, m.billErr = msg.bill, msg.err
			m.rebuildBill()
			return m, m.scheduleRender()
		}
		return m, nil
	}
	return m, nil
}

// scheduleRender asks for a frame in 100 ms unless one is already asked for.
func (m *Model) scheduleRender() tea.Cmd {
	if m.renderPending {
		return nil
	}
	m.renderPending = true
	return renderLater()
}

// lost handles a broken stream: retry after a backoff.
func (m Model) lost(err error) (tea.Model, tea.Cmd) {
	if c := *m.conn.cancel; c != nil {
		c()
	}
	m.conn.gen++
	m.conn.attempt++
	m.conn.status = connReconnecting
	m.conn.err = err
	wait := backoff(m.conn.attempt)
	m.conn.retryAt = m.now().Add(wait)
	m.touch()
	gen := m.conn.gen
	return m, tea.Tick(wait, func(time.Time) tea.Msg { return reconnectMsg{gen: gen} })
}

// ingest takes one stream message in. While paused, states are held.
func (m *Model) ingest(sm api.StreamMessage) {
	for _, e := range sm.Events {
		m.lastSeq = max(m.lastSeq, e.Seq)
	}
	if m.paused {
		if sm.State != nil {
			m.held = sm.State
			m.heldN++
		}
		m.addEvents(sm.Events, false)
		return
	}
	m.addEvents(sm.Events, true)
	if sm.State != nil {
		m.apply(sm.State)
	}
}

func (m *Model) addEvents(evs []api.Event, rebuild bool) {
	if len(evs) > 0 {
		m.events = append(m.events, evs...)
		if len(m.events) > eventKeep {
			m.events = append([]api.Event(nil), m.events[len(m.events)-eventKeep:]...)
		}
	}
	if rebuild && (len(evs) > 0 || m.rows[tblEvents] == nil) {
		m.rows[tblEvents] = eventRows(m.events)
		m.follow(tblEvents)
	}
}

// apply shows a new state.
func (m *Model) apply(st *api.ClusterState) {
	now := m.now()
	st = m.overlayConfirmed(st, now)
	m.state = st
	m.lastUpdate = now
	m.hist.add(st, stateTime(st, now))
	m.rebuild()
}

// overlayConfirmed keeps a confirmed pool value on screen while states
// taken before the change still arrive.
func (m *Model) overlayConfirmed(st *api.ClusterState, now time.Time) *api.ClusterState {
	if len(m.confirmed) == 0 {
		return st
	}
	cp := *st
	cp.Functions = append([]api.FunctionStatus(nil), st.Functions...)
	for i := range cp.Functions {
		f := &cp.Functions[i]
		c, ok := m.confirmed[f.Name]
		if !ok {
			continue
		}
		if f.Pool.PoolSettings == c.settings || now.After(c.until) {
			delete(m.confirmed, f.Name)
			continue
		}
		f.Pool.PoolSettings = c.settings
		if !c.settings.Auto {
			f.Pool.EffectiveMinWarm = c.settings.MinWarm
		}
	}
	return &cp
}

// rebuild recomputes every state-derived table and figure.
func (m *Model) rebuild() {
	c := rowCtx{st: m.state, hist: m.hist, prices: m.prices}
	m.sum = summarize(m.state)
	m.kpi = clusterKPIs(c)
	if !m.rebuildChanged(c) {
		m.rows[tblAgents] = agentRows(c)
		m.rows[tblTop] = topRows(c)
		m.rows[tblFunctions] = functionRows(c)
		m.rows[tblPools] = poolRows(m.state)
		m.rows[tblInstances] = instanceRows(m.state, m.detailFn)
		m.rebuildBill()
		for _, t := range []int{tblAgents, tblTop, tblFunctions, tblPools, tblInstances} {
			m.follow(t)
		}
		m.remember(c)
	}
	if m.selFn == "" || findFunction(m.state, m.selFn) == nil {
		if rs := m.rows[tblFunctions]; len(rs) > 0 {
			m.selFn = rs[0].key
		}
	}
}

// billUsage is the billing view's figures: the bill of the selected
// period when the scheduler gave one, else the estimate from counters.
func (m *Model) billUsage() (per []api.Usage, total api.Usage, poolsPerHour float64, pools map[string]float64, estimate bool) {
	pools = map[string]float64{}
	if m.state != nil {
		for _, f := range m.state.Functions {
			if c := poolCostPerHour(f, m.prices); c > 0 {
				pools[f.Name] = c
				poolsPerHour += c
			}
		}
	}
	if m.bill != nil && m.billErr == nil {
		return m.bill.Functions, m.bill.Totals, m.bill.WarmPoolsCostPerHour, pools, false
	}
	per, total = estimateTotals(m.state, m.prices)
	return per, total, poolsPerHour, pools, true
}

func (m *Model) rebuildBill() {
	per, _, _, pools, estimate := m.billUsage()
	m.rows[tblBill] = billRows(per, pools)
	m.follow(tblBill)
	m.in.bill, m.in.estimate, m.in.billSet = m.bill, estimate, true
	if estimate {
		m.in.bill = nil
	}
}

// visible is a table's rows as shown: filtered and sorted.
func (m *Model) visible(t int) []row {
	ts := m.tables[t]
	return viewRows(m.rows[t], ts.filter, ts.sortCol, ts.desc)
}

// columns of a table.
func (m *Model) columns(t int) []column {
	switch t {
	case tblAgents:
		return agentColumns
	case tblTop:
		return topColumns
	case tblFunctions:
		return functionColumns
	case tblPools:
		return poolColumns(m.state)
	case tblBill:
		return billColumns
	case tblEvents:
		return eventColumns
	case tblLogs:
		return logColumns
	case tblInstances:
		return instanceColumns
	}
	return nil
}

// follow keeps a table's cursor on the row with the same key after the
// rows changed; if that row is gone the cursor keeps its index, clamped.
func (m *Model) follow(t int) {
	ts := m.tables[t]
	switch {
	case m.inBuildOrder(t):
		m.tables[t] = follow(ts, m.rows[t])
		return
	case strings.TrimSpace(ts.filter) == "" && ts.key != "":
		// The cursor's row is still there: its place in the sorted view
		// is how many rows sort before it, no sorting needed.
		rows := m.rows[t]
		if i := slices.IndexFunc(rows, func(r row) bool { return r.key == ts.key }); i >= 0 {
			ts.cursor = rankOf(rows, i, ts.sortCol, ts.desc)
			m.tables[t] = ts
			return
		}
	}
	m.tables[t] = follow(ts, m.visible(t))
}

func follow(t tableState, rows []row) tableState {
	if len(rows) == 0 {
		t.cursor = 0
		return t
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

// focused is the table with the keyboard, or -1.
func (m *Model) focused() int {
	panes := viewPanes[m.view]
	if len(panes) == 0 {
		return -1
	}
	return panes[min(m.pane[m.view], len(panes)-1)]
}

// moveTo puts the cursor of the focused table on row i, within bounds.
func (m *Model) moveTo(i int) {
	t := m.focused()
	if t < 0 {
		return
	}
	rows := m.visible(t)
	if len(rows) == 0 {
		return
	}
	ts := &m.tables[t]
	ts.cursor = min(max(i, 0), len(rows)-1)
	ts.key = rows[ts.cursor].key
	if fnTables[t] {
		m.selFn = ts.key
	}
}

// actionFn is the function that +, -, e, i, l and enter act on, or "".
func (m *Model) actionFn() string {
	switch m.view {
	case viewDetail:
		return m.detailFn
	case viewLatency:
		return m.latFn
	case viewEvents:
		return m.selFn
	}
	t := m.focused()
	if t < 0 || !fnTables[t] {
		return ""
	}
	rows := m.visible(t)
	if len(rows) == 0 {
		return ""
	}
	return rows[min(m.tables[t].cursor, len(rows)-1)].key
}

// logTarget is the function whose log tail the current view shows.
func (m *Model) logTarget() string {
	switch m.view {
	case viewDetail:
		return m.detailFn
	case viewEvents:
		return m.selFn
	}
	return ""
}

// go to view v, remembering where we were for esc.
func (m Model) goTo(v viewID) (Model, tea.Cmd) {
	if v == m.view {
		return m, nil
	}
	if v == viewLatency {
		m.latFn = m.actionFn()
	}
	m.back = append(m.back, m.view)
	if len(m.back) > 16 {
		m.back = m.back[len(m.back)-16:]
	}
	m.view = v
	return m, m.enterView()
}

// enterView fetches what the new view needs.
func (m *Model) enterView() tea.Cmd {
	switch m.view {
	case viewBill:
		return m.fetchBill(true)
	case viewEvents, viewDetail:
		return m.fetchLogs(true)
	}
	return nil
}

func (m *Model) fetchLogs(force bool) tea.Cmd {
	name := m.logTarget()
	if name == "" || m.src == nil || (m.logsBusy && !force) {
		return nil
	}
	if name != m.logsFn {
		m.logs, m.logsErr, m.logsFn = nil, nil, name
		m.rows[tblLogs] = nil
		m.tables[tblLogs] = tableState{sortCol: -1}
	}
	m.logsBusy = true
	m.logsAt = m.now()
	return logsCmd(m.ctx, m.src, name)
}

func (m *Model) fetchBill(force bool) tea.Cmd {
	b, ok := m.src.(Biller)
	if !ok || (m.billBusy && !force) {
		return nil
	}
	m.billBusy = true
	m.billAt = m.now()
	return billCmd(m.ctx, b, m.billPeriod, m.now())
}

// onClock runs once a second: the stream watchdog, flash expiry, and the
// log tail and bill refresh of the views that show them.
func (m Model) onClock() (tea.Model, tea.Cmd) {
	now := m.now()
	cmds := []tea.Cmd{clockTick()}
	if m.conn.status == connConnected && !m.conn.lastData.IsZero() && now.Sub(m.conn.lastData) > staleAfter {
		mm, cmd := m.lost(errStale)
		return mm, tea.Batch(append(cmds, cmd)...)
	}
	if m.conn.status == connReconnecting {
		m.touch() // the countdown
	}
	if m.flash.text != "" && now.Sub(m.flash.at) > flashFor {
		m.flash = flash{}
		m.touch()
	}
	if !m.paused {
		if (m.view == viewEvents || m.view == viewDetail) && now.Sub(m.logsAt) >= logsEvery {
			cmds = append(cmds, m.fetchLogs(false))
		}
		if m.view == viewBill && now.Sub(m.billAt) >= billEvery {
			cmds = append(cmds, m.fetchBill(false))
		}
	}
	return m, tea.Batch(cmds...)
}

func (m *Model) setFlash(t tone, format string, args ...any) {
	m.flash = flash{text: fmt.Sprintf(format, args...), tone: t, at: m.now()}
}

// onPoolSet shows what the scheduler confirmed, or why it refused.
func (m Model) onPoolSet(msg poolSetMsg) Model {
	delete(m.pending, msg.name)
	if msg.err != nil {
		m.setFlash(toneBad, "✗ %s: pool not changed: %s", msg.name, oneLine(msg.err.Error()))
		return m
	}
	s := msg.status
	m.confirmed[msg.name] = confirmed{settings: s.PoolSettings, until: m.now().Add(3 * time.Second)}
	if m.state != nil {
		// Show the confirmed pool at once, shares and advice included.
		cp := *m.state
		cp.Functions = append([]api.FunctionStatus(nil), m.state.Functions...)
		if f := findFunction(&cp, msg.name); f != nil {
			if s.Function == "" {
				s.Function = msg.name
			}
			f.Pool = *s
		}
		m.state = &cp
		m.rebuild()
	}
	m.setFlash(toneGood, "✓ %s: min_warm %d · max %s · keep-alive %s (confirmed by the scheduler)",
		msg.name, s.MinWarm, maxText(s.MaxInstances), formatSeconds(time.Duration(s.KeepAlive)))
	return m
}

func maxText(n int) string {
	if n <= 0 {
		return "no cap"
	}
	return strconv.Itoa(n)
}

func (m Model) handleKey(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	if k.Type == tea.KeyCtrlC {
		return m, tea.Quit
	}
	switch {
	case m.prompt.kind != promptNone:
		return m.promptKey(k)
	case m.form != nil:
		return m.formKey(k)
	case m.showHelp:
		switch {
		case key.Matches(k, m.keys.Quit):
			return m, tea.Quit
		case key.Matches(k, m.keys.Help), key.Matches(k, m.keys.Back):
			m.showHelp = false
		}
		return m, nil
	}
	km := m.keys
	switch {
	case key.Matches(k, km.Quit):
		return m, tea.Quit
	case key.Matches(k, km.Help):
		m.showHelp = true
	case key.Matches(k, km.Command):
		m.openPrompt(promptCommand, "", "")
	case key.Matches(k, km.Filter):
		t := m.focused()
		if t < 0 {
			m.setFlash(toneWarn, "nothing to filter in this view")
			break
		}
		m.openPrompt(promptFilter, m.tables[t].filter, "")
		m.prompt.table, m.prompt.prev = t, m.tables[t].filter
	case key.Matches(k, km.Back):
		return m.escape()
	case key.Matches(k, km.Enter):
		return m.drill()
	case key.Matches(k, km.Down):
		return m.moveBy(1)
	case key.Matches(k, km.Up):
		return m.moveBy(-1)
	case key.Matches(k, km.PageDown):
		return m.moveBy(max(m.height-6, 1))
	case key.Matches(k, km.PageUp):
		return m.moveBy(-max(m.height-6, 1))
	case key.Matches(k, km.Top):
		return m.moveBy(-1 << 30)
	case key.Matches(k, km.Bottom):
		return m.moveBy(1 << 30)
	case key.Matches(k, km.NextPane):
		return m.cyclePane(1)
	case key.Matches(k, km.PrevPane):
		return m.cyclePane(-1)
	case key.Matches(k, km.Sort), key.Matches(k, km.Reverse):
		m.sortKey(key.Matches(k, km.Reverse))
	case key.Matches(k, km.Pause):
		m.paused = !m.paused
		if !m.paused && m.held != nil {
			st := m.held
			m.held, m.heldN = nil, 0
			m.addEvents(nil, true)
			m.rows[tblEvents] = eventRows(m.events)
			m.follow(tblEvents)
			m.apply(st)
		}
	case key.Matches(k, km.Reconnect):
		if m.conn.status == connReconnecting {
			m.conn.gen++
			m.conn.status = connConnecting
			return m, m.openStream()
		}
		m.setFlash(toneNone, "connected: updates follow the stream")
	case key.Matches(k, km.Window):
		switch m.view {
		case viewLatency:
			m.latWindow = (m.latWindow + 1) % len(latWindows)
		case viewBill:
			m.billPeriod = (m.billPeriod + 1) % len(billPeriods)
			m.bill, m.billErr = nil, nil
			m.rebuildBill()
			return m, m.fetchBill(true)
		}
	case key.Matches(k, km.More), key.Matches(k, km.Less):
		return m.bumpWarm(key.Matches(k, km.More))
	case key.Matches(k, km.Edit):
		return m.openForm()
	case key.Matches(k, km.Invoke):
		fn, ok := m.changeTarget("not invoked")
		if ok {
			m.openPrompt(promptInvoke, "{}", fn)
		}
	case key.Matches(k, km.Logs):
		fn := m.actionFn()
		if fn == "" {
			m.setFlash(toneWarn, "select a function first")
			break
		}
		m.selFn = fn
		mm, cmd := m.goTo(viewEvents)
		mm.pane[viewEvents] = 1
		return mm, tea.Batch(cmd, mm.fetchLogs(true))
	case key.Matches(k, km.Views):
		v := []viewID{viewOverview, viewFunctions, viewPools, viewLatency, viewBill, viewEvents}[k.Runes[0]-'1']
		return m.goTo(v)
	}
	return m, nil
}

// moveBy moves the cursor (or, in the latency view, the function shown).
func (m Model) moveBy(d int) (tea.Model, tea.Cmd) {
	if m.view == viewLatency {
		names := []string{""}
		for _, r := range m.rows[tblFunctions] {
			names = append(names, r.key)
		}
		i := 0
		for j, n := range names {
			if n == m.latFn {
				i = j
			}
		}
		m.latFn = names[min(max(i+d, 0), len(names)-1)]
		return m, nil
	}
	t := m.focused()
	if t < 0 {
		return m, nil
	}
	cur := m.tables[t].cursor
	m.moveTo(max(min(cur+d, 1<<30), -1<<30))
	return m, nil
}

func (m Model) cyclePane(d int) (tea.Model, tea.Cmd) {
	if n := len(viewPanes[m.view]); n > 1 {
		m.pane[m.view] = (m.pane[m.view] + d + n) % n
		if t := m.focused(); fnTables[t] {
			m.moveTo(m.tables[t].cursor)
		}
		return m, nil
	}
	// A view of one pane: tab goes through the main views.
	order := []viewID{viewOverview, viewFunctions, viewPools, viewLatency, viewBill, viewEvents}
	i := 0
	for j, v := range order {
		if v == m.view {
			i = j
		}
	}
	if m.view == viewDetail {
		return m, nil
	}
	next := order[(i+d+len(order))%len(order)]
	mm, cmd := m.goTo(next)
	mm.back = mm.back[:len(mm.back)-1] // tabbing is not a place to come back to
	return mm, cmd
}

// sortKey cycles the focused table's sort column (s) or reverses it (S).
// Number columns start biggest first, text columns A to Z.
func (m *Model) sortKey(reverse bool) {
	t := m.focused()
	if t < 0 {
		return
	}
	ts := &m.tables[t]
	cols := m.columns(t)
	if reverse {
		if ts.sortCol < 0 {
			ts.sortCol = 0
		}
		ts.desc = !ts.desc
	} else {
		ts.sortCol++
		if ts.sortCol >= len(cols) {
			ts.sortCol = 0
		}
		ts.desc = numericColumn(m.rows[t], ts.sortCol)
	}
	m.follow(t)
	dir := "ascending"
	if ts.desc {
		dir = "descending"
	}
	m.setFlash(toneNone, "sorted by %s, %s", cols[ts.sortCol].title, dir)
}

// escape closes what is open, clears a filter, or goes back.
func (m Model) escape() (tea.Model, tea.Cmd) {
	if m.invoke != nil {
		m.invoke = nil
		return m, nil
	}
	if t := m.focused(); t >= 0 && m.tables[t].filter != "" {
		m.tables[t].filter = ""
		m.follow(t)
		return m, nil
	}
	if n := len(m.back); n > 0 {
		m.view = m.back[n-1]
		m.back = m.back[:n-1]
		return m, m.enterView()
	}
	m.flash = flash{}
	return m, nil
}

// drill opens the function under the cursor.
func (m Model) drill() (tea.Model, tea.Cmd) {
	fn := ""
	switch t := m.focused(); {
	case m.view == viewLatency:
		fn = m.latFn
	case t == tblEvents:
		rows := m.visible(t)
		if len(rows) > 0 {
			fn = rows[m.tables[t].cursor].cells[evColSubject]
		}
		if findFunction(m.state, fn) == nil {
			fn = ""
		}
	case t == tblAgents:
		return m.goTo(viewPools)
	case m.view != viewDetail:
		fn = m.actionFn()
	}
	if fn == "" {
		return m, nil
	}
	m.detailFn, m.selFn = fn, fn
	m.rows[tblInstances] = instanceRows(m.state, fn)
	m.tables[tblInstances].key, m.tables[tblInstances].cursor = "", 0
	m.follow(tblInstances)
	m.pane[viewDetail] = 0
	return m.goTo(viewDetail)
}

// changeTarget is the function a change applies to, or false with the
// reason on the flash line (read-only, nothing selected).
func (m *Model) changeTarget(what string) (string, bool) {
	fn := m.actionFn()
	if m.readOnly {
		target := "nothing"
		if fn != "" {
			target = fn
		}
		m.setFlash(toneWarn, "read-only: %s %s (the console was started with --read-only)", target, what)
		return "", false
	}
	if fn == "" || findFunction(m.state, fn) == nil {
		m.setFlash(toneWarn, "select a function first")
		return "", false
	}
	return fn, true
}

// bumpWarm sends min_warm ± 1 at once.
func (m Model) bumpWarm(up bool) (tea.Model, tea.Cmd) {
	fn, ok := m.changeTarget("not changed")
	if !ok {
		return m, nil
	}
	f := findFunction(m.state, fn)
	cur := f.Pool.MinWarm
	if p, ok := m.pending[fn]; ok {
		cur = p
	}
	next := cur + 1
	if !up {
		next = cur - 1
	}
	if next < 0 || next > api.MaxMinWarm {
		m.setFlash(toneWarn, "%s: min_warm stays %d (0–%d)", fn, cur, api.MaxMinWarm)
		return m, nil
	}
	m.pending[fn] = next
	m.setFlash(toneNone, "%s: min_warm %d → %d …", fn, cur, next)
	return m, setPoolCmd(m.ctx, m.src, fn, api.PoolChange{MinWarm: &next})
}

func newInput(prompt, value string) textinput.Model {
	in := textinput.New()
	in.Prompt = prompt
	in.SetValue(value)
	in.CursorEnd()
	in.Cursor.SetMode(cursor.CursorStatic)
	in.Focus()
	return in
}

func (m *Model) openPrompt(kind int, value, fn string) {
	prefix := map[int]string{promptCommand: ":", promptFilter: "/", promptInvoke: "invoke " + fn + " payload: "}[kind]
	m.prompt = prompt{kind: kind, in: newInput(prefix, value), fn: fn}
}

func (m Model) promptKey(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	p := &m.prompt
	switch k.Type {
	case tea.KeyEsc:
		if p.kind == promptFilter {
			m.tables[p.table].filter = ""
			m.follow(p.table)
		}
		m.prompt = prompt{}
		return m, nil
	case tea.KeyEnter:
		return m.submitPrompt()
	case tea.KeyTab:
		if p.kind == promptCommand {
			if c := completions(p.in.Value()); len(c) > 0 {
				p.in.SetValue(commonPrefix(c))
				p.in.CursorEnd()
			}
			return m, nil
		}
	}
	var cmd tea.Cmd
	p.in, cmd = p.in.Update(k)
	if p.kind == promptFilter {
		m.tables[p.table].filter = p.in.Value()
		m.follow(p.table)
	}
	return m, cmd
}

func (m Model) submitPrompt() (tea.Model, tea.Cmd) {
	p := m.prompt
	m.prompt = prompt{}
	switch p.kind {
	case promptFilter:
		return m, nil
	case promptInvoke:
		f := findFunction(m.state, p.fn)
		timeout := 30 * time.Second
		if f != nil && f.Timeout > 0 {
			timeout = time.Duration(f.Timeout) + 10*time.Second
		}
		m.invoke = nil
		m.setFlash(toneNone, "invoking %s …", p.fn)
		return m, invokeCmd(m.ctx, m.src, p.fn, p.in.Value(), timeout, m.now)
	}
	name := strings.TrimSpace(p.in.Value())
	if name == "" {
		return m, nil
	}
	matches := completions(name)
	var exact []string
	for _, c := range commands {
		for _, n := range c.names {
			if n == name {
				exact = []string{c.names[0]}
			}
		}
	}
	if exact != nil {
		matches = exact
	}
	if len(matches) != 1 {
		m.setFlash(toneBad, "unknown command :%s (try :fn :agents :pools :lat :bill :events)", name)
		return m, nil
	}
	for _, c := range commands {
		if c.names[0] != matches[0] {
			continue
		}
		switch c.names[0] {
		case "help":
			m.showHelp = true
			return m, nil
		case "quit":
			return m, tea.Quit
		}
		mm, cmd := m.goTo(c.view)
		mm.pane[c.view] = c.pane
		return mm, cmd
	}
	return m, nil
}

// completions are the canonical names of the commands any of whose names
// starts with prefix.
func completions(prefix string) []string {
	prefix = strings.TrimSpace(prefix)
	var out []string
	for _, c := range commands {
		for _, n := range c.names {
			if strings.HasPrefix(n, prefix) {
				out = append(out, c.names[0])
				break
			}
		}
	}
	return out
}

func commonPrefix(ss []string) string {
	if len(ss) == 0 {
		return ""
	}
	p := ss[0]
	for _, s := range ss[1:] {
		for !strings.HasPrefix(s, p) {
			p = p[:len(p)-1]
		}
	}
	return p
}

func (m Model) openForm() (tea.Model, tea.Cmd) {
	fn, ok := m.changeTarget("not edited")
	if !ok {
		return m, nil
	}
	f := findFunction(m.state, fn)
	s := f.Pool.PoolSettings
	if s.KeepAlive == 0 {
		s.KeepAlive = api.Duration(api.DefaultKeepAlive)
	}
	form := &poolForm{fn: fn, orig: s}
	form.fields[0] = newInput("", strconv.Itoa(s.MinWarm))
	form.fields[1] = newInput("", strconv.Itoa(s.MaxInstances))
	form.fields[2] = newInput("", time.Duration(s.KeepAlive).String())
	for i := 1; i < len(form.fields); i++ {
		form.fields[i].Blur()
	}
	m.form = form
	return m, nil
}

func (m Model) formKey(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	f := *m.form
	m.form = &f
	move := func(d int) {
		f.fields[f.focus].Blur()
		f.focus = (f.focus + d + len(f.fields)) % len(f.fields)
		f.fields[f.focus].Focus()
	}
	switch k.Type {
	case tea.KeyEsc:
		m.form = nil
		m.setFlash(toneNone, "%s: pool not changed", f.fn)
		return m, nil
	case tea.KeyTab, tea.KeyDown:
		move(1)
		return m, nil
	case tea.KeyShiftTab, tea.KeyUp:
		move(-1)
		return m, nil
	case tea.KeyEnter:
		ch, err := f.change()
		if err != nil {
			f.err = err.Error()
			return m, nil
		}
		m.form = nil
		if ch == (api.PoolChange{}) {
			m.setFlash(toneNone, "%s: nothing changed", f.fn)
			return m, nil
		}
		if ch.MinWarm != nil {
			m.pending[f.fn] = *ch.MinWarm
		}
		m.setFlash(toneNone, "%s: setting the pool …", f.fn)
		return m, setPoolCmd(m.ctx, m.src, f.fn, ch)
	}
	var cmd tea.Cmd
	f.fields[f.focus], cmd = f.fields[f.focus].Update(k)
	f.err = ""
	return m, cmd
}

// change parses the form into the fields that differ from the pool now.
func (f *poolForm) change() (api.PoolChange, error) {
	var ch api.PoolChange
	mw, err := strconv.Atoi(strings.TrimSpace(f.fields[0].Value()))
	if err != nil || mw < 0 || mw > api.MaxMinWarm {
		return ch, fmt.Errorf("min warm: want a whole number 0–%d", api.MaxMinWarm)
	}
	mx, err := strconv.Atoi(strings.TrimSpace(f.fields[1].Value()))
	if err != nil || mx < 0 || mx > api.MaxInstancesCap {
		return ch, fmt.Errorf("max instances: want 0 (no cap) to %d", api.MaxInstancesCap)
	}
	if mx > 0 && mw > mx {
		return ch, errors.New("min warm is above max instances")
	}
	ka, err := time.ParseDuration(strings.TrimSpace(f.fields[2].Value()))
	if err != nil || ka < api.MinKeepAlive || ka > api.MaxKeepAlive {
		return ch, errors.New("keep-alive: want a duration 1s–24h, like 10m")
	}
	if mw != f.orig.MinWarm {
		ch.MinWarm = &mw
	}
	if mx != f.orig.MaxInstances {
		ch.MaxInstances = &mx
	}
	if d := api.Duration(ka); d != f.orig.KeepAlive {
		ch.KeepAlive = &d
	}
	return ch, nil
}

// Run runs the console full-screen until q or ctrl+c is pressed or ctx
// ends; both are a normal exit and return nil.
func Run(ctx context.Context, src Source, opts ...Option) error {
	return run(ctx, src, opts, tea.WithAltScreen())
}

func run(ctx context.Context, src Source, opts []Option, popts ...tea.ProgramOption) error {
	m := New(src, opts...)
	inner, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream when the console quits
	m.ctx = inner
	popts = append(popts, tea.WithContext(ctx))
	_, err := tea.NewProgram(m, popts...).Run()
	if err != nil && errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil {
		return nil
	}
	return err
}
