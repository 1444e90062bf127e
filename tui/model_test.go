package tui

import (
	"errors"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
	"github.com/muesli/termenv"

	"github.com/amberfn/amber/api"
)

// screens are the golden screens: a name and the messages after the
// window size. Each is drawn at the sizes listed.
var screens = []struct {
	name  string
	sizes [][2]int
	src   func() Source
	opts  []Option
	msgs  func() []tea.Msg
}{
	{name: "overview", sizes: [][2]int{{80, 24}, {120, 40}}, msgs: allStates},
	{name: "functions", sizes: [][2]int{{80, 24}, {120, 40}}, msgs: func() []tea.Msg {
		return append(allStates(), press(":"), press("f"), press("n"), press("enter"))
	}},
	{name: "functions_sorted", sizes: [][2]int{{80, 24}}, msgs: func() []tea.Msg {
		// s six times: NAME → VER → MEM → WARM/MAX → IDLE → BUSY → INIT → INV/S
		msgs := append(allStates(), press("2"))
		for range 7 {
			msgs = append(msgs, press("s"))
		}
		return msgs
	}},
	{name: "functions_filtered", sizes: [][2]int{{80, 24}}, msgs: func() []tea.Msg {
		return append(append(allStates(), press("2"), press("/")), append(typeText("th"), press("enter"))...)
	}},
	{name: "pools", sizes: [][2]int{{80, 24}, {120, 40}}, msgs: func() []tea.Msg { return append(allStates(), press("3")) }},
	{name: "latency", sizes: [][2]int{{80, 24}, {120, 40}}, msgs: func() []tea.Msg { return append(allStates(), press("4")) }},
	{name: "latency_fn", sizes: [][2]int{{120, 40}}, msgs: func() []tea.Msg {
		return append(allStates(), press("4"), press("j"), press("w"))
	}},
	{name: "billing", sizes: [][2]int{{80, 24}, {120, 40}}, msgs: func() []tea.Msg {
		return append(allStates(), press("5"), billMsg{period: 1, bill: testBill()})
	}},
	{name: "billing_estimate", sizes: [][2]int{{80, 24}}, src: func() Source { return noBill{&fakeSource{}} }, msgs: func() []tea.Msg {
		return append(allStates(), press("5"))
	}},
	{name: "events", sizes: [][2]int{{80, 24}, {120, 40}}, msgs: func() []tea.Msg {
		return append(allStates(), press("6"), logsMsg{name: "hello", recs: testLogs("hello")})
	}},
	{name: "drilldown", sizes: [][2]int{{80, 24}, {120, 40}}, msgs: func() []tea.Msg {
		return append(allStates(), press("2"), press("enter"), logsMsg{name: "hello", recs: testLogs("hello")})
	}},
	{name: "help", sizes: [][2]int{{80, 24}, {120, 40}}, msgs: func() []tea.Msg { return append(allStates(), press("?")) }},
	{name: "edit_form", sizes: [][2]int{{80, 24}}, msgs: func() []tea.Msg {
		return append(allStates(), press("2"), press("e"), press("backspace"), press("3"), press("tab"))
	}},
	{name: "invoke", sizes: [][2]int{{80, 24}}, msgs: func() []tea.Msg {
		res, _ := (&fakeSource{}).Invoke(nil, "hello", nil)
		return append(allStates(), press("2"), invokeMsg{name: "hello", payload: "{}", res: res, took: 3 * time.Millisecond})
	}},
	{name: "palette", sizes: [][2]int{{80, 24}}, msgs: func() []tea.Msg { return append(allStates(), press(":"), press("p")) }},
	{name: "readonly_refusal", sizes: [][2]int{{80, 24}}, opts: []Option{WithReadOnly(true)}, msgs: func() []tea.Msg {
		return append(allStates(), press("2"), press("+"))
	}},
	{name: "reconnecting", sizes: [][2]int{{80, 24}}, msgs: func() []tea.Msg {
		return append(allStates(), streamClosedMsg{gen: 0, err: errRefused}, streamClosedMsg{gen: 1, err: errRefused})
	}},
	{name: "connecting", sizes: [][2]int{{80, 24}}, msgs: func() []tea.Msg { return nil }},
	{name: "paused", sizes: [][2]int{{80, 24}}, msgs: func() []tea.Msg {
		return append(allStates(), press("p"), data(steps-1), data(steps-1))
	}},
	{name: "tiny", sizes: [][2]int{{40, 12}}, msgs: allStates},
}

