package tui

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/amberfn/amber/api"
)

// This file is the data layer: pure functions that turn api types (and
// the console's history) into the text cells the view draws, and sort and
// filter them. Nothing here knows about Bubble Tea, terminals or colour.

// tone is the severity of a cell; the view maps it to a colour.
type tone int

const (
	toneNone tone = iota
	toneGood
	toneWarn
	toneBad
	toneDim
)

// row is one table row: a stable key (the agent or function name) that the
// cursor follows across updates, the cells in column order, a tone per cell
// (nil means no colouring) and, per column, the number it sorts by (NaN
// for text columns).
type row struct {
	key   string
	cells []string
	tones []tone
	num   []float64
}

func newRow(key string, n int) row {
	r := row{key: key, cells: make([]string, n), tones: make([]tone, n), num: make([]float64, n)}
	for i := range r.num {
		r.num[i] = math.NaN()
	}
	return r
}

// rowArena hands out the cells, tones and numbers of many rows from one
// allocation each, so that n rows cost three allocations rather than 3n.
// A nil arena, or one used up, falls back to newRow.
type rowArena struct {
	cells []string
	tones []tone
	num   []float64
}

// newRowArena holds n cells in all.
func newRowArena(n int) *rowArena {
	return &rowArena{cells: make([]string, n), tones: make([]tone, n), num: make([]float64, n)}
}

func (a *rowArena) row(key string, n int) row {
	if a == nil || len(a.cells) < n {
		return newRow(key, n)
	}
	r := row{key: key, cells: a.cells[:n:n], tones: a.tones[:n:n], num: a.num[:n:n]}
	a.cells, a.tones, a.num = a.cells[n:], a.tones[n:], a.num[n:]
	for i := range r.num {
		r.num[i] = math.NaN()
	}
	return r
}

// column describes one table column.
type column struct {
	title string
	right bool // right-align (numbers)
	flex  bool // shrinks before any column is dropped (the NAME column)
	min   int  // smallest width of a flex column before columns are dropped
	max   int  // cap on the natural width; 0 for none
	drop  int  // drop order on narrow screens: highest first; 0 never
}

// Column indexes of the agents table (overview).
const (
	agentColName = iota
	agentColState
	agentColCPU
	agentColMem
	agentColLoad
	agentColInst
	agentColReserved
	agentCols
)

var agentColumns = []column{
	agentColName:     {title: "NAME", flex: true, min: 8, max: 24},
	agentColState:    {title: "STATE", drop: 2},
	agentColCPU:      {title: "CPU", right: true, drop: 3},
	agentColMem:      {title: "MEM", right: true, drop: 4},
	agentColLoad:     {title: "LOAD", right: true, drop: 6},
	agentColInst:     {title: "INST", right: true, drop: 5},
	agentColReserved: {title: "RESERVED", right: true, drop: 7},
}

// Column indexes of the functions table.
const (
	fnColName = iota
	fnColVer
	fnColMem
	fnColWarm
	fnColIdle
	fnColBusy
	fnColInit
	fnColRate
	fnColP50
	fnColP99
	fnColCold
	fnColGBs
	fnColCost
	fnCols
)

var functionColumns = []column{
	fnColName: {title: "NAME", flex: true, min: 14, max: 28},
	fnColVer:  {title: "VER", right: true, drop: 10},
	fnColMem:  {title: "MEM", right: true, drop: 9},
	fnColWarm: {title: "WARM/MAX", right: true, drop: 6},
	fnColIdle: {title: "IDLE", right: true, drop: 5},
	fnColBusy: {title: "BUSY", right: true, drop: 4},
	fnColInit: {title: "INIT", right: true, drop: 11},
	fnColRate: {title: "INV/S", right: true},
	fnColP50:  {title: "P50", right: true, drop: 7},
	fnColP99:  {title: "P99", right: true, drop: 2},
	fnColCold: {title: "COLD", right: true, drop: 3},
	fnColGBs:  {title: "COMPUTE", right: true, drop: 12},
	fnColCost: {title: "COST", right: true, drop: 8},
}

// Column indexes of the overview's top functions table.
const (
	topColName = iota
	topColRate
	topColP99
	topColCold
	topColWarm
	topColCost
	topCols
)

var topColumns = []column{
	topColName: {title: "NAME", flex: true, min: 8, max: 28},
	topColRate: {title: "INV/S", right: true},
	topColP99:  {title: "P99", right: true, drop: 1},
	topColCold: {title: "COLD", right: true, drop: 2},
	topColWarm: {title: "WARM HITS", right: true, drop: 4},
	topColCost: {title: "COST", right: true, drop: 3},
}

