package tui

import (
	"slices"
	"strings"

	"github.com/amberfn/amber/api"
)

// intake is what the state-derived tables were last built from, so that
// a new state rebuilds only the rows whose inputs changed: a function's
// rows when its status or its rate moved, an agent's row when its status
// or the samples its sparklines draw moved. Everything else keeps the
// rows it had. When the list of functions or agents itself changed, every
// table is built anew. It is a value of the Model, so each copy of a model
// keeps what its own rows came from.
type intake struct {
	st     *api.ClusterState // the state of the last rebuild
	rates  []rateSig         // per function of st: the rate its rows show
	sparks []sparkSig        // per agent of st: what its sparklines draw
	// The billing rows came from this bill, or from st's counters when
	// estimate is set.
	bill     *api.Bill
	estimate bool
	billSet  bool
	patched  int // states taken in by patching (tests look)
}

type rateSig struct {
	v  float64
	ok bool
}

type sparkSig struct {
	cpu, mem   [sparkW]float64
	ncpu, nmem int
}

func sparkOf(h *history, name string) sparkSig {
	var s sparkSig
	if h == nil {
		return s
	}
	c, m := h.cpu[name], h.mem[name]
	c, m = c[max(len(c)-sparkW, 0):], m[max(len(m)-sparkW, 0):]
	s.ncpu, s.nmem = copy(s.cpu[:], c), copy(s.mem[:], m)
	return s
}

// sameFunctionList says whether a and b list the same functions in the
// same order.
func sameFunctionList(a, b *api.ClusterState) bool {
	if a == nil || b == nil || len(a.Functions) != len(b.Functions) {
		return false
	}
	for i := range a.Functions {
		if a.Functions[i].Name != b.Functions[i].Name {
			return false
		}
	}
	return true
}

func sameAgentList(a, b *api.ClusterState) bool {
	if a == nil || b == nil || len(a.Agents) != len(b.Agents) {
		return false
	}
	for i := range a.Agents {
		if a.Agents[i].Name != b.Agents[i].Name {
			return false
		}
	}
	return true
}

// sameFunctionRows says whether every field a function's rows read is the
// same in a and b (its rate aside). Cumulative histograms are compared by
// count, sum and maximum: they only grow, so equal figures are equal
// histograms.
func sameFunctionRows(a, b *api.FunctionStatus) bool {
	if a.Name != b.Name || a.Version != b.Version || a.MemoryMB != b.MemoryMB || a.Stats != b.Stats ||
		a.Pool.PoolSettings != b.Pool.PoolSettings || a.Pool.EffectiveMinWarm != b.Pool.EffectiveMinWarm ||
		!slices.Equal(a.Pool.Shares, b.Pool.Shares) || len(a.Instances) != len(b.Instances) || len(a.Latency) != len(b.Latency) {
		return false
	}
	for i := range a.Instances {
		x, y := &a.Instances[i], &b.Instances[i]
		if x.ID != y.ID || x.Agent != y.Agent || x.State != y.State || x.StartKind != y.StartKind ||
			x.Invocations != y.Invocations || x.MemoryMB != y.MemoryMB || x.MaxMemoryMB != y.MaxMemoryMB || x.Error != y.Error {
			return false
		}
	}
	for k, x := range a.Latency {
		y, ok := b.Latency[k]
		if !ok || (x == nil) != (y == nil) {
			return false
		}
		if x != nil && (x.Count != y.Count || x.SumMs != y.SumMs || x.MaxMs != y.MaxMs) {
			return false
		}
	}
	return true
}

func sameAgentRow(a, b *api.AgentStatus) bool {
	return a.Name == b.Name && a.State == b.State && a.Stats == b.Stats && a.ReservedMB == b.ReservedMB &&
		a.CapacityMB == b.CapacityMB && liveInstances(a.Instances) == liveInstances(b.Instances)
}

// patchRows replaces, in rows itself, the row of each key in changed by
// build's, and sorts rows again by (col, desc) when a replaced row's sort
// cell moved. It returns false when a key is not found (rows is then
// half done, and the caller builds the table anew).
//
// Patching in place, not a copy, is what keeps intake proportional to
// what changed: copying a thousand rows costs more than building ten.
// Like the history, the rows belong to the newest model: Bubble Tea
// keeps only the model Update returned, and the views copy the rows
// they sort or filter.
func patchRows(rows []row, changed []int, key func(int) string, build func(int) row, col int, desc bool) bool {
	out := rows
	resort := false
	for _, i := range changed {
		k := key(i)
		j := slices.IndexFunc(out, func(r row) bool { return r.key == k })
		if j < 0 {
			return false
		}
		r := build(i)
		if compareCell(out[j], r, col) != 0 {
			resort = true
		}
		out[j] = r
	}
	if resort {
		sortRows(out, col, desc)
	}
	return true
}

// patchLimit: above this many changed rows and this share (1/patchLimit)
// of all, building the tables anew is cheaper than finding each row.
const patchLimit = 8

