package tui

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
	"github.com/muesli/termenv"

	"github.com/amberfn/amber/api"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

var fixedNow = time.Date(2026, 5, 4, 12, 0, 5, 0, time.UTC)

func fixedClock() time.Time { return fixedNow }

func inst(id, fn, agent string, state api.InstanceState, kind api.StartKind) api.Instance {
	return api.Instance{ID: id, Function: fn, Version: 1, Agent: agent, State: state, StartKind: kind, MemoryMB: 128}
}

// testState is the fixed cluster of the golden screens: two agents and
// three functions with instances in various states.
func testState() *api.ClusterState {
	thumbs := []api.Instance{
		inst("i-4", "thumbnail", "node-b", api.StateBusy, api.StartRestore),
		inst("i-5", "thumbnail", "node-b", api.StateInitializing, api.StartCold),
		inst("i-6", "thumbnail", "node-a", api.StateBusy, api.StartWarm),
		inst("i-7", "thumbnail", "node-b", api.StateGone, api.StartCold),
	}
	hello := []api.Instance{
		inst("i-1", "hello", "node-a", api.StateIdle, api.StartCold),
		inst("i-2", "hello", "node-a", api.StateIdle, api.StartRestore),
		inst("i-3", "hello", "node-b", api.StateBusy, api.StartWarm),
	}
	onAgent := func(name string, lists ...[]api.Instance) []api.Instance {
		var out []api.Instance
		for _, l := range lists {
			for _, in := range l {
				if in.Agent == name {
					out = append(out, in)
				}
			}
		}
		return out
	}
	return &api.ClusterState{
		Time: fixedNow,
		// Deliberately not sorted: the console sorts by name.
		Agents: []api.AgentStatus{
			{
				Heartbeat: api.Heartbeat{
					Name: "node-b", URL: "http://10.0.0.12:7071", CapacityMB: 4096,
					Stats:     api.NodeStats{CPUPercent: 87.25, MemUsedBytes: 3*gib + 300*mib, MemTotalBytes: 4 * gib, Load1: 3.9},
					Instances: onAgent("node-b", hello, thumbs),
				},
				State: api.AgentSuspect, LastSeen: fixedNow.Add(-7 * time.Second), ReservedMB: 1536,
			},
			{
				Heartbeat: api.Heartbeat{
					Name: "node-a", URL: "http://10.0.0.11:7071", CapacityMB: 8192,
					Stats:     api.NodeStats{CPUPercent: 12.5, MemUsedBytes: 2*gib + 512*mib, MemTotalBytes: 16 * gib, Load1: 0.42},
					Instances: onAgent("node-a", hello, thumbs),
				},
				State: api.AgentReady, LastSeen: fixedNow.Add(-time.Second), ReservedMB: 640,
			},
		},
		Functions: []api.FunctionStatus{
			{
				Function:  api.Function{FunctionSpec: api.FunctionSpec{Name: "thumbnail", MemoryMB: 1024, Timeout: api.Duration(60 * time.Second)}, Version: 3},
				Instances: thumbs,
				Stats:     api.FunctionStats{Invocations: 250_314, Errors: 17, ColdStarts: 40, WarmStarts: 250_000, LastStartKind: api.StartRestore},
			},
			{
				Function:  api.Function{FunctionSpec: api.FunctionSpec{Name: "hello", MemoryMB: 128, Timeout: api.Duration(3 * time.Second)}, Version: 12},
				Instances: hello,
				Stats:     api.FunctionStats{Invocations: 4821, ColdStarts: 3, WarmStarts: 4818, LastStartKind: api.StartWarm},
			},
			{
				Function: api.Function{FunctionSpec: api.FunctionSpec{Name: "nightly-report", MemoryMB: 512, Timeout: api.Duration(15 * time.Minute)}, Version: 1},
			},
		},
	}
}

// fakeSource answers State from a function.
type fakeSource struct {
	mu    sync.Mutex
	calls int
	fn    func(ctx context.Context) (*api.ClusterState, error)
}

func (f *fakeSource) State(ctx context.Context) (*api.ClusterState, error) {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	return f.fn(ctx)
}

func newTestModel(src Source) Model {
	if src == nil {
		src = &fakeSource{fn: func(context.Context) (*api.ClusterState, error) { return testState(), nil }}
	}
	return New(src, WithColor(false), WithClock(fixedClock), WithInterval(time.Second))
}