func screenModel(t testing.TB, i int, w, h int) Model {
	s := screens[i]
	var src Source
	if s.src != nil {
		src = s.src()
	}
	m, _ := send(t, newTestModel(src, s.opts...), size(w, h))
	m, _ = send(t, m, s.msgs()...)
	return m
}

func TestGoldenScreens(t *testing.T) {
	for i, s := range screens {
		for _, sz := range s.sizes {
			name := s.name + "_" + itoa(sz[0]) + "x" + itoa(sz[1])
			t.Run(name, func(t *testing.T) {
				v := screenModel(t, i, sz[0], sz[1]).View()
				checkScreen(t, v, sz[0], sz[1])
				if got := strings.Count(v, "\n") + 1; got != sz[1] {
					t.Errorf("%d lines, want the full height %d", got, sz[1])
				}
				golden(t, name, v)
			})
		}
	}
}

func itoa(n int) string { return strings.TrimSpace(strings.Repeat(" ", 0) + fmtInt(n)) }

func fmtInt(n int) string {
	if n == 0 {
		return "0"
	}
	s := ""
	for n > 0 {
		s = string(rune('0'+n%10)) + s
		n /= 10
	}
	return s
}

// TestNeverOverflows draws every screen at sizes from 0×0 up, with and
// without colour, and checks nothing panics or overflows.
func TestNeverOverflows(t *testing.T) {
	prev := lipgloss.ColorProfile()
	lipgloss.SetColorProfile(termenv.ANSI256) // so colour really emits escapes
	t.Cleanup(func() { lipgloss.SetColorProfile(prev) })

	big := testState()
	for i := range 30 {
		big.Agents = append(big.Agents, api.AgentStatus{
			Heartbeat: api.Heartbeat{Name: "node-with-a-very-long-generated-name-" + string(rune('a'+i%26)) + strings.Repeat("x", i)},
			State:     api.AgentGone,
		})
		big.Functions = append(big.Functions, api.FunctionStatus{
			Function: api.Function{FunctionSpec: api.FunctionSpec{Name: strings.Repeat("f", i+1), MemoryMB: 10240}},
			Stats:    api.FunctionStats{Invocations: 1 << 40, Errors: 1 << 35, GBSeconds: 1e12},
			Latency:  map[api.StartKind]*api.Histogram{api.StartCold: observe(3, 1, 600_000)},
		})
	}
	widths := []int{0, 1, 2, 7, 15, 30, 40, 59, 60, 79, 80, 81, 100, 120, 131}
	heights := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 16, 24, 40, 45}
	for i := range screens {
		for _, color := range []bool{false, true} {
			m := screenModel(t, i, 80, 24)
			m.color = color
			m, _ = send(t, m, streamDataMsg{msg: api.StreamMessage{State: big}}, renderMsg{})
			for range 40 {
				m, _ = send(t, m, press("j"))
			}
			for _, w := range widths {
				for _, h := range heights {
					m, _ = send(t, m, size(w, h))
					checkScreen(t, m.View(), w, h)
				}
			}
		}
	}
}

// TestColourMatchesPlain: with escapes stripped, the coloured screen is
// the plain one.
func TestColourMatchesPlain(t *testing.T) {
	prev := lipgloss.ColorProfile()
	lipgloss.SetColorProfile(termenv.ANSI256)
	t.Cleanup(func() { lipgloss.SetColorProfile(prev) })
	for i, s := range screens {
		if s.name == "palette" || s.name == "edit_form" {
			continue // the cursor is drawn differently
		}
		plain := screenModel(t, i, 100, 30)
		colored := plain
		colored.color = true
		colored.touch()
		cv := colored.View()
		if !strings.Contains(cv, "\x1b[") {
			t.Fatalf("%s: no escapes in the coloured view", s.name)
		}
		var stripped []string
		for _, l := range strings.Split(ansi.Strip(cv), "\n") {
			stripped = append(stripped, strings.TrimRight(l, " "))
		}
		plain.touch()
		if got, want := strings.Join(stripped, "\n"), plain.View(); got != want {
			t.Errorf("%s: coloured text differs from plain\n--- coloured ---\n%s\n--- plain ---\n%s", s.name, got, want)
		}
	}
}