// rowCtx is what the row builders read.
type rowCtx struct {
	st     *api.ClusterState
	hist   *history
	prices api.Prices
	arena  *rowArena // where rows come from (nil: one allocation each)
}

// instanceCounts counts a function's instances by what they are doing;
// init is creating or initialising (a cold start or a restore under way).
func instanceCounts(ins []api.Instance) (idle, busy, init int) {
	for _, in := range ins {
		switch in.State {
		case api.StateIdle:
			idle++
		case api.StateBusy:
			busy++
		case api.StateCreating, api.StateInitializing:
			init++
		}
	}
	return
}

// coldShare is the share of starts that were cold (restores count as
// cold: the caller waited), NaN with no starts.
func coldShare(s api.FunctionStats) float64 {
	starts := s.ColdStarts + s.WarmStarts
	if starts <= 0 {
		return math.NaN()
	}
	return 100 * float64(s.ColdStarts) / float64(starts)
}

// functionRows builds the functions table, in name order.
func functionRows(c rowCtx) []row {
	if c.st == nil {
		return nil
	}
	rows := make([]row, 0, len(c.st.Functions))
	c.arena = newRowArena(len(c.st.Functions) * fnCols)
	for _, f := range c.st.Functions {
		rows = append(rows, functionRow(c, f))
	}
	sortRows(rows, 0, false)
	return rows
}

func functionRow(c rowCtx, f api.FunctionStatus) row {
	r := c.arena.row(f.Name, fnCols)
	idle, busy, init := instanceCounts(f.Instances)
	r.cells[fnColName] = f.Name
	r.cells[fnColVer], r.num[fnColVer] = strconv.Itoa(f.Version), float64(f.Version)
	r.cells[fnColMem], r.num[fnColMem] = formatMB(f.MemoryMB), float64(f.MemoryMB)
	r.cells[fnColWarm], r.num[fnColWarm] = formatWarm(f.Pool), float64(f.Pool.EffectiveMinWarm)
	if f.Pool.Auto {
		r.tones[fnColWarm] = toneWarn
	}
	r.cells[fnColIdle], r.num[fnColIdle] = strconv.Itoa(idle), float64(idle)
	r.cells[fnColBusy], r.num[fnColBusy] = strconv.Itoa(busy), float64(busy)
	if busy > 0 {
		r.tones[fnColBusy] = toneGood
	}
	r.cells[fnColInit], r.num[fnColInit] = strconv.Itoa(init), float64(init)
	if init > 0 {
		r.tones[fnColInit] = toneWarn
	}
	rate, _, ok := c.hist.fnRate(f.Name)
	r.cells[fnColRate], r.num[fnColRate] = formatRate(rate, ok), rate
	var all api.Histogram
	var counts [api.HistBuckets]int64
	all.Counts = counts[:]
	mergeKindsInto(&all, f.Latency)
	p50, p99 := all.Quantile(0.5), all.Quantile(0.99)
	r.cells[fnColP50], r.num[fnColP50] = formatMsOr(p50, all.Count), p50
	r.cells[fnColP99], r.num[fnColP99] = formatMsOr(p99, all.Count), p99
	cs := coldShare(f.Stats)
	r.cells[fnColCold], r.num[fnColCold] = formatPercent(cs), cs
	r.tones[fnColCold] = coldTone(cs)
	u := usageEstimate(f, c.prices)
	r.cells[fnColGBs], r.num[fnColGBs] = formatGBs(u.GBSeconds), u.GBSeconds
	r.cells[fnColCost], r.num[fnColCost] = formatUSD(u.Cost), u.Cost
	return r
}

// topRows builds the overview's functions table: the busiest first.
func topRows(c rowCtx) []row {
	if c.st == nil {
		return nil
	}
	rows := make([]row, 0, len(c.st.Functions))
	c.arena = newRowArena(len(c.st.Functions) * topCols)
	for _, f := range c.st.Functions {
		rows = append(rows, topRow(c, f))
	}
	sortRows(rows, topColRate, true)
	return rows
}

