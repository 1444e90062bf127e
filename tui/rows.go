package tui

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/amberfn/amber/api"
)

// This file is the data layer: pure functions that turn an
// api.ClusterState into the text cells the view draws. Nothing here knows
// about Bubble Tea, terminals or colour.

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
// cursor follows across updates, the cells in column order, and a tone per
// cell (nil means no colouring).
type row struct {
	key   string
	cells []string
	tones []tone
}

// Column indexes of the agents table.
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

// Column indexes of the functions table.
const (
	fnColName = iota
	fnColVer
	fnColMem
	fnColTimeout
	fnColIdle
	fnColBusy
	fnColInvoc
	fnColErr
	fnColLast
	fnCols
)

// agentRows builds the agents table, sorted by name.
func agentRows(st *api.ClusterState) []row {
	if st == nil {
		return nil
	}
	rows := make([]row, 0, len(st.Agents))
	for _, a := range st.Agents {
		cells := make([]string, agentCols)
		tones := make([]tone, agentCols)
		cells[agentColName] = a.Name
		cells[agentColState] = string(a.State)
		if cells[agentColState] == "" {
			cells[agentColState] = "-"
		}
		tones[agentColState] = agentTone(a.State)
		cells[agentColCPU] = formatPercent(a.Stats.CPUPercent)
		cells[agentColMem] = formatMem(a.Stats.MemUsedBytes, a.Stats.MemTotalBytes)
		cells[agentColLoad] = formatLoad(a.Stats.Load1)
		cells[agentColInst] = fmt.Sprint(liveInstances(a.Instances))
		cells[agentColReserved] = formatMB(a.ReservedMB)
		if a.State == api.AgentGone {
			// The figures of a gone agent are stale: dim the whole row.
			for i := range tones {
				if i != agentColState {
					tones[i] = toneDim
				}
			}
		}
		rows = append(rows, row{key: a.Name, cells: cells, tones: tones})
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].key < rows[j].key })
	return rows
}

// functionRows builds the functions table, sorted by name.
func functionRows(st *api.ClusterState) []row {
	if st == nil {
		return nil
	}
	rows := make([]row, 0, len(st.Functions))
	for _, f := range st.Functions {
		cells := make([]string, fnCols)
		tones := make([]tone, fnCols)
		idle, busy := 0, 0
		for _, in := range f.Instances {
			switch in.State {
			case api.StateIdle:
				idle++
			case api.StateBusy:
				busy++
			}
		}
		cells[fnColName] = f.Name
		cells[fnColVer] = fmt.Sprint(f.Version)
		cells[fnColMem] = formatMB(f.MemoryMB)
		cells[fnColTimeout] = formatSeconds(time.Duration(f.Timeout))
		cells[fnColIdle] = fmt.Sprint(idle)
		cells[fnColBusy] = fmt.Sprint(busy)
		if busy > 0 {
			tones[fnColBusy] = toneGood
		}
		cells[fnColInvoc] = formatCount(f.Stats.Invocations)
		cells[fnColErr] = formatCount(f.Stats.Errors)
		if f.Stats.Errors > 0 {
			tones[fnColErr] = toneBad
		}
		cells[fnColLast] = startKind(f.Stats.LastStartKind)
		tones[fnColLast] = startTone(f.Stats.LastStartKind)
		rows = append(rows, row{key: f.Name, cells: cells, tones: tones})
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].key < rows[j].key })
	return rows
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
	case api.AgentSuspect:
		return toneWarn
	case api.AgentGone:
		return toneBad
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
		return fmt.Sprintf("%d B", b)
	case b < mib:
		return fmt.Sprintf("%d KB", b/kib)
	case b < gib:
		return fmt.Sprintf("%d MB", b/mib)
	case b < tib:
		return fmt.Sprintf("%.1f GB", float64(b)/gib)
	default:
		return fmt.Sprintf("%.1f TB", float64(b)/tib)
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
	return fmt.Sprintf("%d MB", mb)
}

// formatPercent renders a percentage with one decimal; NaN, infinities and
// negatives render as "-".
func formatPercent(p float64) string {
	if math.IsNaN(p) || math.IsInf(p, 0) || p < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", p)
}

// formatLoad renders a load average with two decimals.
func formatLoad(l float64) string {
	if math.IsNaN(l) || math.IsInf(l, 0) || l < 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", l)
}

// formatSeconds renders a duration in seconds ("30s", "2.5s"), below a
// second in milliseconds ("500ms"); zero or negative renders as "-".
func formatSeconds(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
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
		return fmt.Sprint(n)
	case n < 1_000_000:
		return fmt.Sprintf("%dk", n/1000)
	case n < 1_000_000_000:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	default:
		return fmt.Sprintf("%.1fG", float64(n)/1e9)
	}
}