// send drives Update with msgs and returns the model and the last command.
func send(t *testing.T, m Model, msgs ...tea.Msg) (Model, tea.Cmd) {
	t.Helper()
	var cmd tea.Cmd
	for _, msg := range msgs {
		var tm tea.Model
		tm, cmd = m.Update(msg)
		var ok bool
		if m, ok = tm.(Model); !ok {
			t.Fatalf("Update returned %T, want Model", tm)
		}
	}
	return m, cmd
}

// press returns the key message Bubble Tea sends for the key named s.
func press(s string) tea.KeyMsg {
	switch s {
	case "tab":
		return tea.KeyMsg{Type: tea.KeyTab}
	case "shift+tab":
		return tea.KeyMsg{Type: tea.KeyShiftTab}
	case "home":
		return tea.KeyMsg{Type: tea.KeyHome}
	case "end":
		return tea.KeyMsg{Type: tea.KeyEnd}
	case "up":
		return tea.KeyMsg{Type: tea.KeyUp}
	case "down":
		return tea.KeyMsg{Type: tea.KeyDown}
	case "ctrl+c":
		return tea.KeyMsg{Type: tea.KeyCtrlC}
	}
	return tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(s)}
}

func size(w, h int) tea.WindowSizeMsg { return tea.WindowSizeMsg{Width: w, Height: h} }

// checkScreen asserts the screen fits w × h.
func checkScreen(t *testing.T, view string, w, h int) {
	t.Helper()
	var lines []string
	if view != "" {
		lines = strings.Split(view, "\n")
	}
	if len(lines) > h {
		t.Errorf("%d×%d: %d lines, more than the height", w, h, len(lines))
	}
	for i, l := range lines {
		if lw := ansi.StringWidth(l); lw > w {
			t.Errorf("%d×%d: line %d is %d wide: %q", w, h, i+1, lw, l)
		}
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./tui -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("screen differs from %s (go test ./tui -update rewrites it)\n--- got ---\n%s\n--- want ---\n%s", path, got, want)
	}
}

func TestGoldenScreens(t *testing.T) {
	refused := errors.New("Get \"http://127.0.0.1:7070/v1/state\": dial tcp 127.0.0.1:7070: connect: connection refused")
	tests := []struct {
		name string
		w, h int
		msgs []tea.Msg
	}{
		{"screen_80x24", 80, 24, []tea.Msg{stateMsg{state: testState()}}},
		{"screen_120x40", 120, 40, []tea.Msg{stateMsg{state: testState()}}},
		{"disconnected_80x24", 80, 24, []tea.Msg{stateMsg{state: testState()}, stateMsg{err: refused}}},
		{"connecting_80x24", 80, 24, nil},
		{"functions_focus_80x24", 80, 24, []tea.Msg{stateMsg{state: testState()}, press("tab"), press("j"), press("j")}},
		{"narrow_40x12", 40, 12, []tea.Msg{stateMsg{state: testState()}}},
		{"help_80x24", 80, 24, []tea.Msg{stateMsg{state: testState()}, press("?")}},
		{"help_40x12", 40, 12, []tea.Msg{stateMsg{state: testState()}, press("?")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := send(t, newTestModel(nil), append([]tea.Msg{size(tt.w, tt.h)}, tt.msgs...)...)
			v := m.View()
			checkScreen(t, v, tt.w, tt.h)
			golden(t, tt.name, v)
		})
	}
}

func TestDisconnectedKeepsData(t *testing.T) {
	m, _ := send(t, newTestModel(nil), size(80, 24), stateMsg{state: testState()}, stateMsg{err: errors.New("boom")})
	v := m.View()
	for _, want := range []string{"○ disconnected · 12:00:05", "error: boom", "node-a", "thumbnail", "agents 1/2 ready"} {
		if !strings.Contains(v, want) {
			t.Errorf("view lacks %q:\n%s", want, v)
		}
	}
	// Reconnecting clears the error.
	m, _ = send(t, m, stateMsg{state: testState()})
	if v := m.View(); !strings.Contains(v, "● connected") || strings.Contains(v, "boom") {
		t.Errorf("not reconnected:\n%s", v)
	}
}