func topRow(c rowCtx, f api.FunctionStatus) row {
	r := c.arena.row(f.Name, topCols)
	r.cells[topColName] = f.Name
	rate, _, ok := c.hist.fnRate(f.Name)
	r.cells[topColRate], r.num[topColRate] = formatRate(rate, ok), rate
	var all api.Histogram
	var counts [api.HistBuckets]int64
	all.Counts = counts[:]
	mergeKindsInto(&all, f.Latency)
	p99 := all.Quantile(0.99)
	r.cells[topColP99], r.num[topColP99] = formatMsOr(p99, all.Count), p99
	cs := coldShare(f.Stats)
	r.cells[topColCold], r.num[topColCold] = formatPercent(cs), cs
	r.tones[topColCold] = coldTone(cs)
	wh := math.NaN()
	if s := f.Stats.ColdStarts + f.Stats.WarmStarts; s > 0 {
		wh = 100 * float64(f.Stats.WarmStarts) / float64(s)
	}
	r.cells[topColWarm], r.num[topColWarm] = formatPercent(wh), wh
	u := usageEstimate(f, c.prices)
	r.cells[topColCost], r.num[topColCost] = formatUSD(u.Cost), u.Cost
	return r
}

// agentRows builds the agents table with CPU and memory sparklines.
func agentRows(c rowCtx) []row {
	if c.st == nil {
		return nil
	}
	rows := make([]row, 0, len(c.st.Agents))
	c.arena = newRowArena(len(c.st.Agents) * agentCols)
	for _, a := range c.st.Agents {
		rows = append(rows, agentRow(c, a))
	}
	sortRows(rows, 0, false)
	return rows
}

func agentRow(c rowCtx, a api.AgentStatus) row {
	r := c.arena.row(a.Name, agentCols)
	r.cells[agentColName] = a.Name
	r.cells[agentColState] = string(a.State)
	if r.cells[agentColState] == "" {
		r.cells[agentColState] = "-"
	}
	r.tones[agentColState] = agentTone(a.State)
	var cpuH, memH series
	if c.hist != nil {
		cpuH, memH = c.hist.cpu[a.Name], c.hist.mem[a.Name]
	}
	r.cells[agentColCPU] = sparkline(cpuH, 0, 100, sparkW) + " " + padLeft(formatPercent(a.Stats.CPUPercent), 6)
	r.num[agentColCPU] = a.Stats.CPUPercent
	r.tones[agentColCPU] = loadTone(a.Stats.CPUPercent)
	r.cells[agentColMem] = sparkline(memH, 0, 100, sparkW) + " " + formatMem(a.Stats.MemUsedBytes, a.Stats.MemTotalBytes)
	r.num[agentColMem] = float64(a.Stats.MemUsedBytes)
	if a.Stats.MemTotalBytes > 0 {
		r.tones[agentColMem] = loadTone(100 * float64(a.Stats.MemUsedBytes) / float64(a.Stats.MemTotalBytes))
	}
	r.cells[agentColLoad], r.num[agentColLoad] = formatLoad(a.Stats.Load1), a.Stats.Load1
	n := liveInstances(a.Instances)
	r.cells[agentColInst], r.num[agentColInst] = strconv.Itoa(n), float64(n)
	r.cells[agentColReserved], r.num[agentColReserved] = formatMB(a.ReservedMB)+"/"+formatMB(a.CapacityMB), float64(a.ReservedMB)
	if a.State == api.AgentGone {
		for i := range r.tones {
			if i != agentColState {
				r.tones[i] = toneDim
			}
		}
	}
	return r
}

// poolColumns are the pools grid's columns: the function, its pool size,
// then one column per agent (in name order).
func poolColumns(st *api.ClusterState) []column {
	cols := []column{
		{title: "FUNCTION", flex: true, min: 8, max: 28},
		{title: "WARM/MAX", right: true},
		{title: "IDLE+BUSY", right: true},
	}
	names := agentNames(st)
	for i, n := range names {
		// Agents drop from the right on narrow screens.
		cols = append(cols, column{title: n, right: true, drop: 100 + i, max: 16})
	}
	return cols
}

func agentNames(st *api.ClusterState) []string {
	if st == nil {
		return nil
	}
	names := make([]string, 0, len(st.Agents))
	for _, a := range st.Agents {
		names = append(names, a.Name)
	}
	sort.Strings(names)
	return names
}

// poolRows builds the function × agent grid: per agent "idle+busy/target"
// where target is the agent's share of min_warm ("-" when it has none).
func poolRows(st *api.ClusterState) []row {
	if st == nil {
		return nil
	}
	g := newPoolGrid(st)
	rows := make([]row, 0, len(st.Functions))
	a := newRowArena(len(st.Functions) * (3 + len(g.names)))
	for _, f := range st.Functions {
		rows = append(rows, g.row(a, f))
	}
	sortRows(rows, 0, false)
	return rows
}

