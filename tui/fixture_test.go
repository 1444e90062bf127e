package tui

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

	"github.com/amberfn/amber/api"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

var fixedNow = time.Date(2026, 5, 4, 12, 0, 5, 0, time.UTC)

func fixedClock() time.Time { return fixedNow }

func inst(id, fn, agent string, state api.InstanceState, kind api.StartKind, inv int64, peak int) api.Instance {
	return api.Instance{ID: id, Function: fn, Version: 1, Agent: agent, State: state, StartKind: kind, MemoryMB: 128, MaxMemoryMB: peak, Invocations: inv}
}

// observe returns a histogram of n values spread deterministically over
// [lo, hi] ms, skewed towards lo (a long tail).
func observe(n int, lo, hi float64) *api.Histogram {
	h := &api.Histogram{}
	for j := range n {
		x := float64((j*7919)%1000) / 1000
		h.Observe(lo + (hi-lo)*x*x*x)
	}
	return h
}

const steps = 7 // states of the fixture, 10 s apart, the last at fixedNow

// testStateAt is the fixed cluster at step i (0 … steps-1): two agents and
// three functions whose counters, histograms and host figures move from
// step to step, so rates, sparklines and windows have something to show.
func testStateAt(i int) *api.ClusterState {
	t := fixedNow.Add(-time.Duration(steps-1-i) * 10 * time.Second)
	thumbs := []api.Instance{
		inst("i-4", "thumbnail", "node-b", api.StateBusy, api.StartRestore, 120_400, 612),
		inst("i-5", "thumbnail", "node-b", api.StateInitializing, api.StartCold, 0, 0),
		inst("i-6", "thumbnail", "node-a", api.StateBusy, api.StartWarm, 129_914, 655),
		inst("i-7", "thumbnail", "node-b", api.StateGone, api.StartCold, 3, 80),
	}
	for k := range thumbs {
		thumbs[k].MemoryMB = 1024
	}
	hello := []api.Instance{
		inst("i-1", "hello", "node-a", api.StateIdle, api.StartCold, 2410, 23),
		inst("i-2", "hello", "node-a", api.StateIdle, api.StartRestore, 1801, 21),
		inst("i-3", "hello", "node-b", api.StateBusy, api.StartWarm, 610, 24),
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
	cpuA := []float64{12, 20, 35, 50, 42, 30, 12.5}
	cpuB := []float64{60, 71, 80, 92, 88, 85, 87.25}
	memB := []uint64{2800, 2900, 3000, 3100, 3200, 3300, 3372}
	helloInv := int64(4221 + 100*i)
	thumbInv := int64(235_314 + 2500*i)
	helloCold := int64(3)
	if i >= 5 {
		helloCold = 4
	}
	return &api.ClusterState{
		Time: t,
		// Deliberately not sorted: the console sorts.
		Agents: []api.AgentStatus{
			{
				Heartbeat: api.Heartbeat{
					Name: "node-b", URL: "http://10.0.0.12:7071", CapacityMB: 4096,
					Stats:     api.NodeStats{CPUPercent: cpuB[i], MemUsedBytes: memB[i] * mib, MemTotalBytes: 4 * gib, Load1: 3.9},
					Instances: onAgent("node-b", hello, thumbs),
				},
				State: api.AgentSuspect, LastSeen: t.Add(-7 * time.Second), ReservedMB: 1536,
			},
			{
				Heartbeat: api.Heartbeat{
					Name: "node-a", URL: "http://10.0.0.11:7071", CapacityMB: 8192,
					Stats:     api.NodeStats{CPUPercent: cpuA[i], MemUsedBytes: 2*gib + 512*mib, MemTotalBytes: 16 * gib, Load1: 0.42},
					Instances: onAgent("node-a", hello, thumbs),
				},
				State: api.AgentReady, LastSeen: t.Add(-time.Second), ReservedMB: 640,
			},
		},
		Functions: []api.FunctionStatus{
			{
				Function:  api.Function{FunctionSpec: api.FunctionSpec{Name: "thumbnail", MemoryMB: 1024, Timeout: api.Duration(60 * time.Second)}, Version: 3},
				Instances: thumbs,
				Stats: api.FunctionStats{Invocations: thumbInv, Errors: 17, ColdStarts: 40, WarmStarts: thumbInv - 40 - 900,
					GBSeconds: float64(thumbInv) * 0.061, BilledMs: thumbInv * 61, IdleInstanceSeconds: 5400, LastStartKind: api.StartRestore},
				Pool: api.PoolStatus{
					PoolSettings:     api.PoolSettings{MinWarm: 0, KeepAlive: api.Duration(5 * time.Minute), Auto: true, AutoMax: 4},
					Function:         "thumbnail",
					EffectiveMinWarm: 1,
					Shares:           []api.PoolShare{{Agent: "node-a", Busy: 1}, {Agent: "node-b", MinWarm: 1, Busy: 1}},
					Recommendation:   api.PoolRecommendation{MinWarm: 1, WarmthGBsPerHour: 3600, ColdStartsAvoidedPerHour: 4.5, Reason: "p95 concurrency 1 (30m)"},
				},
				Latency: map[api.StartKind]*api.Histogram{
					api.StartWarm:    observe(int(thumbInv/1000)+10*i, 18, 90),
					api.StartCold:    observe(40, 310, 980),
					api.StartRestore: observe(900+5*i, 95, 160),
				},
			},
			{
				Function:  api.Function{FunctionSpec: api.FunctionSpec{Name: "hello", MemoryMB: 128, Timeout: api.Duration(3 * time.Second)}, Version: 12},
				Instances: hello,
				Stats: api.FunctionStats{Invocations: helloInv, ColdStarts: helloCold, WarmStarts: helloInv - helloCold,
					GBSeconds: float64(helloInv) * 0.00025, BilledMs: helloInv * 2, IdleInstanceSeconds: 7200, LastStartKind: api.StartWarm},
				Pool: api.PoolStatus{
					PoolSettings:     api.PoolSettings{MinWarm: 2, MaxInstances: 10, KeepAlive: api.Duration(10 * time.Minute)},
					Function:         "hello",
					EffectiveMinWarm: 2,
					Shares:           []api.PoolShare{{Agent: "node-a", MinWarm: 1, MaxInstances: 5, Idle: 2}, {Agent: "node-b", MinWarm: 1, MaxInstances: 5, Busy: 1}},
					Recommendation:   api.PoolRecommendation{MinWarm: 3, WarmthGBsPerHour: 1350, ColdStartsAvoidedPerHour: 12, Reason: "p95 concurrency 3 (30m)"},
				},
				Latency: map[api.StartKind]*api.Histogram{
					api.StartWarm: observe(int(helloInv-helloCold), 0.6, 4),
					api.StartCold: observe(int(helloCold), 70, 110),
				},
			},
			{
				Function: api.Function{FunctionSpec: api.FunctionSpec{Name: "nightly-report", MemoryMB: 512, Timeout: api.Duration(15 * time.Minute)}, Version: 1},
				Pool:     api.PoolStatus{PoolSettings: api.DefaultPool(), Function: "nightly-report"},
			},
		},
	}
}

func testState() *api.ClusterState { return testStateAt(steps - 1) }

func testEvents() []api.Event {
	at := func(s int) time.Time { return fixedNow.Add(-time.Duration(s) * time.Second) }
	return []api.Event{
		{Seq: 1, Time: at(300), Kind: api.EventAgentRegistered, Agent: "node-a", Message: "agent node-a registered (8192 MB)"},
		{Seq: 2, Time: at(299), Kind: api.EventAgentRegistered, Agent: "node-b", Message: "agent node-b registered (4096 MB)"},
		{Seq: 3, Time: at(240), Kind: api.EventDeployed, Function: "hello", Message: "hello version 12 deployed"},
		{Seq: 4, Time: at(120), Kind: api.EventPoolChanged, Function: "hello", Message: "min_warm 1 → 2"},
		{Seq: 5, Time: at(30), Kind: api.EventThrottled, Function: "thumbnail", Message: "429 at max_instances"},
		{Seq: 6, Time: at(8), Kind: api.EventAgentState, Agent: "node-b", Message: "node-b is suspect: no heartbeat for 7s"},
	}
}

func testLogs(name string) []api.LogRecord {
	at := func(ms int) time.Time { return fixedNow.Add(-2*time.Second + time.Duration(ms)*time.Millisecond) }
	return []api.LogRecord{
		{Time: at(0), Function: name, Agent: "node-a", Stream: api.StreamPlatform, Text: "START RequestId: 7f3a Version: 12"},
		{Time: at(1), Function: name, Agent: "node-a", Stream: api.StreamStdout, Text: `{"level":"info","msg":"hello, amber"}`},
		{Time: at(2), Function: name, Agent: "node-a", Stream: api.StreamPlatform, Text: "END RequestId: 7f3a"},
		{Time: at(3), Function: name, Agent: "node-a", Stream: api.StreamPlatform, Text: "REPORT RequestId: 7f3a Duration: 1.21 ms Billed Duration: 2 ms Memory Size: 128 MB Max Memory Used: 23 MB"},
	}
}

func testBill() *api.Bill {
	p := api.DefaultPrices()
	mk := func(name string, req int64, gbs, warm float64) api.Usage {
		u := api.Usage{Function: name, Requests: req, GBSeconds: gbs, WarmthGBSeconds: warm}
		u.Price(p)
		return u
	}
	fns := []api.Usage{mk("hello", 81_220, 20.3, 21_600), mk("thumbnail", 5_310_000, 323_910, 86_400)}
	var tot api.Usage
	for _, u := range fns {
		tot.Add(u)
	}
	return &api.Bill{
		Since: fixedNow.Add(-24 * time.Hour).Truncate(time.Hour), Until: fixedNow.Truncate(time.Hour).Add(time.Hour),
		Prices: p, Functions: fns, Totals: tot, WarmPoolsCostPerHour: 0.0167,
	}
}

// fakeSource records what the console asks and answers from fixed data.
type fakeSource struct {
	mu       sync.Mutex
	streams  int
	stream   chan api.StreamMessage
	streamEr error
	setPools []api.PoolChange
	setNames []string
	setErr   error
	invokes  []string
	invokeEr error
	logs     int
	bills    int
	billErr  error
}

func (f *fakeSource) Stream(ctx context.Context, since int64) (<-chan api.StreamMessage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.streams++
	if f.streamEr != nil {
		return nil, f.streamEr
	}
	return f.stream, nil
}

func (f *fakeSource) SetPool(ctx context.Context, name string, ch api.PoolChange) (*api.PoolStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setPools = append(f.setPools, ch)
	f.setNames = append(f.setNames, name)
	if f.setErr != nil {
		return nil, f.setErr
	}
	fn := findFunction(testState(), name)
	if fn == nil {
		return nil, fmt.Errorf("function %s: %w", name, api.ErrNotFound)
	}
	p := fn.Pool
	p.PoolSettings = ch.Apply(p.PoolSettings)
	if !p.Auto {
		p.EffectiveMinWarm = p.MinWarm
	}
	return &p, nil
}

func (f *fakeSource) Invoke(ctx context.Context, name string, payload []byte) (*api.InvokeResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.invokes = append(f.invokes, name+" "+string(payload))
	if f.invokeEr != nil {
		return nil, f.invokeEr
	}
	return &api.InvokeResult{RequestID: "7f3a", Function: name, Version: 12, Agent: "node-a", Instance: "i-1",
		StartKind: api.StartWarm, Duration: 1210 * time.Microsecond, BilledMs: 2, MemoryMB: 128, MaxMemoryMB: 23,
		Payload: []byte(`{"message":"hello, amber"}`)}, nil
}

func (f *fakeSource) Logs(ctx context.Context, name string, since time.Time, limit int) ([]api.LogRecord, error) {
	f.mu.Lock()
	f.logs++
	f.mu.Unlock()
	return testLogs(name), nil
}

func (f *fakeSource) Bill(ctx context.Context, since, until time.Time, by string) (*api.Bill, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bills++
	if f.billErr != nil {
		return nil, f.billErr
	}
	return testBill(), nil
}

// noBill hides the fake's Bill: a scheduler without the bill API.
type noBill struct{ Source }

func newTestModel(src Source, opts ...Option) Model {
	if src == nil {
		src = &fakeSource{}
	}
	return New(src, append([]Option{WithColor(false), WithClock(fixedClock)}, opts...)...)
}

// data is the stream message carrying state i (and, with the last, the events).
func data(i int) streamDataMsg {
	m := streamDataMsg{msg: api.StreamMessage{State: testStateAt(i)}}
	if i == steps-1 {
		m.msg.Events = testEvents()
	}
	return m
}

// allStates is every state of the fixture, then a frame.
func allStates() []tea.Msg {
	var msgs []tea.Msg
	for i := range steps {
		msgs = append(msgs, data(i))
	}
	return append(msgs, renderMsg{})
}

// send drives Update with msgs and returns the model and the last command.
func send(t testing.TB, m Model, msgs ...tea.Msg) (Model, tea.Cmd) {
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

// execCmd executes cmd and feeds what it returns back (batches included, ticks
// and stream reads left out), as Bubble Tea would, one level deep.
func execCmd(t testing.TB, m Model, cmd tea.Cmd) Model {
	t.Helper()
	if cmd == nil {
		return m
	}
	done := make(chan tea.Msg, 1)
	go func() { done <- cmd() }()
	var msg tea.Msg
	select {
	case msg = <-done:
	case <-time.After(200 * time.Millisecond):
		return m // a tick or a blocking read: not run here
	}
	if b, ok := msg.(tea.BatchMsg); ok {
		for _, c := range b {
			m = execCmd(t, m, c)
		}
		return m
	}
	m, _ = send(t, m, msg)
	return m
}

// press returns the key message Bubble Tea sends for the key named s.
func press(s string) tea.KeyMsg {
	switch s {
	case "tab":
		return tea.KeyMsg{Type: tea.KeyTab}
	case "shift+tab":
		return tea.KeyMsg{Type: tea.KeyShiftTab}
	case "enter":
		return tea.KeyMsg{Type: tea.KeyEnter}
	case "esc":
		return tea.KeyMsg{Type: tea.KeyEsc}
	case "backspace":
		return tea.KeyMsg{Type: tea.KeyBackspace}
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

// typeText is one key message per rune.
func typeText(s string) []tea.Msg {
	var out []tea.Msg
	for _, r := range s {
		out = append(out, tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}})
	}
	return out
}

func size(w, h int) tea.WindowSizeMsg { return tea.WindowSizeMsg{Width: w, Height: h} }

// checkScreen asserts the screen fits w × h.
func checkScreen(t testing.TB, view string, w, h int) {
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

var errRefused = errors.New(`Get "http://127.0.0.1:7700/v1/stream?since=6": dial tcp 127.0.0.1:7700: connect: connection refused`)