func TestCursorFollowsRowAcrossUpdate(t *testing.T) {
	// Focus functions and move to the last row (thumbnail: hello,
	// nightly-report, thumbnail).
	m, _ := send(t, newTestModel(nil), size(80, 24), stateMsg{state: testState()},
		press("tab"), press("j"), press("down"), press("j"))
	if got := m.tables[focusFunctions].key; got != "thumbnail" {
		t.Fatalf("selected %q, want thumbnail", got)
	}
	// k moves back up; up moves again; then down again.
	m, _ = send(t, m, press("k"), press("up"), press("down"), press("down"))
	if got := m.tables[focusFunctions]; got.key != "thumbnail" || got.cursor != 2 {
		t.Fatalf("after k/up/down/down: %+v, want thumbnail at 2", got)
	}

	// New data: two functions sort before thumbnail, so its index changes;
	// the cursor must stay on thumbnail. The agents table keeps node-a.
	st := testState()
	st.Functions = append(st.Functions,
		api.FunctionStatus{Function: api.Function{FunctionSpec: api.FunctionSpec{Name: "api-gateway", MemoryMB: 256, Timeout: api.Duration(10 * time.Second)}, Version: 2}},
		api.FunctionStatus{Function: api.Function{FunctionSpec: api.FunctionSpec{Name: "resize", MemoryMB: 256, Timeout: api.Duration(10 * time.Second)}, Version: 5}},
	)
	m, _ = send(t, m, stateMsg{state: st})
	if got := m.tables[focusFunctions]; got.key != "thumbnail" || got.cursor != 4 {
		t.Fatalf("after update: %+v, want thumbnail at 4", got)
	}
	if m.focus != focusFunctions {
		t.Errorf("focus moved to %d", m.focus)
	}
	if got := m.tables[focusAgents].key; got != "node-a" {
		t.Errorf("agents selection %q, want node-a", got)
	}
	v := m.View()
	checkScreen(t, v, 80, 24)
	golden(t, "cursor_after_update_80x24", v)

	// The selected row disappears: the cursor keeps its index, clamped.
	st.Functions = st.Functions[:2] // thumbnail, hello
	m, _ = send(t, m, stateMsg{state: st})
	if got := m.tables[focusFunctions]; got.key != "thumbnail" || got.cursor != 1 {
		t.Fatalf("after removal: %+v, want thumbnail at 1", got)
	}
	st.Functions = st.Functions[1:] // hello
	m, _ = send(t, m, stateMsg{state: st})
	if got := m.tables[focusFunctions]; got.key != "hello" || got.cursor != 0 {
		t.Fatalf("after removal: %+v, want hello at 0", got)
	}
}

func TestCursorBounds(t *testing.T) {
	m, _ := send(t, newTestModel(nil), press("j"), press("k")) // no data: no panic
	m, _ = send(t, m, stateMsg{state: testState()}, press("k"), press("k"))
	if got := m.tables[focusAgents]; got.cursor != 0 || got.key != "node-a" {
		t.Errorf("cursor %+v, want node-a at 0", got)
	}
	m, _ = send(t, m, press("j"), press("j"), press("j"))
	if got := m.tables[focusAgents]; got.cursor != 1 || got.key != "node-b" {
		t.Errorf("cursor %+v, want node-b at 1", got)
	}
	m, _ = send(t, m, press("tab"), press("tab"))
	if m.focus != focusAgents {
		t.Errorf("two tabs: focus %d, want agents", m.focus)
	}
}

func TestQuit(t *testing.T) {
	for _, k := range []string{"q", "ctrl+c"} {
		_, cmd := send(t, newTestModel(nil), press(k))
		if cmd == nil {
			t.Fatalf("%s: no command", k)
		}
		if _, ok := cmd().(tea.QuitMsg); !ok {
			t.Errorf("%s: command does not return tea.QuitMsg", k)
		}
	}
}