// poolGrid builds the pools grid's rows: its columns are the agents in
// name order.
type poolGrid struct {
	names []string
	col   map[string]int // agent → index in names
	cells []poolCell     // scratch, one per agent
}

type poolCell struct {
	idle, busy int
	share      *api.PoolShare
}

func newPoolGrid(st *api.ClusterState) *poolGrid {
	g := &poolGrid{names: agentNames(st)}
	g.col = make(map[string]int, len(g.names))
	for i, n := range g.names {
		g.col[n] = i
	}
	g.cells = make([]poolCell, len(g.names))
	return g
}

// row is one function's row: per agent "idle+busy/target" where target is
// the agent's share of min_warm ("-" when it has none).
func (g *poolGrid) row(a *rowArena, f api.FunctionStatus) row {
	r := a.row(f.Name, 3+len(g.names))
	r.cells[0] = f.Name
	r.cells[1], r.num[1] = formatWarm(f.Pool), float64(f.Pool.EffectiveMinWarm)
	idle, busy, _ := instanceCounts(f.Instances)
	r.cells[2], r.num[2] = strconv.Itoa(idle)+"+"+strconv.Itoa(busy), float64(idle+busy)
	clear(g.cells)
	for i := range f.Pool.Shares {
		if c, ok := g.col[f.Pool.Shares[i].Agent]; ok {
			g.cells[c].share = &f.Pool.Shares[i] // the last entry of an agent wins
		}
	}
	// Instances per agent, for agents without a share entry.
	for _, in := range f.Instances {
		c, ok := g.col[in.Agent]
		if !ok {
			continue
		}
		switch in.State {
		case api.StateIdle:
			g.cells[c].idle++
		case api.StateBusy:
			g.cells[c].busy++
		}
	}
	for i := range g.names {
		c := 3 + i
		pc := g.cells[i]
		s, ok := api.PoolShare{}, pc.share != nil
		idle, busy := pc.idle, pc.busy
		if ok {
			s = *pc.share
			idle, busy = s.Idle, s.Busy
		}
		target := "-"
		if ok && s.MinWarm > 0 {
			target = strconv.Itoa(s.MinWarm)
		}
		if idle == 0 && busy == 0 && target == "-" {
			r.cells[c] = "·"
			r.tones[c] = toneDim
			r.num[c] = 0
			continue
		}
		r.cells[c] = strconv.Itoa(idle) + "+" + strconv.Itoa(busy) + "/" + target
		r.num[c] = float64(idle + busy)
		switch {
		case ok && idle < s.MinWarm:
			r.tones[c] = toneWarn // below target: prewarming
		case busy > 0:
			r.tones[c] = toneGood
		}
	}
	return r
}

// Column indexes of the billing table.
const (
	billColName = iota
	billColReq
	billColGBs
	billColWarm
	billColCost
	billColPool
	billCols
)

var billColumns = []column{
	billColName: {title: "FUNCTION", flex: true, min: 8, max: 28},
	billColReq:  {title: "REQUESTS", right: true, drop: 2},
	billColGBs:  {title: "COMPUTE", right: true, drop: 3},
	billColWarm: {title: "WARMTH", right: true, drop: 4},
	billColCost: {title: "COST", right: true},
	billColPool: {title: "WARM POOL", right: true, drop: 1},
}

// billRows builds the billing table from per-function usage; pools holds
// the current warm pools' cost per hour by function.
func billRows(us []api.Usage, pools map[string]float64) []row {
	rows := make([]row, 0, len(us))
	seen := map[string]bool{}
	a := newRowArena(len(us) * billCols)
	for _, u := range us {
		seen[u.Function] = true
		rows = append(rows, billRowCost(a, u, pools[u.Function]))
	}
	// Functions that have a warm pool but no usage yet still cost money.
	for name := range pools {
		if !seen[name] {
			rows = append(rows, billRow(api.Usage{Function: name}, pools))
		}
	}
	sortRows(rows, 0, false)
	return rows
}

func billRow(u api.Usage, pools map[string]float64) row {
	return billRowCost(nil, u, pools[u.Function])
}

