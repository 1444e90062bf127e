package tui

import (
	"fmt"
	"strings"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
)

// This file is the view: it lays the model out on a width × height screen.
// Widths are computed on plain text first and colour is applied last, so
// the layout is identical with and without colour.

const (
	helpTitle  = "KEYS"
	timeLayout = "15:04:05"
	colGap     = 2 // spaces between columns
	markerW    = 2 // "> " cursor marker before each row
	ellipsis   = "…"
)

// column describes one table column.
type column struct {
	title string
	right bool // right-align (numbers)
	flex  bool // shrinks before any column is dropped (the NAME column)
	min   int  // smallest width of a flex column before columns are dropped
	max   int  // cap on the natural width; 0 for none
	drop  int  // drop order on narrow screens: highest first; 0 never
}

var agentColumns = [agentCols]column{
	agentColName:     {title: "NAME", flex: true, min: 8, max: 24},
	agentColState:    {title: "STATE", drop: 2},
	agentColCPU:      {title: "CPU", right: true, drop: 3},
	agentColMem:      {title: "MEM", right: true, drop: 4},
	agentColLoad:     {title: "LOAD", right: true, drop: 6},
	agentColInst:     {title: "INST", right: true, drop: 5},
	agentColReserved: {title: "RESERVED", right: true, drop: 7},
}

var functionColumns = [fnCols]column{
	fnColName:    {title: "NAME", flex: true, min: 8, max: 32},
	fnColVer:     {title: "VER", right: true, drop: 9},
	fnColMem:     {title: "MEM", right: true, drop: 7},
	fnColTimeout: {title: "TIMEOUT", right: true, drop: 8},
	fnColIdle:    {title: "IDLE", right: true, drop: 3},
	fnColBusy:    {title: "BUSY", right: true, drop: 2},
	fnColInvoc:   {title: "INVOC", right: true, drop: 4},
	fnColErr:     {title: "ERR", right: true, drop: 5},
	fnColLast:    {title: "LAST", drop: 6},
}

// styles holds the lipgloss styles; with colour off every style is the
// zero style, which renders text unchanged.
type styles struct {
	brand, good, warn, bad, dim, header, title, titleFocus, selected lipgloss.Style
	helpKey, helpDesc, helpSep                                       lipgloss.Style
	on                                                               bool
}

func newStyles(on bool) styles {
	if !on {
		return styles{}
	}
	amber := lipgloss.Color("214")
	return styles{
		on:         true,
		brand:      lipgloss.NewStyle().Bold(true).Foreground(amber),
		good:       lipgloss.NewStyle().Foreground(lipgloss.Color("2")),
		warn:       lipgloss.NewStyle().Foreground(lipgloss.Color("3")),
		bad:        lipgloss.NewStyle().Foreground(lipgloss.Color("1")),
		dim:        lipgloss.NewStyle().Faint(true),
		header:     lipgloss.NewStyle().Bold(true),
		title:      lipgloss.NewStyle().Faint(true),
		titleFocus: lipgloss.NewStyle().Bold(true).Foreground(amber),
		selected:   lipgloss.NewStyle().Reverse(true),
		helpKey:    lipgloss.NewStyle().Bold(true),
		helpDesc:   lipgloss.NewStyle().Faint(true),
		helpSep:    lipgloss.NewStyle().Faint(true),
	}
}

// newHelp returns the footer's help bubble. Its styles are set on every
// render from the model's colour setting (see helpStyles).
func newHelp() help.Model {
	h := help.New()
	h.ShortSeparator = " · "
	h.FullSeparator = "    "
	h.Ellipsis = ellipsis
	return h
}

// helpStyles replaces the help bubble's default (adaptive colour) styles
// with ours; with colour off they are all the zero style, so the footer
// is plain text whatever the terminal.
func (s styles) helpStyles() help.Styles {
	return help.Styles{
		Ellipsis:       s.helpSep,
		ShortKey:       s.helpKey,
		ShortDesc:      s.helpDesc,
		ShortSeparator: s.helpSep,
		FullKey:        s.helpKey,
		FullDesc:       s.helpDesc,
		FullSeparator:  s.helpSep,
	}
}

func (s styles) render(st lipgloss.Style, text string) string {
	if !s.on || text == "" {
		return text
	}
	return st.Render(text)
}

