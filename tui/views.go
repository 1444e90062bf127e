package tui

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/x/ansi"

	"github.com/amberfn/amber/api"
)

// This file draws the body of each view. Every function gets the width
// and the number of lines it may use and returns at most that many lines;
// the frame cuts every line to the width.

// pickFit returns the first candidate that fits w cells, else the last.
func pickFit(w int, cands ...string) string {
	for _, c := range cands {
		if ansi.StringWidth(c) <= w {
			return c
		}
	}
	return cands[len(cands)-1]
}

// joinFit joins parts with sep, leaving out parts from the end until
// the line fits w.
func joinFit(w int, sep string, parts ...string) string {
	for n := len(parts); n > 0; n-- {
		s := strings.Join(parts[:n], sep)
		if ansi.StringWidth(s) <= w {
			return s
		}
	}
	return ""
}

// kpiLines are the overview's cluster figures: traffic, then money.
func (m Model) kpiLines(st styles, w int) []string {
	if m.state == nil {
		return []string{"  " + st.render(st.dim, "waiting for the first state from the scheduler …"), ""}
	}
	k := m.kpi
	rate := "invocations " + formatRate(k.rate, k.rateOK)
	if sp := strings.TrimLeft(sparkline(m.hist.rate, 0, 0, 20), " "); sp != "" && k.rateOK {
		rate += " " + st.render(st.bar, sp)
	}
	cold := "cold starts " + fmt.Sprintf("%.1f/min", k.coldPerMin)
	if !math.IsNaN(k.coldShare) {
		cold += " (" + formatPercent(k.coldShare) + ")"
	}
	warm := "warm hits " + formatPercent(k.warmHit)
	cost := "cost so far " + formatUSD(k.cost.Cost) + " (estimate: " + formatUSD(k.cost.ComputeCost) + " compute, " +
		formatUSD(k.cost.RequestCost) + " requests, " + formatUSD(k.cost.WarmthCost) + " warmth)"
	pools := "warm pools " + formatUSD(k.poolsPerHour) + "/h"
	return []string{
		"  " + joinFit(w-2, " · ", rate, cold, warm),
		"  " + pickFit(w-2, cost+" · "+pools, "cost so far "+formatUSD(k.cost.Cost)+" est. · "+pools, "cost so far "+formatUSD(k.cost.Cost)+" est."),
	}
}

func (m Model) overviewBody(st styles, w, h int) []string {
	out := m.kpiLines(st, w)
	if h <= 8 {
		out = out[:1]
	} else {
		out = append(out, "")
	}
	return append(out, m.twoTables(st, w, h-len(out),
		tableSpec{t: tblAgents, name: "AGENTS", empty: "(no agents)"},
		tableSpec{t: tblTop, name: "FUNCTIONS", empty: "(no functions)"})...)
}

// tradeoff is auto mode's advice for f: what it would keep warm, what
// that costs and what it saves.
func tradeoff(f *api.FunctionStatus, p api.Prices) string {
	r := f.Pool.Recommendation
	s := fmt.Sprintf("auto: keep %d → %s/h warmth (%s/h) vs %.1f cold starts/h avoided",
		r.MinWarm, formatUSD(recCostPerHour(r, p)), formatGBs(r.WarmthGBsPerHour), r.ColdStartsAvoidedPerHour)
	if r.Reason != "" {
		s += " · " + r.Reason
	}
	return s
}

// poolLine is a function's pool with what it costs, and what one more
// warm instance would cost.
func poolLine(f *api.FunctionStatus, p api.Prices) string {
	mode := ""
	if f.Pool.Auto {
		mode = fmt.Sprintf(" (auto, at most %d)", f.Pool.AutoMax)
	}
	ka := f.Pool.KeepAlive
	if ka == 0 {
		ka = api.Duration(api.DefaultKeepAlive)
	}
	return fmt.Sprintf("min_warm %d%s · max %s · keep-alive %s · %s/h (+1: +%s/h)",
		f.Pool.EffectiveMinWarm, mode, maxText(f.Pool.MaxInstances), formatSeconds(time.Duration(ka)),
		formatUSD(poolCostPerHour(*f, p)), formatUSD(warmCostPerHour(1, f.MemoryMB, p)))
}

func (m Model) functionsBody(st styles, w, h int) []string {
	var info []string
	if f := findFunction(m.state, m.actionFn()); f != nil && h >= 8 {
		info = []string{
			"",
			"  " + st.render(st.header, f.Name) + " · " + poolLine(f, m.prices),
			"  " + st.render(st.dim, tradeoff(f, m.prices)),
		}
	}
	out := m.section(st, w, h-len(info), tableSpec{t: tblFunctions, name: "FUNCTIONS", empty: "(no functions)", focused: true})
	return append(out, info...)
}