// billRowCost is billRow with the function's warm pool cost per hour,
// from arena a.
func billRowCost(a *rowArena, u api.Usage, ph float64) row {
	r := a.row(u.Function, billCols)
	r.cells[billColName] = u.Function
	r.cells[billColReq], r.num[billColReq] = formatCount(u.Requests), float64(u.Requests)
	r.cells[billColGBs], r.num[billColGBs] = formatGBs(u.GBSeconds), u.GBSeconds
	r.cells[billColWarm], r.num[billColWarm] = formatGBs(u.WarmthGBSeconds), u.WarmthGBSeconds
	r.cells[billColCost], r.num[billColCost] = formatUSD(u.Cost), u.Cost
	r.cells[billColPool], r.num[billColPool] = formatUSD(ph)+"/h", ph
	if ph == 0 {
		r.cells[billColPool] = "-"
		r.tones[billColPool] = toneDim
	}
	return r
}

// totalRow is the billing table's totals line.
func totalRow(t api.Usage, poolsPerHour float64) row {
	t.Function = "TOTAL"
	r := billRow(t, map[string]float64{"TOTAL": poolsPerHour})
	return r
}

// Column indexes of the events table.
const (
	evColTime = iota
	evColKind
	evColSubject
	evColMsg
	evCols
)

var eventColumns = []column{
	evColTime:    {title: "TIME", drop: 3},
	evColKind:    {title: "KIND", drop: 2},
	evColSubject: {title: "ON", max: 20, drop: 1},
	evColMsg:     {title: "MESSAGE", flex: true, min: 10},
}

// eventRows lists events newest first.
func eventRows(evs []api.Event) []row {
	rows := make([]row, 0, len(evs))
	for i := len(evs) - 1; i >= 0; i-- {
		e := evs[i]
		r := newRow(fmt.Sprint(e.Seq), evCols)
		r.cells[evColTime], r.num[evColTime] = e.Time.UTC().Format(timeLayout), float64(e.Time.UnixNano())
		r.cells[evColKind] = e.Kind
		r.tones[evColKind] = eventTone(e.Kind)
		r.cells[evColSubject] = or(e.Function, e.Agent)
		r.cells[evColMsg] = oneLine(e.Message)
		rows = append(rows, r)
	}
	return rows
}

func eventTone(kind string) tone {
	switch kind {
	case api.EventInvokeFailed, api.EventThrottled:
		return toneBad
	case api.EventAgentState:
		return toneWarn
	case api.EventDeployed, api.EventAgentRegistered, api.EventPoolChanged:
		return toneGood
	}
	return toneNone
}

// Column indexes of the logs table.
const (
	logColTime = iota
	logColAgent
	logColText
	logCols
)

var logColumns = []column{
	logColTime:  {title: "TIME", drop: 2},
	logColAgent: {title: "AGENT", max: 16, drop: 1},
	logColText:  {title: "LINE", flex: true, min: 10},
}

// logRows lists log lines newest first.
func logRows(recs []api.LogRecord) []row {
	rows := make([]row, 0, len(recs))
	for i := len(recs) - 1; i >= 0; i-- {
		l := recs[i]
		r := newRow(fmt.Sprintf("%d/%s", i, l.Time.Format(time.RFC3339Nano)), logCols)
		r.cells[logColTime], r.num[logColTime] = l.Time.UTC().Format(timeLayout), float64(l.Time.UnixNano())
		r.cells[logColAgent] = l.Agent
		r.cells[logColText] = oneLine(l.Text)
		switch {
		case l.Stream == api.StreamStderr:
			r.tones[logColText] = toneWarn
		case l.Stream == api.StreamPlatform:
			r.tones[logColText] = toneDim
		}
		rows = append(rows, r)
	}
	return rows
}

// Column indexes of the instances table (drill-down).
const (
	insColID = iota
	insColAgent
	insColState
	insColKind
	insColInv
	insColPeak
	insCols
)

var instanceColumns = []column{
	insColID:    {title: "INSTANCE", flex: true, min: 8, max: 24},
	insColAgent: {title: "AGENT", max: 16, drop: 2},
	insColState: {title: "STATE"},
	insColKind:  {title: "START", drop: 3},
	insColInv:   {title: "INVOC", right: true, drop: 1},
	insColPeak:  {title: "PEAK MEM", right: true, drop: 4},
}

// instanceRows lists a function's instances, gone ones left out.
func instanceRows(st *api.ClusterState, fn string) []row {
	f := findFunction(st, fn)
	if f == nil {
		return nil
	}
	var rows []row
	for _, in := range f.Instances {
		if in.State == api.StateGone {
			continue
		}
		r := newRow(in.ID, insCols)
		r.cells[insColID] = in.ID
		r.cells[insColAgent] = in.Agent
		r.cells[insColState] = string(in.State)
		r.tones[insColState] = instanceTone(in.State)
		r.cells[insColKind] = startKind(in.StartKind)
		r.tones[insColKind] = startTone(in.StartKind)
		r.cells[insColInv], r.num[insColInv] = formatCount(in.Invocations), float64(in.Invocations)
		r.cells[insColPeak], r.num[insColPeak] = fmt.Sprintf("%d/%d MB", in.MaxMemoryMB, in.MemoryMB), float64(in.MaxMemoryMB)
		if in.Error != "" {
			r.cells[insColState] += " (" + oneLine(in.Error) + ")"
		}
		rows = append(rows, r)
	}
	sortRows(rows, insColAgent, false)
	return rows
}