func (s styles) tone(t tone) lipgloss.Style {
	switch t {
	case toneGood:
		return s.good
	case toneWarn:
		return s.warn
	case toneBad:
		return s.bad
	case toneDim:
		return s.dim
	}
	return lipgloss.NewStyle()
}

// View draws the screen: header, agents, functions, footer. It never
// writes more than height lines nor a line wider than width.
func (m Model) View() string {
	w, h := m.width, m.height
	if w <= 0 || h <= 0 {
		return ""
	}
	st := newStyles(m.color)
	lines := []string{m.headerLine(st, w)}
	if m.err != nil && h >= 4 {
		lines = append(lines, m.errorLine(st))
	}
	if h >= 2 {
		foot := m.footer(st, w, h-len(lines))
		bodyH := h - len(lines) - len(foot)
		body := m.body(st, w, bodyH)
		for len(body) < bodyH {
			body = append(body, "")
		}
		lines = append(lines, body...)
		lines = append(lines, foot...)
	}
	for i, l := range lines {
		lines[i] = fit(l, w)
	}
	return strings.Join(lines, "\n")
}

// footer draws the key help in at most avail lines: the short help on
// one line, or, when ? has opened it, the full help under a title rule.
// The full help takes the first of its layouts that fits w × avail; if
// none does it falls back to the short help, which the help bubble cuts
// to the width.
func (m Model) footer(st styles, w, avail int) []string {
	hm := m.help
	hm.Styles = st.helpStyles()
	if hm.ShowAll {
		hm.Width = 0 // measured here rather than cut by the bubble
		for _, groups := range m.keys.fullHelpLayouts() {
			lines := strings.Split(hm.FullHelpView(groups), "\n")
			if 1+len(lines) > avail || markerW+maxWidth(lines) > w {
				continue
			}
			out := []string{titleRule(st, st.title, "─", helpTitle, w)}
			for _, l := range lines {
				l = strings.Repeat(" ", markerW) + l // line up with the table rows
				if !st.on {
					l = strings.TrimRight(l, " ")
				}
				out = append(out, l)
			}
			return out
		}
	}
	hm.Width = w
	return []string{hm.ShortHelpView(m.keys.ShortHelp())}
}

func maxWidth(lines []string) int {
	w := 0
	for _, l := range lines {
		w = max(w, ansi.StringWidth(l))
	}
	return w
}

// titleRule is "─ LABEL ────…" across the width.
func titleRule(st styles, style lipgloss.Style, ruleCh, label string, w int) string {
	title := ruleCh + " " + label + " "
	title += strings.Repeat(ruleCh, max(w-ansi.StringWidth(title), 0))
	return st.render(style, title)
}

// fit cuts a (possibly styled) line to width cells.
func fit(s string, w int) string {
	if ansi.StringWidth(s) <= w {
		return s
	}
	return ansi.Truncate(s, w, ellipsis)
}

// headerLine is "amber  <status>   <counts>", with the counts pushed to
// the right edge. On narrower screens it falls back to shorter wordings,
// then drops the counts, then cuts the line.
func (m Model) headerLine(st styles, w int) string {
	brand := st.render(st.brand, "amber") + "  "
	var long, short string
	switch {
	case m.err != nil:
		last := "never"
		if !m.lastUpdate.IsZero() {
			last = m.lastUpdate.Format(timeLayout)
		}
		mark := st.render(st.bad, "○ disconnected")
		long, short = mark+" · last update "+last, mark+" · "+last
	case m.lastUpdate.IsZero():
		long = st.render(st.warn, "… connecting")
		short = long
	default:
		mark := st.render(st.good, "● connected")
		at := m.lastUpdate.Format(timeLayout)
		long, short = mark+" · updated "+at, mark+" · "+at
	}
	var full, brief string
	if m.state != nil {
		full = fmt.Sprintf("agents %d/%d ready · functions %d · instances %d",
			m.sum.ready, m.sum.agents, m.sum.functions, m.sum.instances)
		brief = fmt.Sprintf("%d/%d ready · %d fn · %d inst",
			m.sum.ready, m.sum.agents, m.sum.functions, m.sum.instances)
	}
	for _, c := range [][2]string{{long, full}, {short, full}, {long, brief}, {short, brief}, {long, ""}, {short, ""}} {
		left, right := brand+c[0], c[1]
		lw, rw := ansi.StringWidth(left), ansi.StringWidth(right)
		if right == "" && lw <= w {
			return left
		}
		if right != "" && lw+colGap+rw <= w {
			return left + strings.Repeat(" ", w-lw-rw) + right
		}
	}
	return brand + short // cut by the caller
}