func (m Model) poolsBody(st styles, w, h int) []string {
	legend := st.render(st.dim, "  per agent: idle+busy/target (the agent's share of min_warm) · · none")
	out := m.section(st, w, h-1, tableSpec{t: tblPools, name: "POOLS", empty: "(no functions)", focused: true})
	if h >= 4 {
		for len(out) < h-1 {
			out = append(out, "")
		}
		out = append(out, legend)
	}
	return out
}

// latencyBody draws, for the function chosen (or all), one histogram per
// start kind over the chosen window, with p50, p90 and p99 marked and the
// p99 trend.
func (m Model) latencyBody(st styles, w, h int) []string {
	fn := m.latFn
	who := "all functions"
	if fn != "" {
		who = fn
	}
	win := latWindows[m.latWindow]
	hs, span := m.hist.windowLatency(m.state, fn, stateTime(m.state, m.now()), win.d)
	wl := "window " + win.label
	if win.d > 0 && span > 0 && span < win.d-latStep {
		wl += " (" + formatSeconds(span.Round(time.Second)) + " so far)"
	}
	if win.d == 0 {
		wl = "since the scheduler started"
	}
	var wins []string
	for i, x := range latWindows {
		if i == m.latWindow {
			wins = append(wins, "["+x.label+"]")
		} else {
			wins = append(wins, x.label)
		}
	}
	title := titleRule(st, st.titleFocus, "━", pickFit(w-4, "LATENCY · "+who+" · "+wl+" · "+strings.Join(wins, " "), "LATENCY · "+who+" · "+wl, "LATENCY · "+who), w)
	out := []string{title}
	kinds := []api.StartKind{api.StartCold, api.StartRestore, api.StartWarm}
	var with []api.StartKind
	for _, k := range kinds {
		if hs[k] != nil && hs[k].Count > 0 {
			with = append(with, k)
		}
	}
	avail := h - 1 - (len(kinds) - len(with)) // one line per empty kind
	for _, k := range kinds {
		hg := hs[k]
		if hg == nil || hg.Count == 0 {
			out = append(out, "  "+st.render(st.dim, fmt.Sprintf("%-7s no invocations in this window", k)))
			continue
		}
		n := avail / len(with)
		out = append(out, m.histBlock(st, w, n, fn, k, hg)...)
	}
	return out
}

// histBlock draws one start kind's histogram in at most n lines: a title
// with n, p50, p90, p99, max and the p99 trend, then horizontal bars over
// the log-scaled buckets (neighbours merged to fit), quantiles marked.
func (m Model) histBlock(st styles, w, n int, fn string, k api.StartKind, hg *api.Histogram) []string {
	if n <= 0 {
		return nil
	}
	q := func(x float64) string { return formatMs(hg.Quantile(x)) }
	head := fmt.Sprintf("%-7s n=%-6d p50 %-8s p90 %-8s p99 %-8s max %s", k, hg.Count, q(0.5), q(0.9), q(0.99), formatMs(hg.MaxMs))
	head = strings.TrimRight(head, " ")
	if room := w - 2 - ansi.StringWidth(head) - len("   p99 trend "); room >= 8 {
		tr := m.hist.p99Trend(m.state, fn, k, min(room, 40))
		points := 0
		for _, v := range tr {
			if !math.IsNaN(v) {
				points++
			}
		}
		if sp := strings.TrimLeft(sparkline(tr, 0, 0, len(tr)), " "); points >= 2 {
			head += "   p99 trend " + st.render(st.bar, sp)
		}
	}
	out := []string{"  " + st.render(st.header, head)}
	rows := n - 1
	if rows <= 0 {
		return out
	}
	lo, hi := -1, -1
	for i, c := range hg.Counts {
		if c > 0 {
			if lo < 0 {
				lo = i
			}
			hi = i
		}
	}
	if lo < 0 {
		return out
	}
	// Group neighbouring buckets so the range fits the rows; show at
	// least 3 rows of context when the values sit in one bucket.
	span := hi - lo + 1
	if span < rows {
		pad := min(rows-span, 4)
		lo = max(lo-pad/2, 0)
		hi = min(hi+(pad-pad/2), len(hg.Counts)-1)
		span = hi - lo + 1
	}
	g := (span + rows - 1) / rows
	type bar struct {
		bound float64
		count int64
		marks []string
	}
	var bars []bar
	marks := map[int][]string{}
	for _, qq := range []struct {
		q float64
		s string
	}{{0.5, "p50"}, {0.9, "p90"}, {0.99, "p99"}} {
		b := quantileBucket(hg, qq.q)
		marks[b] = append(marks[b], qq.s)
	}
	var top int64
	for s := lo; s <= hi; s += g {
		e := min(s+g-1, hi)
		b := bar{bound: api.BucketBound(e)}
		for i := s; i <= e; i++ {
			b.count += hg.Counts[i]
			b.marks = append(b.marks, marks[i]...)
		}
		top = max(top, b.count)
		bars = append(bars, b)
	}
	labelW := 0
	for _, b := range bars {
		labelW = max(labelW, ansi.StringWidth(formatMs(b.bound)))
	}
	countW := len(fmt.Sprint(top))
	barW := min(max(w-2-2-labelW-1-countW-1-16, 4), 60)
	for _, b := range bars {
		filled := float64(b.count) / float64(max(top, 1)) * float64(barW)
		barText := blocks(filled)
		line := fmt.Sprintf("  ≤ %s %s %s", padLeft(formatMs(b.bound), labelW), padLeft(fmt.Sprint(b.count), countW), st.render(st.bar, barText))
		if len(b.marks) > 0 {
			line += strings.Repeat(" ", barW-ansi.StringWidth(barText)+1) + st.render(st.mark, "◂ "+strings.Join(b.marks, " "))
		}
		out = append(out, line)
	}
	return out
}