func TestFetchCommand(t *testing.T) {
	var sawDeadline bool
	src := &fakeSource{fn: func(ctx context.Context) (*api.ClusterState, error) {
		_, sawDeadline = ctx.Deadline()
		return testState(), nil
	}}
	m := newTestModel(src)
	msg := m.Init()()
	sm, ok := msg.(stateMsg)
	if !ok || sm.err != nil || sm.state == nil {
		t.Fatalf("Init command returned %#v", msg)
	}
	if !sawDeadline {
		t.Error("State called without a deadline")
	}

	// A result schedules the next tick; only the newest tick polls.
	m, cmd := send(t, m, sm)
	if cmd == nil {
		t.Fatal("no tick scheduled after a result")
	}
	if _, cmd := send(t, m, tickMsg{id: m.tickID - 1}); cmd != nil {
		t.Error("stale tick started a poll")
	}
	m2, cmd := send(t, m, tickMsg{id: m.tickID})
	if cmd == nil {
		t.Fatal("current tick did not poll")
	}
	if m2.fetchSeq != 1 {
		t.Errorf("fetchSeq %d, want 1", m2.fetchSeq)
	}

	// r refreshes now.
	_, cmd = send(t, m, press("r"))
	if cmd == nil {
		t.Fatal("r did not poll")
	}
	if sm := cmd().(stateMsg); sm.seq != 1 || sm.state == nil {
		t.Errorf("refresh returned %+v", sm)
	}
	if src.calls != 2 {
		t.Errorf("State called %d times, want 2", src.calls)
	}
}

func TestFetchErrorsAndOrdering(t *testing.T) {
	src := &fakeSource{fn: func(context.Context) (*api.ClusterState, error) { return nil, nil }}
	if sm := newTestModel(src).Init()().(stateMsg); !errors.Is(sm.err, errNoState) {
		t.Errorf("nil state: err %v, want errNoState", sm.err)
	}
	src.fn = func(ctx context.Context) (*api.ClusterState, error) { return nil, errors.New("refused") }
	if sm := newTestModel(src).Init()().(stateMsg); sm.err == nil {
		t.Error("error not delivered")
	}

	// A late answer from an older fetch does not replace newer data.
	m, _ := send(t, newTestModel(nil), stateMsg{state: testState(), seq: 2})
	old := testState()
	old.Agents = nil
	m, cmd := send(t, m, stateMsg{state: old, seq: 1})
	if cmd != nil || len(m.agents) != 2 {
		t.Errorf("stale result applied: %d agents", len(m.agents))
	}
}

// TestNeverOverflows renders sizes from 0×0 to 130×45 (every width and
// every height, against a spread of the other), with and without
// colour, with the short and the full help, with few and many rows, and checks nothing panics or overflows.
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
			Function: api.Function{FunctionSpec: api.FunctionSpec{Name: strings.Repeat("f", i+1)}},
			Stats:    api.FunctionStats{Invocations: 1 << 40, Errors: 1 << 35},
		})
	}
	for _, st := range []*api.ClusterState{testState(), big} {
		for _, mode := range []struct{ color, fullHelp bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
			m := New(&fakeSource{}, WithColor(mode.color), WithClock(fixedClock))
			m, _ = send(t, m, stateMsg{state: st}, stateMsg{err: errors.New(strings.Repeat("long error ", 20))}, press("tab"))
			for range 40 {
				m, _ = send(t, m, press("j"))
			}
			if mode.fullHelp {
				m, _ = send(t, m, press("?"))
			}
			check := func(w, h int) {
				m, _ = send(t, m, size(w, h))
				checkScreen(t, m.View(), w, h)
			}
			for w := 0; w <= 130; w++ {
				for _, h := range []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 24, 45} {
					check(w, h)
				}
			}
			for h := 0; h <= 45; h++ {
				for _, w := range []int{1, 2, 7, 15, 30, 40, 60, 79, 80, 81, 120} {
					check(w, h)
				}
			}
		}
	}
}

func TestCursorVisibleWhenScrolled(t *testing.T) {
	st := testState()
	for i := range 20 {
		st.Functions = append(st.Functions, api.FunctionStatus{Function: api.Function{FunctionSpec: api.FunctionSpec{Name: "zz-fn-" + string(rune('a'+i))}}})
	}
	m, _ := send(t, newTestModel(nil), size(80, 24), stateMsg{state: st}, press("tab"))
	for range 22 {
		m, _ = send(t, m, press("j"))
	}
	v := m.View()
	checkScreen(t, v, 80, 24)
	if !strings.Contains(v, "> zz-fn-t") {
		t.Errorf("selected last row not visible:\n%s", v)
	}
	if !strings.Contains(v, "of 23)") {
		t.Errorf("no scroll position in title:\n%s", v)
	}
}