func instanceTone(s api.InstanceState) tone {
	switch s {
	case api.StateBusy, api.StateIdle:
		return toneGood
	case api.StateCreating, api.StateInitializing, api.StateDraining:
		return toneWarn
	case api.StateInitFailed:
		return toneBad
	}
	return toneNone
}

func findFunction(st *api.ClusterState, name string) *api.FunctionStatus {
	if st == nil {
		return nil
	}
	for i := range st.Functions {
		if st.Functions[i].Name == name {
			return &st.Functions[i]
		}
	}
	return nil
}

// sortRows sorts rows by column col (numbers by value when the column has
// them, text otherwise), reversed when desc, with the key ascending as the
// tiebreak whichever the direction, so the order is always the same.
// col < 0 keeps the rows' own order.
func sortRows(rows []row, col int, desc bool) {
	if col < 0 {
		return
	}
	sort.SliceStable(rows, func(i, j int) bool { return rowLess(rows[i], rows[j], col, desc) })
}

// rankOf is the place rows[i] takes when rows are sorted by sortRows(col,
// desc): how many rows sort before it.
func rankOf(rows []row, i, col int, desc bool) int {
	if col < 0 {
		return i
	}
	n := 0
	for j := range rows {
		if j != i && rowLess(rows[j], rows[i], col, desc) {
			n++
		}
	}
	return n
}

// rowLess is sortRows' order: by column col, reversed when desc, then by key.
func rowLess(a, b row, col int, desc bool) bool {
	if c := compareCell(a, b, col); c != 0 {
		if desc {
			return c > 0
		}
		return c < 0
	}
	return a.key < b.key
}

func compareCell(a, b row, col int) int {
	an, bn := cellNum(a, col), cellNum(b, col)
	switch {
	case !math.IsNaN(an) && !math.IsNaN(bn):
		switch {
		case an < bn:
			return -1
		case an > bn:
			return 1
		}
		return 0
	case !math.IsNaN(an):
		return 1 // a number sorts above "-"
	case !math.IsNaN(bn):
		return -1
	}
	return strings.Compare(strings.ToLower(cellText(a, col)), strings.ToLower(cellText(b, col)))
}

func cellNum(r row, col int) float64 {
	if col < len(r.num) {
		return r.num[col]
	}
	return math.NaN()
}

func cellText(r row, col int) string {
	if col < len(r.cells) {
		return r.cells[col]
	}
	return ""
}

// numericColumn says whether a column sorts by number in these rows.
func numericColumn(rows []row, col int) bool {
	for _, r := range rows {
		if !math.IsNaN(cellNum(r, col)) {
			return true
		}
	}
	return false
}

// filterRows keeps the rows any cell of which contains f, ignoring case.
func filterRows(rows []row, f string) []row {
	f = strings.ToLower(strings.TrimSpace(f))
	if f == "" {
		return rows
	}
	out := make([]row, 0, len(rows))
	for _, r := range rows {
		for _, c := range r.cells {
			if strings.Contains(strings.ToLower(c), f) {
				out = append(out, r)
				break
			}
		}
	}
	return out
}

// view returns rows filtered, then sorted, as a new slice.
func viewRows(rows []row, filter string, col int, desc bool) []row {
	out := filterRows(rows, filter)
	if len(out) == len(rows) {
		out = append([]row(nil), rows...)
	}
	sortRows(out, col, desc)
	return out
}

// summary holds the counts of the header line.
type summary struct {
	agents, ready, functions, instances int
}

func summarize(st *api.ClusterState) summary {
	var s summary
	if st == nil {
		return s
	}
	s.agents = len(st.Agents)
	for _, a := range st.Agents {
		if a.State == api.AgentReady {
			s.ready++
		}
	}
	s.functions = len(st.Functions)
	for _, f := range st.Functions {
		s.instances += liveInstances(f.Instances)
	}
	return s
}