func TestPlusSetsMinWarmAndShowsConfirmed(t *testing.T) {
	src := &fakeSource{}
	m, _ := send(t, newTestModel(src), size(120, 40))
	m, _ = send(t, m, allStates()...)
	m, _ = send(t, m, press("2")) // functions; cursor on hello (min_warm 2)
	if got := m.actionFn(); got != "hello" {
		t.Fatalf("selected %q", got)
	}
	m, cmd := send(t, m, press("+"))
	if cmd == nil {
		t.Fatal("+ sent nothing")
	}
	if !strings.Contains(m.View(), "hello: min_warm 2 → 3 …") {
		t.Errorf("no pending note:\n%s", m.View())
	}
	m = execCmd(t, m, cmd)
	if len(src.setPools) != 1 || src.setNames[0] != "hello" || src.setPools[0].MinWarm == nil || *src.setPools[0].MinWarm != 3 {
		t.Fatalf("SetPool calls %v %+v, want hello min_warm 3", src.setNames, src.setPools)
	}
	if src.setPools[0].MaxInstances != nil || src.setPools[0].KeepAlive != nil {
		t.Errorf("+ changed more than min_warm: %+v", src.setPools[0])
	}
	v := m.View()
	if !strings.Contains(v, "✓ hello: min_warm 3") || !strings.Contains(v, "confirmed by the scheduler") {
		t.Errorf("confirmation not shown:\n%s", v)
	}
	if !strings.Contains(v, "3/10") {
		t.Errorf("WARM/MAX does not show the confirmed 3/10:\n%s", v)
	}
	// A state taken before the change does not flip the value back.
	m, _ = send(t, m, data(steps-1), renderMsg{})
	if v := m.View(); !strings.Contains(v, "3/10") {
		t.Errorf("older state replaced the confirmed value:\n%s", v)
	}
	// - twice: 3 → 2 then, before the answer, 2 → 1.
	m, c1 := send(t, m, press("-"))
	m, c2 := send(t, m, press("-"))
	for _, c := range []tea.Cmd{c1, c2} {
		c()
	}
	if got := *src.setPools[1].MinWarm*10 + *src.setPools[2].MinWarm; got != 21 {
		t.Errorf("two - sent %d then %d, want 2 then 1", *src.setPools[1].MinWarm, *src.setPools[2].MinWarm)
	}
}

func TestSetPoolRefused(t *testing.T) {
	src := &fakeSource{setErr: &api.StatusError{Status: 400, Code: "invalid", Message: "min_warm 101: want 0–100"}}
	m, _ := send(t, newTestModel(src), size(120, 40))
	m, _ = send(t, m, allStates()...)
	m, cmd := send(t, m, press("2"), press("+"))
	m = execCmd(t, m, cmd)
	v := m.View()
	if !strings.Contains(v, "✗ hello: pool not changed") || !strings.Contains(v, "min_warm 101") {
		t.Errorf("refusal not shown:\n%s", v)
	}
	if !strings.Contains(v, "2/10") {
		t.Errorf("value changed though refused:\n%s", v)
	}
}

func TestReadOnlyRefusesEveryChange(t *testing.T) {
	src := &fakeSource{}
	m, _ := send(t, newTestModel(src, WithReadOnly(true)), size(100, 30))
	m, _ = send(t, m, allStates()...)
	m, _ = send(t, m, press("2"))
	for _, k := range []string{"+", "-", "=", "e", "i"} {
		var cmd tea.Cmd
		m, cmd = send(t, m, press(k))
		if cmd != nil {
			t.Errorf("%s returned a command in read-only mode", k)
		}
		if v := m.View(); !strings.Contains(v, "read-only: hello") || m.form != nil || m.prompt.kind != promptNone {
			t.Errorf("%s: no read-only message or something opened:\n%s", k, v)
		}
	}
	if len(src.setPools)+len(src.invokes) != 0 {
		t.Errorf("read-only console called the source: %v %v", src.setPools, src.invokes)
	}
}