func TestRunQuitsAndStopsWithContext(t *testing.T) {
	src := &fakeSource{fn: func(context.Context) (*api.ClusterState, error) { return testState(), nil }}

	// q on the input quits.
	err := run(context.Background(), src, []Option{WithColor(false)},
		tea.WithInput(strings.NewReader("q")), tea.WithOutput(io.Discard))
	if err != nil {
		t.Fatalf("run with q: %v", err)
	}

	// Cancelling the context ends the program too.
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, src, []Option{WithColor(false), WithInterval(10 * time.Millisecond)},
			tea.WithInput(pr), tea.WithOutput(io.Discard))
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after the context ended")
	}
}

// TestColorMatchesPlain forces an ANSI colour profile and checks that the
// coloured screen has escapes, fits, and reads the same as the plain one.
func TestColorMatchesPlain(t *testing.T) {
	prev := lipgloss.ColorProfile()
	lipgloss.SetColorProfile(termenv.ANSI256)
	t.Cleanup(func() { lipgloss.SetColorProfile(prev) })

	tests := []struct {
		sz       tea.WindowSizeMsg
		fullHelp bool
	}{
		{size(80, 24), false}, {size(120, 40), false}, {size(40, 12), false},
		{size(80, 24), true}, {size(40, 12), true},
	}
	for _, tt := range tests {
		sz := tt.sz
		msgs := []tea.Msg{sz, stateMsg{state: testState()}, press("tab"), press("j"), stateMsg{err: errors.New("refused")}}
		if tt.fullHelp {
			msgs = append(msgs, press("?"))
		}
		plain, _ := send(t, newTestModel(nil), msgs...)
		colored, _ := send(t, New(&fakeSource{}, WithColor(true), WithClock(fixedClock)), msgs...)
		cv := colored.View()
		if !strings.Contains(cv, "\x1b[") {
			t.Fatalf("%dx%d: no escapes in the coloured view", sz.Width, sz.Height)
		}
		checkScreen(t, cv, sz.Width, sz.Height)
		var stripped []string
		for _, l := range strings.Split(ansi.Strip(cv), "\n") {
			stripped = append(stripped, strings.TrimRight(l, " "))
		}
		if got, want := strings.Join(stripped, "\n"), plain.View(); got != want {
			t.Errorf("%dx%d: coloured text differs from plain\n--- coloured ---\n%s\n--- plain ---\n%s", sz.Width, sz.Height, got, want)
		}
	}
}

func TestKeyMap(t *testing.T) {
	km := defaultKeyMap()
	bindings := map[string]key.Binding{
		"quit": km.Quit, "next table": km.NextTable, "up": km.Up, "down": km.Down,
		"top": km.Top, "bottom": km.Bottom, "refresh": km.Refresh, "help": km.Help,
	}
	want := map[string][]string{
		"quit":       {"q", "ctrl+c"},
		"next table": {"tab", "shift+tab"},
		"up":         {"k", "up"},
		"down":       {"j", "down"},
		"top":        {"g", "home"},
		"bottom":     {"G", "end"},
		"refresh":    {"r"},
		"help":       {"?"},
	}
	for name, keys := range want {
		for _, k := range keys {
			for other, b := range bindings {
				if got := key.Matches(press(k), b); got != (other == name) {
					t.Errorf("key %q matches %s: %v", k, other, got)
				}
			}
		}
	}
	for name, b := range bindings {
		if h := b.Help(); h.Key == "" || h.Desc == "" {
			t.Errorf("%s has no help: %+v", name, h)
		}
	}
	// Every binding is in the full help; the short help is a subset.
	in := map[string]bool{}
	for _, col := range km.FullHelp() {
		for _, b := range col {
			in[b.Help().Desc] = true
		}
	}
	for name, b := range bindings {
		if !in[b.Help().Desc] {
			t.Errorf("%s missing from the full help", name)
		}
	}
	for _, layout := range km.fullHelpLayouts() {
		n := 0
		for _, col := range layout {
			n += len(col)
		}
		if n != len(bindings) {
			t.Errorf("full help layout %v has %d bindings, want %d", layout, n, len(bindings))
		}
	}
}