// kpis are the overview's cluster figures.
type kpis struct {
	rate, coldPerMin, coldShare, warmHit float64
	rateOK                               bool
	cost                                 api.Usage
	poolsPerHour                         float64
}

func clusterKPIs(c rowCtx) kpis {
	var k kpis
	k.rate, k.rateOK = c.hist.clusterRate()
	k.coldPerMin, k.coldShare, _ = c.hist.clusterCold()
	var warm, starts int64
	if c.st != nil {
		for i := range c.st.Functions {
			f := &c.st.Functions[i]
			warm += f.Stats.WarmStarts
			starts += f.Stats.WarmStarts + f.Stats.ColdStarts
			k.poolsPerHour += poolCostPerHour(*f, c.prices)
			k.cost.Add(usageEstimate(*f, c.prices))
		}
	}
	k.warmHit = math.NaN()
	if starts > 0 {
		k.warmHit = 100 * float64(warm) / float64(starts)
	}
	return k
}

// liveInstances counts the instances that are not gone.
func liveInstances(ins []api.Instance) int {
	n := 0
	for _, in := range ins {
		if in.State != api.StateGone {
			n++
		}
	}
	return n
}

func agentTone(s api.AgentState) tone {
	switch s {
	case api.AgentReady:
		return toneGood
	case api.AgentSuspect, api.AgentDraining:
		return toneWarn
	case api.AgentGone:
		return toneBad
	}
	return toneNone
}

func loadTone(p float64) tone {
	switch {
	case p >= 90:
		return toneBad
	case p >= 75:
		return toneWarn
	}
	return toneNone
}

func coldTone(p float64) tone {
	switch {
	case math.IsNaN(p):
		return toneNone
	case p >= 10:
		return toneBad
	case p >= 2:
		return toneWarn
	}
	return toneNone
}

func startKind(k api.StartKind) string {
	if k == "" {
		return "-"
	}
	return string(k)
}

func startTone(k api.StartKind) tone {
	switch k {
	case api.StartWarm:
		return toneGood
	case api.StartRestore:
		return toneWarn
	case api.StartCold:
		return toneBad
	}
	return toneNone
}

// sparkW is the width of the agents' sparklines.
const sparkW = 10

var sparkBlocks = []rune("▁▂▃▄▅▆▇█")

// sparkline draws the last width values of vs on a lo..hi scale
// (hi <= lo: scaled to the values' own maximum), right-aligned and padded
// with spaces to width; NaN draws a space.
func sparkline(vs []float64, lo, hi float64, width int) string {
	if width <= 0 {
		return ""
	}
	if len(vs) > width {
		vs = vs[len(vs)-width:]
	}
	if hi <= lo {
		hi = math.Inf(-1)
		for _, v := range vs {
			if !math.IsNaN(v) {
				hi = max(hi, v)
			}
		}
		lo = 0
		if math.IsInf(hi, -1) || hi <= lo {
			hi = lo + 1
		}
	}
	var b strings.Builder
	b.Grow(width * 3) // the blocks are 3 bytes in UTF-8
	for range width - len(vs) {
		b.WriteByte(' ')
	}
	for _, v := range vs {
		if math.IsNaN(v) {
			b.WriteByte(' ')
			continue
		}
		i := int(math.Round((v - lo) / (hi - lo) * float64(len(sparkBlocks)-1)))
		b.WriteRune(sparkBlocks[min(max(i, 0), len(sparkBlocks)-1)])
	}
	return b.String()
}

const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
	tib = 1 << 40
)

// formatBytes renders a byte count with its unit: B and KB as whole
// numbers, MB as a whole number, GB and TB with one decimal.
func formatBytes(b uint64) string {
	switch {
	case b < kib:
		return strconv.FormatUint(b, 10) + " B"
	case b < mib:
		return strconv.FormatUint(b/kib, 10) + " KB"
	case b < gib:
		return strconv.FormatUint(b/mib, 10) + " MB"
	case b < tib:
		return fixed("", float64(b)/gib, 1, " GB")
	default:
		return fixed("", float64(b)/tib, 1, " TB")
	}
}

// formatMem renders used/total memory, each with its unit. An unknown
// total (0) renders as "-".
func formatMem(used, total uint64) string {
	if total == 0 {
		return "-"
	}
	return formatBytes(used) + "/" + formatBytes(total)
}

// formatMB renders a size given in MiB.
func formatMB(mb int) string {
	if mb < 0 {
		return "-"
	}
	return strconv.Itoa(mb) + " MB"
}