func TestEditForm(t *testing.T) {
	src := &fakeSource{}
	m, _ := send(t, newTestModel(src), size(100, 30))
	m, _ = send(t, m, allStates()...)
	m, _ = send(t, m, press("2"), press("e"))
	if m.form == nil || m.form.fn != "hello" {
		t.Fatalf("form not open: %+v", m.form)
	}
	// min warm: 2 → 4; max: 10 → x (invalid), then 20; keep-alive 10m0s → 2m.
	m, _ = send(t, m, press("backspace"), press("4"), press("tab"), press("backspace"), press("backspace"), press("x"))
	m, cmd := send(t, m, press("enter"))
	if cmd != nil || m.form == nil || !strings.Contains(m.View(), "✗ max instances") {
		t.Fatalf("invalid max accepted:\n%s", m.View())
	}
	m, _ = send(t, m, press("backspace"), press("2"), press("0"), press("tab"))
	for range len("10m0s") {
		m, _ = send(t, m, press("backspace"))
	}
	m, _ = send(t, m, typeText("2m")...)
	m, cmd = send(t, m, press("enter"))
	if m.form != nil || cmd == nil {
		t.Fatal("enter did not submit")
	}
	m = execCmd(t, m, cmd)
	ch := src.setPools[0]
	if ch.MinWarm == nil || *ch.MinWarm != 4 || ch.MaxInstances == nil || *ch.MaxInstances != 20 ||
		ch.KeepAlive == nil || time.Duration(*ch.KeepAlive) != 2*time.Minute || ch.Auto != nil {
		t.Errorf("SetPool got %+v", ch)
	}
	if v := m.View(); !strings.Contains(v, "4/20") || !strings.Contains(v, "keep-alive 2m") {
		t.Errorf("confirmed pool not shown:\n%s", v)
	}
	// esc cancels without a call.
	m, _ = send(t, m, press("e"), press("esc"))
	if m.form != nil || len(src.setPools) != 1 {
		t.Errorf("esc: form %v, calls %d", m.form, len(src.setPools))
	}
}

func TestInvoke(t *testing.T) {
	src := &fakeSource{}
	m, _ := send(t, newTestModel(src), size(100, 30))
	m, _ = send(t, m, allStates()...)
	m, _ = send(t, m, press("2"), press("i"))
	if m.prompt.kind != promptInvoke {
		t.Fatal("i did not open the payload prompt")
	}
	m, _ = send(t, m, press("backspace"), press("backspace"))
	m, _ = send(t, m, typeText(`{"name":"amber"}`)...)
	m, cmd := send(t, m, press("enter"))
	m = execCmd(t, m, cmd)
	if len(src.invokes) != 1 || src.invokes[0] != `hello {"name":"amber"}` {
		t.Fatalf("Invoke calls %q", src.invokes)
	}
	v := m.View()
	for _, want := range []string{"INVOKE hello", "✓ warm start · 1.21 ms (billed 2 ms) · agent node-a", `{"message":"hello, amber"}`} {
		if !strings.Contains(v, want) {
			t.Errorf("lacks %q:\n%s", want, v)
		}
	}
	m, _ = send(t, m, press("esc"))
	if m.invoke != nil {
		t.Error("esc did not close the result")
	}
	src.invokeEr = errors.New("function hello: not found")
	m, cmd = send(t, m, press("i"), press("enter"))
	m = execCmd(t, m, cmd)
	if v := m.View(); !strings.Contains(v, "✗ function hello: not found") {
		t.Errorf("error not shown:\n%s", v)
	}
}