// blocks draws a bar of width v cells with eighth-block precision.
func blocks(v float64) string {
	if v <= 0 || math.IsNaN(v) {
		return ""
	}
	full := int(v)
	rest := int((v - float64(full)) * 8)
	s := strings.Repeat("█", full)
	if rest > 0 {
		s += string([]rune("▏▎▍▌▋▊▉")[rest-1])
	}
	if s == "" {
		s = "▏"
	}
	return s
}

func (m Model) billBody(st styles, w, h int) []string {
	_, total, poolsPerHour, _, estimate := m.billUsage()
	var per []string
	for i, p := range billPeriods {
		if i == m.billPeriod {
			per = append(per, "["+p.label+"]")
		} else {
			per = append(per, p.label)
		}
	}
	var src string
	switch {
	case !estimate:
		src = fmt.Sprintf("ledger %s – %s UTC", m.bill.Since.UTC().Format("Jan 2 15:04"), m.bill.Until.UTC().Format("Jan 2 15:04"))
	case m.billErr != nil:
		src = st.render(st.warn, "estimate since the scheduler started (bill: "+oneLine(m.billErr.Error())+")")
	default:
		if _, ok := m.src.(Biller); ok && m.billBusy {
			src = st.render(st.warn, "estimate since the scheduler started (loading the bill …)")
		} else {
			src = st.render(st.warn, "estimate since the scheduler started, AWS prices")
		}
	}
	out := []string{"  period " + strings.Join(per, " ") + " · " + src}
	if h > 8 {
		out = append(out, "")
	}
	tail := 4
	if h < 9 {
		tail = 0
	}
	sec := m.section(st, w, h-len(out)-tail, tableSpec{t: tblBill, name: "BILLING", empty: "(no usage)", focused: true,
		extra: []row{totalRow(total, poolsPerHour)}})
	out = append(out, sec...)
	if tail == 0 {
		return out
	}
	// Totals line up under the table's columns.
	cols := billColumns
	widths := fitColumns(cols, append(m.visible(tblBill), totalRow(total, poolsPerHour)), w)
	out = append(out, st.render(st.dim, "  "+strings.Repeat("─", max(ansi.StringWidth(renderCells(cols, widths, titles(cols)))-2, 0))))
	out = append(out, st.render(st.header, renderCells(cols, widths, totalRow(total, poolsPerHour).cells)))
	est := ""
	if estimate {
		est = " (estimate)"
	}
	out = append(out, fmt.Sprintf("  the current warm pools cost %s/hour%s", formatUSD(poolsPerHour), est))
	out = append(out, fmt.Sprintf("  of the total: requests %s · compute %s · warmth %s",
		formatUSD(total.RequestCost), formatUSD(total.ComputeCost), formatUSD(total.WarmthCost)))
	return out
}