// formatWarm renders a pool as "min/max" ("-" for no cap), with "A" when
// auto mode sizes min_warm.
func formatWarm(p api.PoolStatus) string {
	mx := "-"
	if p.MaxInstances > 0 {
		mx = strconv.Itoa(p.MaxInstances)
	}
	a := ""
	if p.Auto {
		a = "A "
	}
	return a + strconv.Itoa(p.EffectiveMinWarm) + "/" + mx
}

// formatPercent renders a percentage with one decimal; NaN, infinities and
// negatives render as "-".
func formatPercent(p float64) string {
	if math.IsNaN(p) || math.IsInf(p, 0) || p < 0 {
		return "-"
	}
	return fixed("", p, 1, "%")
}

// formatLoad renders a load average with two decimals.
func formatLoad(l float64) string {
	if math.IsNaN(l) || math.IsInf(l, 0) || l < 0 {
		return "-"
	}
	return fixed("", l, 2, "")
}

// formatSeconds renders a duration in seconds ("30s", "2.5s"), below a
// second in milliseconds ("500ms"); zero or negative renders as "-".
func formatSeconds(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d%time.Minute == 0 && d >= time.Minute:
		return fmt.Sprintf("%dm", int64(d/time.Minute))
	case d%time.Second == 0:
		return fmt.Sprintf("%ds", int64(d/time.Second))
	default:
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
}

// formatCount renders a counter exactly below 100000 and compactly above
// (123k, 4.5M, 1.2G) so it fits a narrow column.
func formatCount(n int64) string {
	switch {
	case n < 0:
		return "-"
	case n < 100_000:
		return strconv.FormatInt(n, 10)
	case n < 1_000_000:
		return strconv.FormatInt(n/1000, 10) + "k"
	case n < 1_000_000_000:
		return fixed("", float64(n)/1e6, 1, "M")
	default:
		return fixed("", float64(n)/1e9, 1, "G")
	}
}

// formatMs renders milliseconds with about three significant digits:
// "0.42 ms", "4.20 ms", "42.0 ms", "420 ms", "4.20 s".
func formatMs(ms float64) string {
	switch {
	case math.IsNaN(ms) || ms < 0:
		return "-"
	case ms == 0:
		return "0 ms"
	case ms < 10:
		return fixed("", ms, 2, " ms")
	case ms < 100:
		return fixed("", ms, 1, " ms")
	case ms < 1000:
		return fixed("", ms, 0, " ms")
	case ms < 100_000:
		return fixed("", ms/1000, 2, " s")
	default:
		return fixed("", ms/1000, 0, " s")
	}
}

// formatMsOr renders a quantile, or "-" when nothing was counted.
func formatMsOr(ms float64, n int64) string {
	if n == 0 {
		return "-"
	}
	return formatMs(ms)
}

// formatRate renders invocations per second ("-" until known).
func formatRate(r float64, ok bool) string {
	switch {
	case !ok || math.IsNaN(r) || r < 0:
		return "-"
	case r == 0:
		return "0/s"
	case r < 10:
		return fixed("", r, 2, "/s")
	case r < 100:
		return fixed("", r, 1, "/s")
	}
	return fixed("", r, 0, "/s")
}

// formatGBs renders GB-seconds.
func formatGBs(v float64) string {
	switch {
	case math.IsNaN(v) || v < 0:
		return "-"
	case v == 0:
		return "0 GB-s"
	case v < 10:
		return fixed("", v, 3, " GB-s")
	case v < 1000:
		return fixed("", v, 1, " GB-s")
	}
	return fixed("", v, 0, " GB-s")
}

// formatUSD renders dollars: four decimals below $1 so small bills show,
// two up to $10,000, none above.
func formatUSD(v float64) string {
	switch {
	case math.IsNaN(v) || v < 0:
		return "-"
	case v == 0:
		return "$0"
	case v < 0.0001:
		return "<$0.0001"
	case v < 1:
		return fixed("$", v, 4, "")
	case v < 10_000:
		return fixed("$", v, 2, "")
	}
	return fixed("$", v, 0, "")
}

// fixed renders prefix, x with prec decimals (as %.*f does) and suffix,
// in one allocation: the console formats thousands of figures a second.
func fixed(prefix string, x float64, prec int, suffix string) string {
	var buf [64]byte
	b := append(buf[:0], prefix...)
	b = strconv.AppendFloat(b, x, 'f', prec, 64)
	b = append(b, suffix...)
	return string(b)
}

func padLeft(s string, w int) string {
	if n := len([]rune(s)); n < w {
		return strings.Repeat(" ", w-n) + s
	}
	return s
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