// TestRendersThrottled: stream data alone never draws a frame; a render
// tick (at most every 100 ms) does, once, whatever arrived meanwhile.
func TestRendersThrottled(t *testing.T) {
	m, _ := send(t, newTestModel(nil), size(80, 24))
	m.View()
	base := m.cache.renders
	var ticks int
	for i := range 50 {
		var cmd tea.Cmd
		m, cmd = send(t, m, data(i%steps))
		if cmd != nil && m.renderPending {
			ticks++
		}
		m.View() // Bubble Tea calls View after every Update
	}
	if got := m.cache.renders - base; got != 0 {
		t.Errorf("%d frames drawn for 50 data messages before a render tick", got)
	}
	if !m.renderPending {
		t.Error("no render tick pending")
	}
	m, _ = send(t, m, renderMsg{})
	m.View()
	m.View()
	if got := m.cache.renders - base; got != 1 {
		t.Errorf("%d frames after the tick, want 1", got)
	}
	// A key draws at once.
	m, _ = send(t, m, press("j"))
	m.View()
	if got := m.cache.renders - base; got != 2 {
		t.Errorf("%d frames after a key, want 2", got)
	}
}

func TestStreamReconnects(t *testing.T) {
	ch := make(chan api.StreamMessage, 4)
	src := &fakeSource{stream: ch}
	m, _ := send(t, newTestModel(src), size(80, 24))
	m = execCmd(t, m, m.openStream())
	if m.conn.status != connConnected || src.streams != 1 {
		t.Fatalf("status %d after open, %d streams", m.conn.status, src.streams)
	}
	// A message arrives through the receive chain.
	ch <- api.StreamMessage{State: testState(), Events: testEvents()}
	m, cmd := send(t, m, streamOpenMsg{gen: m.conn.gen, ch: ch})
	m = execCmd(t, m, cmd)
	if m.state == nil || len(m.events) != 6 || m.lastSeq != 6 {
		t.Fatalf("state %v, %d events, seq %d", m.state != nil, len(m.events), m.lastSeq)
	}
	// The scheduler restarts: the channel closes.
	close(ch)
	m, cmd = send(t, m, streamOpenMsg{gen: m.conn.gen, ch: ch})
	m = execCmd(t, m, cmd)
	if m.conn.status != connReconnecting || m.conn.attempt != 1 {
		t.Fatalf("after close: status %d attempt %d", m.conn.status, m.conn.attempt)
	}
	m, _ = send(t, m, renderMsg{})
	v := m.View()
	if !strings.Contains(v, "○ reconnecting") || !strings.Contains(v, "last update 12:00:05") || !strings.Contains(v, "thumbnail") {
		t.Errorf("reconnecting screen lacks status or data:\n%s", v)
	}
	// Retry fails, backoff grows; then the scheduler is back.
	src.streamEr = errRefused
	m, cmd = send(t, m, reconnectMsg{gen: m.conn.gen})
	m = execCmd(t, m, cmd)
	if m.conn.attempt != 2 || m.conn.retryAt.Sub(fixedNow) != backoff(2) {
		t.Errorf("attempt %d retry in %v", m.conn.attempt, m.conn.retryAt.Sub(fixedNow))
	}
	if _, cmd := send(t, m, reconnectMsg{gen: m.conn.gen - 1}); cmd != nil {
		t.Error("a stale reconnect tick opened a stream")
	}
	ch2 := make(chan api.StreamMessage, 1)
	src.streamEr, src.stream = nil, ch2
	m, cmd = send(t, m, reconnectMsg{gen: m.conn.gen})
	m = execCmd(t, m, cmd)
	ch2 <- api.StreamMessage{State: testState()}
	m, cmd = send(t, m, streamOpenMsg{gen: m.conn.gen, ch: ch2})
	m = execCmd(t, m, cmd)
	if m.conn.status != connConnected || m.conn.attempt != 0 || src.streams != 3 {
		t.Errorf("not reconnected: status %d attempt %d streams %d", m.conn.status, m.conn.attempt, src.streams)
	}
	// Messages of an abandoned connection are ignored.
	old := testState()
	old.Agents = nil
	if m2, _ := send(t, m, streamDataMsg{gen: m.conn.gen - 1, msg: api.StreamMessage{State: old}}); len(m2.state.Agents) != 2 {
		t.Error("stale connection's data applied")
	}
}