func (m Model) eventsBody(st styles, w, h int) []string {
	logs := "LOGS"
	if m.selFn != "" {
		logs = "LOGS · " + m.selFn
	}
	out := m.twoTables(st, w, h,
		tableSpec{t: tblEvents, name: "EVENTS", empty: "(no events yet)"},
		tableSpec{t: tblLogs, name: logs, empty: m.logsEmpty()})
	return out
}

func (m Model) logsEmpty() string {
	switch {
	case m.logTarget() == "":
		return "(select a function: l on a function row)"
	case m.logsErr != nil:
		return "(logs: " + oneLine(m.logsErr.Error()) + ")"
	case m.logsBusy && m.logs == nil:
		return "(loading …)"
	}
	return "(no log lines)"
}

func (m Model) detailBody(st styles, w, h int) []string {
	f := findFunction(m.state, m.detailFn)
	if f == nil {
		return []string{titleRule(st, st.titleFocus, "━", "FUNCTION "+m.detailFn, w), st.render(st.dim, "  (not in the cluster state)")}
	}
	idle, busy, init := instanceCounts(f.Instances)
	head := fmt.Sprintf("FUNCTION %s · v%d · %s · timeout %s", f.Name, f.Version, formatMB(f.MemoryMB), formatSeconds(time.Duration(f.Timeout)))
	out := []string{titleRule(st, st.titleFocus, "━", head, w)}
	info := []string{
		"  " + poolLine(f, m.prices),
		"  " + st.render(st.dim, tradeoff(f, m.prices)),
		fmt.Sprintf("  %d idle · %d busy · %d starting · %s invocations · %s errors · %d throttled · queue wait %s",
			idle, busy, init, formatCount(f.Stats.Invocations), formatCount(f.Stats.Errors), f.Stats.Throttles, formatMs(float64(f.Stats.QueueWaitMs))),
	}
	if h < 14 {
		info = info[:1]
	}
	out = append(out, info...)
	rest := h - len(out)
	// Latency: one line per start kind, under a title.
	var lat []string
	if rest >= 14 {
		lat = append(lat, "", titleRule(st, st.title, "─", "LATENCY (since the scheduler started)", w))
		for _, k := range []api.StartKind{api.StartCold, api.StartRestore, api.StartWarm} {
			hg := f.Latency[k]
			if hg == nil || hg.Count == 0 {
				lat = append(lat, "  "+st.render(st.dim, fmt.Sprintf("%-7s no invocations", k)))
				continue
			}
			lat = append(lat, fmt.Sprintf("  %-7s n=%-6d p50 %-8s p90 %-8s p99 %-8s max %s", k, hg.Count,
				formatMs(hg.Quantile(0.5)), formatMs(hg.Quantile(0.9)), formatMs(hg.Quantile(0.99)), formatMs(hg.MaxMs)))
		}
		lat = append(lat, "")
	}
	focus := min(m.pane[viewDetail], 1)
	ins := tableSpec{t: tblInstances, name: "INSTANCES", empty: "(no instances)", focused: focus == 0}
	logs := tableSpec{t: tblLogs, name: "LOGS", empty: m.logsEmpty(), focused: focus == 1}
	need := [2]int{2 + max(1, len(m.visible(tblInstances))), 2 + max(1, len(m.visible(tblLogs)))}
	lines, _ := share(rest-len(lat), need, focus)
	if len(lat) > 0 && lines[1] == 0 {
		lines, _ = share(rest, need, focus)
		lat = nil
	}
	out = append(out, m.section(st, w, lines[0], ins)...)
	out = append(out, lat...)
	return append(out, m.section(st, w, lines[1], logs)...)
}

// helpBody lists every key by group and the palette's commands, packed
// into as few lines as the width allows.
func (m Model) helpBody(st styles, w, h int) []string {
	var groups [][]string
	for i, g := range m.keys.FullHelp() {
		lines := []string{helpGroupTitles[i]}
		for _, b := range g {
			lines = append(lines, helpEntry(b))
		}
		groups = append(groups, lines)
	}
	cmds := []string{"COMMANDS"}
	for _, c := range commands {
		cmds = append(cmds, fmt.Sprintf("%-8s %s", ":"+c.names[0], c.desc))
	}
	groups = append(groups, cmds)
	if m.readOnly {
		groups = append(groups, []string{"READ-ONLY", "+ - e i are off"})
	}
	titles := map[string]bool{"COMMANDS": true, "READ-ONLY": true}
	for _, t := range helpGroupTitles {
		titles[t] = true
	}
	cols := packGroups(groups, w-2)
	out := []string{titleRule(st, st.titleFocus, "━", "HELP · amber console", w)}
	tall := 0
	widths := make([]int, len(cols))
	for i, c := range cols {
		tall = max(tall, len(c))
		widths[i] = maxWidth(c) + 4
	}
	for r := 0; r < tall; r++ {
		var b strings.Builder
		b.WriteString("  ")
		for ci, c := range cols {
			cell := ""
			if r < len(c) {
				cell = c[r]
			}
			text := cell
			if ci < len(cols)-1 {
				text = padCell(cell, widths[ci], false)
			}
			if titles[cell] {
				text = st.render(st.titleFocus, text)
			}
			b.WriteString(text)
		}
		out = append(out, b.String())
	}
	return out
}

