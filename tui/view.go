package tui

import (
	"fmt"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
)

// This file is the view's frame: header, footer, prompt line and the
// table drawing every view shares. Widths are computed on plain text
// first and colour is applied last, so the layout is identical with and
// without colour.

const (
	timeLayout = "15:04:05"
	colGap     = 2 // spaces between columns
	markerW    = 2 // "> " cursor marker before each row
	ellipsis   = "…"
)

// styles holds the lipgloss styles; with colour off every style is the
// zero style, which renders text unchanged.
type styles struct {
	brand, good, warn, bad, dim, header, title, titleFocus, selected lipgloss.Style
	helpKey, helpDesc, helpSep, bar, mark                            lipgloss.Style
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
		bar:        lipgloss.NewStyle().Foreground(amber),
		mark:       lipgloss.NewStyle().Bold(true),
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
// with ours; with colour off they are all the zero style.
func (s styles) helpStyles() help.Styles {
	return help.Styles{
		Ellipsis: s.helpSep, ShortKey: s.helpKey, ShortDesc: s.helpDesc, ShortSeparator: s.helpSep,
		FullKey: s.helpKey, FullDesc: s.helpDesc, FullSeparator: s.helpSep,
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

// View draws the screen. It never writes more than height lines nor a line
// wider than width. A frame is drawn only when something visible changed
// (a key, a resize, a render tick after new data); otherwise the last one
// is returned as it is.
func (m Model) View() string {
	c := m.cache
	if c != nil && c.frame == m.frame && c.w == m.width && c.h == m.height && c.renders > 0 {
		return c.view
	}
	v := m.draw()
	if c != nil {
		c.frame, c.w, c.h, c.view = m.frame, m.width, m.height, v
		c.renders++
	}
	return v
}

func (m Model) draw() string {
	w, h := m.width, m.height
	if w <= 0 || h <= 0 {
		return ""
	}
	st := newStyles(m.color)
	lines := []string{m.headerLine(st, w)}
	if m.conn.err != nil && m.conn.status != connConnected && h >= 6 {
		lines = append(lines, st.render(st.bad, "  error: "+oneLine(m.conn.err.Error())))
	}
	if h >= 2 {
		var tail []string
		if s := m.statusLine(st, w); s != "" && h-len(lines) >= 3 {
			tail = append(tail, s)
		}
		if h-len(lines)-len(tail) >= 2 || len(tail) == 0 {
			tail = append(tail, m.footer(st, w))
		}
		bodyH := h - len(lines) - len(tail)
		body := m.body(st, w, bodyH)
		if len(body) > bodyH {
			body = body[:bodyH]
		}
		for len(body) < bodyH {
			body = append(body, "")
		}
		lines = append(lines, body...)
		lines = append(lines, tail...)
	}
	for i, l := range lines {
		lines[i] = fit(l, w)
		if !st.on {
			lines[i] = strings.TrimRight(lines[i], " ")
		}
	}
	return strings.Join(lines, "\n")
}

// body draws the current view (or the help, or the form) in bodyH lines.
func (m Model) body(st styles, w, h int) []string {
	if h <= 0 {
		return nil
	}
	switch {
	case m.showHelp:
		return m.helpBody(st, w, h)
	case m.form != nil:
		return m.formBody(st, w, h)
	}
	var panel []string
	if m.invoke != nil && h >= 8 {
		panel = m.invokePanel(st, w, min(5, h/2))
		h -= len(panel)
	}
	var out []string
	switch m.view {
	case viewOverview:
		out = m.overviewBody(st, w, h)
	case viewFunctions:
		out = m.functionsBody(st, w, h)
	case viewPools:
		out = m.poolsBody(st, w, h)
	case viewLatency:
		out = m.latencyBody(st, w, h)
	case viewBill:
		out = m.billBody(st, w, h)
	case viewEvents:
		out = m.eventsBody(st, w, h)
	case viewDetail:
		out = m.detailBody(st, w, h)
	}
	if len(out) > h {
		out = out[:h]
	}
	for len(out) < h && panel != nil {
		out = append(out, "")
	}
	return append(out, panel...)
}

// footerKeys are the bindings the footer shows in the current view, most
// important first: the help bubble drops items from the end when narrow.
func (m Model) footerKeys() []key.Binding {
	k := m.keys
	if m.showHelp {
		close := k.Back
		close.SetHelp("esc/?", "close help")
		return []key.Binding{close, k.Quit}
	}
	switch m.view {
	case viewOverview:
		return []key.Binding{k.Command, k.Help, k.NextPane, k.Enter, k.Filter, k.Sort, k.Pause, k.Quit}
	case viewFunctions, viewPools:
		return []key.Binding{k.Command, k.Help, k.Enter, k.More, k.Less, k.Edit, k.Invoke, k.Filter, k.Sort, k.Quit}
	case viewLatency:
		move := k.Down
		move.SetHelp("j/k", "function")
		win := k.Window
		win.SetHelp("w", "window")
		return []key.Binding{k.Command, k.Help, move, win, k.Enter, k.Back, k.Quit}
	case viewBill:
		per := k.Window
		per.SetHelp("w", "period")
		return []key.Binding{k.Command, k.Help, per, k.Sort, k.Filter, k.Enter, k.Quit}
	case viewEvents:
		return []key.Binding{k.Command, k.Help, k.NextPane, k.Filter, k.Enter, k.Back, k.Quit}
	case viewDetail:
		return []key.Binding{k.Back, k.More, k.Less, k.Edit, k.Invoke, k.NextPane, k.Help, k.Quit}
	}
	return k.ShortHelp()
}

func (m Model) footer(st styles, w int) string {
	if m.form != nil {
		return "enter save · tab next field · esc cancel"
	}
	hm := m.help
	hm.Styles = st.helpStyles()
	hm.Width = w
	return hm.ShortHelpView(m.footerKeys())
}

// statusLine is the open prompt, or the last message ("" for none).
func (m Model) statusLine(st styles, w int) string {
	p := m.prompt
	if p.kind != promptNone {
		val := []rune(p.in.Value())
		pos := min(p.in.Position(), len(val))
		var line string
		if st.on {
			under := " "
			rest := ""
			if pos < len(val) {
				under, rest = string(val[pos]), string(val[pos+1:])
			}
			line = st.render(st.mark, p.in.Prompt) + string(val[:pos]) + st.render(st.selected, under) + rest
		} else {
			line = p.in.Prompt + string(val[:pos]) + "_" + string(val[pos:])
		}
		if p.kind == promptCommand {
			var hints []string
			for _, c := range completions(p.in.Value()) {
				hints = append(hints, c)
			}
			if len(hints) > 0 {
				line += "   " + st.render(st.dim, strings.Join(hints, " "))
			}
		}
		return line
	}
	if m.flash.text != "" {
		return st.render(st.tone(m.flash.tone), " "+m.flash.text)
	}
	return ""
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
	if m.readOnly {
		brand += st.render(st.warn, "read-only") + "  "
	}
	last := "never"
	if !m.lastUpdate.IsZero() {
		last = m.lastUpdate.Format(timeLayout)
	}
	var long, short string
	switch m.conn.status {
	case connReconnecting:
		in := max(m.conn.retryAt.Sub(m.now()), 0).Round(time.Second)
		mark := st.render(st.bad, "○ reconnecting")
		long = fmt.Sprintf("%s in %s (attempt %d) · last update %s", mark, formatWait(in), m.conn.attempt, last)
		short = mark + " · " + last
	case connConnecting:
		long = st.render(st.warn, "… connecting")
		if !m.lastUpdate.IsZero() {
			long += " · last update " + last
		}
		short = st.render(st.warn, "… connecting")
	default:
		mark := st.render(st.good, "● connected")
		if m.lastUpdate.IsZero() {
			long, short = mark+" · waiting for data", mark
		} else {
			long, short = mark+" · updated "+last, mark+" · "+last
		}
	}
	if m.paused {
		p := st.render(st.warn, "‖ paused")
		if m.heldN > 0 {
			p += fmt.Sprintf(" (%d held)", m.heldN)
		}
		long, short = p+" · "+long, p+" · "+short
	}
	var full, brief string
	if m.state != nil {
		full = fmt.Sprintf("agents %d/%d ready · functions %d · instances %d",
			m.sum.ready, m.sum.agents, m.sum.functions, m.sum.instances)
		brief = fmt.Sprintf("%d/%d ready · %d fn · %d inst",
			m.sum.ready, m.sum.agents, m.sum.functions, m.sum.instances)
	}
	cands := [][2]string{{long, full}, {short, full}, {long, brief}, {short, brief}, {long, ""}, {short, ""}}
	if m.conn.status != connConnected || m.paused {
		// Trouble first: the status wording matters more than the counts.
		cands = [][2]string{{long, full}, {long, brief}, {long, ""}, {short, brief}, {short, ""}}
	}
	for _, c := range cands {
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

func formatWait(d time.Duration) string {
	if d < time.Second {
		return "<1s"
	}
	return d.String()
}

func maxWidth(lines []string) int {
	w := 0
	for _, l := range lines {
		w = max(w, ansi.StringWidth(l))
	}
	return w
}

// tableSpec is one table to draw.
type tableSpec struct {
	t       int    // table index
	name    string // title
	empty   string // what to say with no rows
	focused bool
	extra   []row // drawn by the caller under the table (totals), but sized with it
}

// section draws table s in exactly n lines (or fewer if it has fewer):
// a title rule, the column header and the rows around the cursor.
func (m Model) section(st styles, w, n int, s tableSpec) []string {
	if n <= 0 {
		return nil
	}
	ts := m.tables[s.t]
	rows := m.visible(s.t)
	cols := m.columns(s.t)
	cur := min(ts.cursor, max(len(rows)-1, 0))
	visible := max(n-2, 0)
	off := 0
	if visible > 0 && cur >= visible {
		off = cur - visible + 1
	}
	off = min(off, max(len(rows)-visible, 0))

	count := fmt.Sprint(len(rows))
	if ts.filter != "" {
		count = fmt.Sprintf("%d of %d", len(rows), len(m.rows[s.t]))
	}
	label := fmt.Sprintf("%s (%s)", s.name, count)
	if len(rows) > visible && visible > 0 {
		label = fmt.Sprintf("%s (%d-%d of %d)", s.name, off+1, min(off+visible, len(rows)), len(rows))
	}
	if ts.filter != "" {
		label += " /" + ts.filter
	}
	if ts.sortCol >= 0 && ts.sortCol < len(cols) && !(ts.sortCol == 0 && !ts.desc) {
		arrow := "↑"
		if ts.desc {
			arrow = "↓"
		}
		label += " · by " + strings.ToLower(cols[ts.sortCol].title) + " " + arrow
	}
	ruleCh, tst := "─", st.title
	if s.focused {
		ruleCh, tst = "━", st.titleFocus
	}
	out := []string{titleRule(st, tst, ruleCh, label, w)}
	if n == 1 {
		return out
	}
	widths := fitColumns(cols, append(append([]row(nil), rows...), s.extra...), w)
	out = append(out, st.render(st.header, renderCells(cols, widths, titles(cols))))
	if visible == 0 {
		return out
	}
	if len(rows) == 0 {
		empty := s.empty
		if m.state == nil && m.view != viewEvents {
			empty = "(no data yet)"
		}
		if ts.filter != "" {
			empty = "(nothing matches /" + ts.filter + ")"
		}
		return append(out, st.render(st.dim, strings.Repeat(" ", markerW)+empty))
	}
	for i := off; i < len(rows) && i < off+visible; i++ {
		out = append(out, renderRow(st, cols, widths, rows[i], s.focused && i == cur, w))
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
		drop := -1
		for i, c := range cols {
			if widths[i] > 0 && c.drop > 0 && (drop < 0 || c.drop > cols[drop].drop) {
				drop = i
			}
		}
		if drop >= 0 {
			widths[drop] = 0
			if flex >= 0 {
				widths[flex] = natural[flex]
			}
			continue
		}
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

// share splits h lines between two stacked tables that want need[0] and
// need[1] lines (title, header, rows): the focused one first gets up to
// half, whatever either leaves goes to the other; with less than two
// minimal tables' room only the focused one is drawn. blank is whether a
// blank line separates them.
func share(h int, need [2]int, focus int) (lines [2]int, blank bool) {
	if h <= 0 {
		return
	}
	const minSection = 3
	other := 1 - focus
	if h < 2*minSection {
		lines[focus] = min(h, need[focus])
		if rest := h - lines[focus]; rest >= minSection {
			lines[other] = min(rest, need[other])
		}
		return
	}
	avail := h
	if avail > 2*minSection {
		blank = true
		avail--
	}
	if need[0]+need[1] <= avail {
		return need, blank
	}
	half := (avail + 1) / 2
	lines[focus] = min(need[focus], half)
	lines[other] = min(need[other], avail-lines[focus])
	lines[focus] = min(need[focus], avail-lines[other])
	return
}

// twoTables draws a view's two panes stacked in h lines.
func (m Model) twoTables(st styles, w, h int, a, b tableSpec) []string {
	focus := min(m.pane[m.view], 1)
	a.focused, b.focused = focus == 0, focus == 1
	need := [2]int{2 + max(1, len(m.visible(a.t))), 2 + max(1, len(m.visible(b.t)))}
	lines, blank := share(h, need, focus)
	out := m.section(st, w, lines[0], a)
	if blank && lines[0] > 0 && lines[1] > 0 {
		out = append(out, "")
	}
	return append(out, m.section(st, w, lines[1], b)...)
}