// errorLine shows the last fetch error under the header.
func (m Model) errorLine(st styles) string {
	return st.render(st.bad, "  error: "+oneLine(m.err.Error()))
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// sectionSpec is one table to draw.
type sectionSpec struct {
	name  string
	empty string
	cols  []column
	rows  []row
}

// body draws both tables within bodyH lines.
func (m Model) body(st styles, w, bodyH int) []string {
	empty := "(no data yet)"
	if m.state != nil {
		empty = ""
	}
	secs := [numTables]sectionSpec{
		focusAgents:    {name: "AGENTS", empty: or(empty, "(no agents)"), cols: agentColumns[:], rows: m.agents},
		focusFunctions: {name: "FUNCTIONS", empty: or(empty, "(no functions)"), cols: functionColumns[:], rows: m.functions},
	}
	var need [numTables]int
	for i, s := range secs {
		need[i] = 2 + max(1, len(s.rows))
	}
	lay := layout(bodyH, need, m.focus)

	var out []string
	if lay.blankTop {
		out = append(out, "")
	}
	for i, s := range secs {
		if lay.lines[i] == 0 {
			continue
		}
		if i == focusFunctions && lay.blankMid && lay.lines[focusAgents] > 0 {
			out = append(out, "")
		}
		out = append(out, m.section(st, w, lay.lines[i], i, s)...)
	}
	return out
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// sectionLayout says how many lines each table gets (title, column
// header and rows; 0 hides it) and where blank separators go.
type sectionLayout struct {
	blankTop, blankMid bool
	lines              [numTables]int
}

// layout shares bodyH lines between the two tables. need is what each table
// wants (2 + rows). Blank lines go first when space is short, then rows
// (the focused table keeps more), and on very short screens only the
// focused table is drawn.
func layout(bodyH int, need [numTables]int, focus int) sectionLayout {
	var l sectionLayout
	if bodyH <= 0 {
		return l
	}
	const minSection = 3 // title, header, one row
	other := 1 - focus
	if bodyH < 2*minSection {
		l.lines[focus] = min(bodyH, need[focus])
		if rest := bodyH - l.lines[focus]; rest >= minSection {
			l.lines[other] = min(rest, need[other])
		}
		return l
	}
	avail := bodyH
	if avail > 2*minSection {
		l.blankMid = true
		avail--
	}
	if avail > 2*minSection {
		l.blankTop = true
		avail--
	}
	if need[0]+need[1] <= avail {
		l.lines = need
		return l
	}
	// Share: the focused table first gets up to half (rounded up); whatever
	// either table leaves unused goes to the other.
	half := (avail + 1) / 2
	l.lines[focus] = min(need[focus], half)
	l.lines[other] = min(need[other], avail-l.lines[focus])
	l.lines[focus] = min(need[focus], avail-l.lines[other])
	return l
}

// section draws one table in exactly n lines (or fewer if it has fewer).
func (m Model) section(st styles, w, n, idx int, s sectionSpec) []string {
	focused := idx == m.focus
	cur := m.tables[idx].cursor
	visible := max(n-2, 0)
	// Scroll so the cursor stays visible: it sits on the last visible line
	// once it passes the window.
	off := 0
	if visible > 0 && cur >= visible {
		off = cur - visible + 1
	}
	off = min(off, max(len(s.rows)-visible, 0))

	// Title rule: heavy for the focused table, light otherwise.
	label := fmt.Sprintf("%s (%d)", s.name, len(s.rows))
	if len(s.rows) > visible && visible > 0 {
		label = fmt.Sprintf("%s (%d-%d of %d)", s.name, off+1, min(off+visible, len(s.rows)), len(s.rows))
	}
	ruleCh, tst := "─", st.title
	if focused {
		ruleCh, tst = "━", st.titleFocus
	}
	out := []string{titleRule(st, tst, ruleCh, label, w)}
	if n == 1 {
		return out
	}

	widths := fitColumns(s.cols, s.rows, w)
	out = append(out, st.render(st.header, renderCells(s.cols, widths, titles(s.cols))))
	if visible == 0 {
		return out
	}
	if len(s.rows) == 0 {
		return append(out, st.render(st.dim, strings.Repeat(" ", markerW)+s.empty))
	}
	for i := off; i < len(s.rows) && i < off+visible; i++ {
		r := s.rows[i]
		selected := focused && i == cur
		out = append(out, renderRow(st, s.cols, widths, r, selected, w))
	}
	return out
}

func titles(cols []column) []string {
	t := make([]string, len(cols))
	for i, c := range cols {
		t[i] = c.title
	}
	return t
}

// fitColumns picks the width of each column (0 hides it) so that a row,
// with its cursor marker and gaps, fits in w cells. Columns start at their
// natural width (widest cell, capped); the flex column shrinks to its
// minimum, then columns are dropped in their drop order, and as a last
// resort the flex column shrinks further.
func fitColumns(cols []column, rows []row, w int) []int {
	widths := make([]int, len(cols))
	natural := make([]int, len(cols))
	for i, c := range cols {
		nw := ansi.StringWidth(c.title)
		for _, r := range rows {
			if i < len(r.cells) {
				nw = max(nw, ansi.StringWidth(r.cells[i]))
			}
		}
		if c.max > 0 {
			nw = min(nw, max(c.max, ansi.StringWidth(c.title)))
		}
		natural[i] = nw
		widths[i] = nw
	}
	total := func() int {
		t, n := markerW, 0
		for _, cw := range widths {
			if cw > 0 {
				t += cw
				n++
			}
		}
		return t + colGap*max(n-1, 0)
	}
	for total() > w {
		flex := -1
		for i, c := range cols {
			if c.flex && widths[i] > 0 {
				flex = i
				break
			}
		}
		if flex >= 0 && widths[flex] > cols[flex].min {
			widths[flex] = max(widths[flex]-(total()-w), cols[flex].min)
			continue
		}
		// Drop the visible column with the highest drop order.
		drop := -1
		for i, c := range cols {
			if widths[i] > 0 && c.drop > 0 && (drop < 0 || c.drop > cols[drop].drop) {
				drop = i
			}
		}
		if drop >= 0 {
			widths[drop] = 0
			if flex >= 0 {
				// Room freed: let the flex column grow back toward natural.
				widths[flex] = natural[flex]
			}
			continue
		}
		// Nothing left to drop: shrink the flex column to what remains.
		if flex >= 0 && widths[flex] > 1 {
			widths[flex] = max(widths[flex]-(total()-w), 1)
			continue
		}
		break // the view's final cut handles the rest
	}
	return widths
}

// renderCells pads or cuts each visible cell to its width and joins them,
// after the cursor marker's blank space. Trailing spaces are trimmed.
func renderCells(cols []column, widths []int, cells []string) string {
	return strings.TrimRight(strings.Repeat(" ", markerW)+joinCells(cols, widths, cells, nil), " ")
}

func joinCells(cols []column, widths []int, cells []string, style func(i int, s string) string) string {
	var b strings.Builder
	first := true
	for i, c := range cols {
		if widths[i] <= 0 {
			continue
		}
		if !first {
			b.WriteString(strings.Repeat(" ", colGap))
		}
		first = false
		text := ""
		if i < len(cells) {
			text = cells[i]
		}
		text = padCell(text, widths[i], c.right)
		if style != nil {
			text = style(i, text)
		}
		b.WriteString(text)
	}
	return b.String()
}

// padCell cuts s to w cells (with an ellipsis) and pads it to exactly w.
func padCell(s string, w int, right bool) string {
	if ansi.StringWidth(s) > w {
		s = ansi.Truncate(s, w, ellipsis)
	}
	pad := strings.Repeat(" ", max(w-ansi.StringWidth(s), 0))
	if right {
		return pad + s
	}
	return s + pad
}

// renderRow draws one data row. The selected row of the focused table gets
// the "> " marker and, in colour, a reversed bar across the width.
func renderRow(st styles, cols []column, widths []int, r row, selected bool, w int) string {
	if selected {
		line := "> " + joinCells(cols, widths, r.cells, nil)
		if st.on {
			line += strings.Repeat(" ", max(w-ansi.StringWidth(line), 0))
			return st.render(st.selected, line)
		}
		return strings.TrimRight(line, " ")
	}
	style := func(i int, s string) string {
		if i >= len(r.tones) || r.tones[i] == toneNone {
			return s
		}
		return st.render(st.tone(r.tones[i]), s)
	}
	line := strings.Repeat(" ", markerW) + joinCells(cols, widths, r.cells, style)
	if !st.on {
		line = strings.TrimRight(line, " ")
	}
	return line
}