func TestTopBottom(t *testing.T) {
	m, _ := send(t, newTestModel(nil), press("g"), press("G"), press("home"), press("end")) // no data: no panic
	m, _ = send(t, m, stateMsg{state: testState()})
	m, _ = send(t, m, press("G"))
	if got := m.tables[focusAgents]; got.cursor != 1 || got.key != "node-b" {
		t.Errorf("G: %+v, want node-b at 1", got)
	}
	m, _ = send(t, m, press("g"))
	if got := m.tables[focusAgents]; got.cursor != 0 || got.key != "node-a" {
		t.Errorf("g: %+v, want node-a at 0", got)
	}
	// Only the focused table moves.
	m, _ = send(t, m, press("shift+tab"), press("end"))
	if got := m.tables[focusFunctions]; got.cursor != 2 || got.key != "thumbnail" {
		t.Errorf("end: %+v, want thumbnail at 2", got)
	}
	if got := m.tables[focusAgents]; got.cursor != 0 {
		t.Errorf("agents cursor moved to %d", got.cursor)
	}
	m, _ = send(t, m, press("home"))
	if got := m.tables[focusFunctions]; got.cursor != 0 || got.key != "hello" {
		t.Errorf("home: %+v, want hello at 0", got)
	}

	// G on a long, scrolled table shows the last row.
	st := testState()
	for i := range 20 {
		st.Functions = append(st.Functions, api.FunctionStatus{Function: api.Function{FunctionSpec: api.FunctionSpec{Name: "zz-fn-" + string(rune('a'+i))}}})
	}
	m, _ = send(t, newTestModel(nil), size(80, 24), stateMsg{state: st}, press("tab"), press("G"))
	if v := m.View(); !strings.Contains(v, "> zz-fn-t") || !strings.Contains(v, "of 23)") {
		t.Errorf("G: last row not shown:\n%s", v)
	}
	m, _ = send(t, m, press("g"))
	if v := m.View(); !strings.Contains(v, "> api-gateway") && !strings.Contains(v, "> hello") {
		t.Errorf("g: first row not shown:\n%s", v)
	}
}

func TestHelpToggle(t *testing.T) {
	m, _ := send(t, newTestModel(nil), size(80, 24), stateMsg{state: testState()})
	short := m.View()
	lines := strings.Split(short, "\n")
	if got := lines[len(lines)-1]; got != "q quit · ? help · tab next table · ↑/k up · ↓/j down · r refresh" {
		t.Errorf("short help %q", got)
	}
	m, cmd := send(t, m, press("?"))
	if cmd != nil || !m.help.ShowAll {
		t.Fatalf("? did not open the full help (cmd %v)", cmd)
	}
	full := m.View()
	checkScreen(t, full, 80, 24)
	for _, want := range []string{"─ KEYS ─", "g/home", "G/end", "bottom", "tab next table", "refresh", "? close help", "q quit"} {
		if !strings.Contains(full, want) {
			t.Errorf("full help lacks %q:\n%s", want, full)
		}
	}
	// Keys still work with the help open, and ? closes it.
	m, _ = send(t, m, press("j"))
	if m.tables[focusAgents].key != "node-b" {
		t.Errorf("j with help open: %+v", m.tables[focusAgents])
	}
	m, _ = send(t, m, press("?"))
	if m.help.ShowAll {
		t.Fatal("second ? did not close the full help")
	}
	m, _ = send(t, m, press("k"))
	if got := m.View(); got != short {
		t.Errorf("closing the help did not restore the screen:\n%s\n--- want ---\n%s", got, short)
	}
}

// TestHelpDegrades checks which full help layout each screen gets: three
// columns, two, one, or the short help when nothing else fits.
func TestHelpDegrades(t *testing.T) {
	tests := []struct {
		w, h int
		rows int // lines of the footer, title rule included; 1 is the short help
	}{
		{80, 24, 5}, // three columns
		{40, 12, 5}, // two columns
		{20, 12, 9}, // one column
		{20, 9, 1},  // one column does not fit: short help
		{80, 6, 5},  // header, body 0, help
		{80, 5, 1},
		{3, 2, 1},
		{1, 1, 0}, // header only
	}
	for _, tt := range tests {
		m, _ := send(t, newTestModel(nil), size(tt.w, tt.h), stateMsg{state: testState()}, press("?"))
		v := m.View()
		checkScreen(t, v, tt.w, tt.h)
		got := 0
		if tt.h >= 2 {
			got = len(m.footer(newStyles(false), tt.w, tt.h-1))
		}
		if got != tt.rows {
			t.Errorf("%d×%d: footer of %d lines, want %d:\n%s", tt.w, tt.h, got, tt.rows, v)
		}
		if lines := strings.Split(v, "\n"); tt.h > 1 && len(lines) != tt.h {
			t.Errorf("%d×%d: %d lines, want the full height", tt.w, tt.h, len(lines))
		}
	}
}