func TestWatchdogDropsSilentStream(t *testing.T) {
	now := fixedNow
	m, _ := send(t, New(&fakeSource{}, WithColor(false), WithClock(func() time.Time { return now })), size(80, 24))
	m, _ = send(t, m, streamOpenMsg{gen: 0}, data(steps-1))
	now = now.Add(3 * time.Second)
	m, _ = send(t, m, clockMsg{})
	if m.conn.status != connConnected {
		t.Fatal("dropped after 3s")
	}
	now = now.Add(3 * time.Second)
	m, _ = send(t, m, clockMsg{})
	if m.conn.status != connReconnecting || !errors.Is(m.conn.err, errStale) {
		t.Errorf("silent stream kept: status %d err %v", m.conn.status, m.conn.err)
	}
}

func TestBackoff(t *testing.T) {
	want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}
	for i, w := range want {
		if got := backoff(i + 1); got != w {
			t.Errorf("backoff(%d) = %v, want %v", i+1, got, w)
		}
	}
}

func TestPauseHoldsUpdates(t *testing.T) {
	m, _ := send(t, newTestModel(nil), size(100, 30))
	m, _ = send(t, m, data(0), renderMsg{})
	m, _ = send(t, m, press("p"))
	changed := testStateAt(0)
	changed.Functions = changed.Functions[:1]
	m, _ = send(t, m, streamDataMsg{msg: api.StreamMessage{State: changed}}, renderMsg{})
	if len(m.state.Functions) != 3 || m.heldN != 1 {
		t.Fatalf("paused console applied the update (%d functions, %d held)", len(m.state.Functions), m.heldN)
	}
	if v := m.View(); !strings.Contains(v, "‖ paused (1 held)") {
		t.Errorf("no paused mark:\n%s", v)
	}
	m, _ = send(t, m, press("p"))
	if len(m.state.Functions) != 1 || m.held != nil {
		t.Errorf("resume did not apply the held state")
	}
}

func TestPaletteAndNavigation(t *testing.T) {
	m, _ := send(t, newTestModel(nil), size(100, 30))
	m, _ = send(t, m, allStates()...)
	m, _ = send(t, m, press(":"), press("p"), press("o"), press("tab"))
	if got := m.prompt.in.Value(); got != "pools" {
		t.Errorf("tab completed to %q", got)
	}
	m, _ = send(t, m, press("enter"))
	if m.view != viewPools {
		t.Fatalf("view %d, want pools", m.view)
	}
	for _, c := range []struct {
		cmd  string
		want viewID
	}{{"fn", viewFunctions}, {"agents", viewOverview}, {"lat", viewLatency}, {"bill", viewBill}, {"events", viewEvents}, {"functions", viewFunctions}} {
		m, _ = send(t, m, append(append([]tea.Msg{press(":")}, typeText(c.cmd)...), press("enter"))...)
		if m.view != c.want {
			t.Errorf(":%s: view %d, want %d", c.cmd, m.view, c.want)
		}
	}
	// esc goes back through the views visited.
	m, _ = send(t, m, press("esc"))
	if m.view != viewEvents {
		t.Errorf("esc: view %d, want events", m.view)
	}
	m, _ = send(t, m, append(append([]tea.Msg{press(":")}, typeText("nope")...), press("enter"))...)
	if !strings.Contains(m.View(), "unknown command :nope") {
		t.Errorf("unknown command not reported:\n%s", m.View())
	}
	// enter drills into the function, esc comes back.
	m, _ = send(t, m, press("2"), press("j"), press("enter"))
	if m.view != viewDetail || m.detailFn != "nightly-report" {
		t.Errorf("enter: view %d fn %q", m.view, m.detailFn)
	}
	m, _ = send(t, m, press("esc"))
	if m.view != viewFunctions {
		t.Errorf("esc from drill-down: view %d", m.view)
	}
	// ? opens and closes the help; q quits.
	m, _ = send(t, m, press("?"))
	if !m.showHelp {
		t.Error("? did not open the help")
	}
	m, _ = send(t, m, press("esc"))
	if m.showHelp {
		t.Error("esc did not close the help")
	}
	for _, k := range []string{"q", "ctrl+c"} {
		_, cmd := send(t, m, press(k))
		if cmd == nil {
			t.Fatalf("%s: no command", k)
		}
		if _, ok := cmd().(tea.QuitMsg); !ok {
			t.Errorf("%s does not quit", k)
		}
	}
}