// buildOrder is the order each state-derived table's rows are built in;
// a view sorted the same way and not filtered is the rows themselves.
var buildOrder = map[int]struct {
	col  int
	desc bool
}{
	tblAgents: {0, false}, tblTop: {topColRate, true}, tblFunctions: {0, false},
	tblPools: {0, false}, tblBill: {0, false}, tblInstances: {insColAgent, false},
}

// inBuildOrder says whether table t shows its rows as they are.
func (m *Model) inBuildOrder(t int) bool {
	ts := m.tables[t]
	if strings.TrimSpace(ts.filter) != "" {
		return false
	}
	if ts.sortCol < 0 {
		return true
	}
	o, ok := buildOrder[t]
	return ok && o.col == ts.sortCol && o.desc == ts.desc
}

// rebuildChanged brings the state-derived tables up to m.state, reusing
// the rows of what did not change since the last rebuild. It returns
// false when it cannot (the first state, functions or agents came or
// went), and the caller builds everything.
func (m *Model) rebuildChanged(c rowCtx) bool {
	in, st := &m.in, m.state
	if m.fullRebuild || in.st == nil || !sameFunctionList(in.st, st) || !sameAgentList(in.st, st) || len(in.rates) != len(st.Functions) {
		return false
	}
	rates := make([]rateSig, len(st.Functions))
	var content, shown []int // functions whose status changed; those or whose rate changed
	for i := range st.Functions {
		f := &st.Functions[i]
		v, _, ok := m.hist.fnRate(f.Name)
		rates[i] = rateSig{v, ok}
		same := sameFunctionRows(&in.st.Functions[i], f)
		if !same {
			content = append(content, i)
		}
		if !same || rates[i] != in.rates[i] {
			shown = append(shown, i)
		}
	}
	sparks := make([]sparkSig, len(st.Agents))
	var agents []int
	for i := range st.Agents {
		a := &st.Agents[i]
		sparks[i] = sparkOf(m.hist, a.Name)
		if !sameAgentRow(&in.st.Agents[i], a) || sparks[i] != in.sparks[i] {
			agents = append(agents, i)
		}
	}
	if len(shown) > patchLimit && len(shown)*patchLimit > len(st.Functions) {
		return false
	}

	fnKey := func(i int) string { return st.Functions[i].Name }
	var grid *poolGrid
	if len(content) > 0 {
		grid = newPoolGrid(st)
	}
	nAgents := len(st.Agents)
	c.arena = newRowArena(len(shown)*(fnCols+topCols) + len(content)*(3+nAgents+billCols) + len(agents)*agentCols)
	ok := true
	var touched [numTables]bool
	patch := func(t int, changed []int, key func(int) string, build func(int) row) {
		if !ok || len(changed) == 0 {
			return
		}
		o := buildOrder[t]
		ok, touched[t] = patchRows(m.rows[t], changed, key, build, o.col, o.desc), true
	}
	patch(tblFunctions, shown, fnKey, func(i int) row { return functionRow(c, st.Functions[i]) })
	patch(tblTop, shown, fnKey, func(i int) row { return topRow(c, st.Functions[i]) })
	patch(tblPools, content, fnKey, func(i int) row { return grid.row(c.arena, st.Functions[i]) })
	patch(tblAgents, agents, func(i int) string { return st.Agents[i].Name }, func(i int) row { return agentRow(c, st.Agents[i]) })
	billFromBill := m.bill != nil && m.billErr == nil
	switch {
	case !in.billSet || in.estimate == billFromBill || (billFromBill && in.bill != m.bill):
		ok = false // the bill changed: built anew
	case billFromBill:
		// The bill's rows read the state only for the pools' cost.
		for _, i := range content {
			if poolCostPerHour(in.st.Functions[i], m.prices) != poolCostPerHour(st.Functions[i], m.prices) {
				ok = false
			}
		}
	default:
		patch(tblBill, content, fnKey, func(i int) row {
			f := st.Functions[i]
			return billRowCost(c.arena, usageEstimate(f, m.prices), poolCostPerHour(f, m.prices))
		})
	}
	if !ok {
		return false
	}

	for _, t := range []int{tblAgents, tblTop, tblFunctions, tblPools, tblBill} {
		if touched[t] {
			m.follow(t) // else the cursor stays where it is
		}
	}
	m.rows[tblInstances] = instanceRows(st, m.detailFn)
	m.follow(tblInstances)
	in.st, in.rates, in.sparks = st, rates, sparks
	in.patched++
	return true
}

// remember records what a full rebuild built the tables from.
func (m *Model) remember(c rowCtx) {
	st := m.state
	in := &m.in
	in.st = st
	in.rates, in.sparks = nil, nil
	if st == nil {
		return
	}
	in.rates = make([]rateSig, len(st.Functions))
	for i := range st.Functions {
		v, _, ok := c.hist.fnRate(st.Functions[i].Name)
		in.rates[i] = rateSig{v, ok}
	}
	in.sparks = make([]sparkSig, len(st.Agents))
	for i := range st.Agents {
		in.sparks[i] = sparkOf(c.hist, st.Agents[i].Name)
	}
}