// packGroups lays groups (kept whole, in order) into columns: the
// shortest layout whose columns fit w cells side by side.
func packGroups(groups [][]string, w int) [][]string {
	total := 0
	tallest := 0
	for _, g := range groups {
		total += len(g) + 1
		tallest = max(tallest, len(g))
	}
	var best [][]string
	for h := tallest; h <= total; h++ {
		var cols [][]string
		var cur []string
		for _, g := range groups {
			need := len(g)
			if len(cur) > 0 {
				need++ // blank between groups
			}
			if len(cur) > 0 && len(cur)+need > h {
				cols = append(cols, cur)
				cur = nil
			}
			if len(cur) > 0 {
				cur = append(cur, "")
			}
			cur = append(cur, g...)
		}
		cols = append(cols, cur)
		width := 0
		for _, c := range cols {
			width += maxWidth(c) + 4
		}
		if width-4 <= w {
			return cols
		}
		best = cols
	}
	return best
}

func helpEntry(b key.Binding) string {
	h := b.Help()
	return fmt.Sprintf("%-6s %s", h.Key, h.Desc)
}

// formBody is the pool editor with the trade-off under it.
func (m Model) formBody(st styles, w, h int) []string {
	f := m.form
	fs := findFunction(m.state, f.fn)
	out := []string{titleRule(st, st.titleFocus, "━", "EDIT POOL · "+f.fn, w), ""}
	hints := [3]string{
		fmt.Sprintf("instances kept idle and initialised (0–%d)", api.MaxMinWarm),
		"concurrent instances; 0 is no cap",
		"idle lifetime above min warm (1s–24h)",
	}
	for i, in := range f.fields {
		val := in.Value()
		cell := val
		if i == f.focus {
			if st.on {
				cell = val + st.render(st.selected, " ")
			} else {
				cell = val + "_"
			}
		}
		marker := "  "
		if i == f.focus {
			marker = "> "
		}
		box := "[" + cell + strings.Repeat(" ", max(11-ansi.StringWidth(cell), 0))
		box += "]"
		out = append(out, fmt.Sprintf("%s%-14s %s  %s", marker, formLabels[i], box, st.render(st.dim, hints[i])))
	}
	out = append(out, "")
	if fs != nil {
		out = append(out, "  now: "+poolLine(fs, m.prices))
		out = append(out, "  "+tradeoff(fs, m.prices))
	}
	if f.err != "" {
		out = append(out, "", st.render(st.bad, "  ✗ "+f.err))
	}
	return out
}

// invokePanel shows the last invocation's result.
func (m Model) invokePanel(st styles, w, n int) []string {
	iv := m.invoke
	out := []string{titleRule(st, st.title, "─", "INVOKE "+iv.name+" · esc closes", w)}
	if iv.err != nil {
		return append(out, st.render(st.bad, "  ✗ "+oneLine(iv.err.Error())))
	}
	r := iv.res
	mark, t := "✓", st.good
	if r.FunctionError != "" {
		mark, t = "✗ "+r.FunctionError, st.bad
	}
	line := fmt.Sprintf("  %s %s start · %s (billed %d ms) · agent %s · v%d · %d/%d MB",
		st.render(t, mark), startKind(r.StartKind), formatMs(float64(r.Duration.Microseconds())/1000), r.BilledMs, or(r.Agent, "-"), r.Version, r.MaxMemoryMB, r.MemoryMB)
	if r.InitDuration > 0 {
		line += " · init " + formatMs(float64(r.InitDuration.Microseconds())/1000)
	}
	out = append(out, line)
	// The payload is the function's: strip escapes and control bytes.
	payload := strings.ReplaceAll(ansi.Strip(strings.TrimSpace(string(r.Payload))), "\t", "  ")
	for _, l := range strings.Split(payload, "\n") {
		if len(out) >= n {
			break
		}
		out = append(out, "  "+strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return -1
			}
			return r
		}, l))
	}
	return out
}