func TestSortAndFilterKeys(t *testing.T) {
	m, _ := send(t, newTestModel(nil), size(120, 40))
	m, _ = send(t, m, allStates()...)
	m, _ = send(t, m, press("2"))
	keys := func() string {
		var ks []string
		for _, r := range m.visible(tblFunctions) {
			ks = append(ks, r.key)
		}
		return strings.Join(ks, ",")
	}
	if got := keys(); got != "hello,nightly-report,thumbnail" {
		t.Errorf("default order %s", got)
	}
	m, _ = send(t, m, press("S"))
	if got := keys(); got != "thumbnail,nightly-report,hello" {
		t.Errorf("S: %s", got)
	}
	for range fnColRate {
		m, _ = send(t, m, press("s"))
	}
	if ts := m.tables[tblFunctions]; ts.sortCol != fnColRate || !ts.desc {
		t.Fatalf("sort %+v", ts)
	}
	if got := keys(); got != "thumbnail,hello,nightly-report" {
		t.Errorf("by rate: %s", got)
	}
	m, _ = send(t, m, append([]tea.Msg{press("/")}, typeText("HEL")...)...)
	if got := keys(); got != "hello" {
		t.Errorf("filter: %s", got)
	}
	m, _ = send(t, m, press("enter"))
	if m.tables[tblFunctions].filter != "HEL" || m.prompt.kind != promptNone {
		t.Error("enter did not keep the filter")
	}
	m, _ = send(t, m, press("esc"))
	if got := keys(); got != "thumbnail,hello,nightly-report" {
		t.Errorf("esc did not clear the filter: %s", got)
	}
	// The cursor follows its row across re-sorting and new data.
	m, _ = send(t, m, press("G"))
	if m.actionFn() != "nightly-report" {
		t.Fatalf("G: %q", m.actionFn())
	}
	m, _ = send(t, m, press("S"), data(steps-1))
	if m.actionFn() != "nightly-report" || m.tables[tblFunctions].cursor != 0 {
		t.Errorf("cursor did not follow: %q at %d", m.actionFn(), m.tables[tblFunctions].cursor)
	}
}

func TestLogsAndBillFetched(t *testing.T) {
	src := &fakeSource{}
	m, _ := send(t, newTestModel(src), size(100, 30))
	m, _ = send(t, m, allStates()...)
	m, cmd := send(t, m, press("2"), press("j"), press("l")) // logs of nightly-report
	if m.view != viewEvents || m.selFn != "nightly-report" {
		t.Fatalf("l: view %d fn %q", m.view, m.selFn)
	}
	m = execCmd(t, m, cmd)
	if src.logs == 0 || m.logsFn != "nightly-report" || len(m.rows[tblLogs]) != 4 {
		t.Errorf("logs not fetched: %d calls, fn %q, %d rows", src.logs, m.logsFn, len(m.rows[tblLogs]))
	}
	m, cmd = send(t, m, press("5"))
	m = execCmd(t, m, cmd)
	if src.bills != 1 || m.bill == nil {
		t.Fatalf("bill not fetched (%d calls)", src.bills)
	}
	if v := m.View(); !strings.Contains(v, "ledger") || strings.Contains(v, "estimate since") {
		t.Errorf("bill view not from the ledger:\n%s", v)
	}
	src.billErr = errors.New("no endpoint GET /v1/bill")
	m, cmd = send(t, m, press("w"))
	m = execCmd(t, m, cmd)
	if v := m.View(); !strings.Contains(v, "estimate since the scheduler started (bill: no endpoint") {
		t.Errorf("bill error not shown as an estimate:\n%s", v)
	}
}
