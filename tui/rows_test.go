package tui

import (
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

func TestFormatBytes(t *testing.T) {
	tests := []struct {
		in   uint64
		want string
	}{
		{0, "0 B"},
		{1023, "1023 B"},
		{1024, "1 KB"},
		{mib - 1, "1023 KB"},
		{mib, "1 MB"},
		{512 * mib, "512 MB"},
		{gib - 1, "1023 MB"},
		{gib, "1.0 GB"},
		{3 * gib / 2, "1.5 GB"},
		{16 * gib, "16.0 GB"},
		{tib, "1.0 TB"},
	}
	for _, tt := range tests {
		if got := formatBytes(tt.in); got != tt.want {
			t.Errorf("formatBytes(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFormatMem(t *testing.T) {
	tests := []struct {
		used, total uint64
		want        string
	}{
		{0, 0, "-"},
		{512 * mib, 2 * gib, "512 MB/2.0 GB"},
		{3 * gib, 8 * gib, "3.0 GB/8.0 GB"},
	}
	for _, tt := range tests {
		if got := formatMem(tt.used, tt.total); got != tt.want {
			t.Errorf("formatMem(%d, %d) = %q, want %q", tt.used, tt.total, got, tt.want)
		}
	}
}

func TestFormatPercent(t *testing.T) {
	tests := []struct {
		in   float64
		want string
	}{
		{0, "0.0%"},
		{12.345, "12.3%"},
		{99.96, "100.0%"},
		{100, "100.0%"},
		{-1, "-"},
		{math.NaN(), "-"},
		{math.Inf(1), "-"},
	}
	for _, tt := range tests {
		if got := formatPercent(tt.in); got != tt.want {
			t.Errorf("formatPercent(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFormatLoadMBSecondsCount(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"load", formatLoad(0.4234), "0.42"},
		{"load negative", formatLoad(-1), "-"},
		{"mb", formatMB(128), "128 MB"},
		{"mb zero", formatMB(0), "0 MB"},
		{"mb negative", formatMB(-1), "-"},
		{"seconds zero", formatSeconds(0), "-"},
		{"seconds ms", formatSeconds(500 * time.Millisecond), "500ms"},
		{"seconds whole", formatSeconds(30 * time.Second), "30s"},
		{"seconds minutes", formatSeconds(15 * time.Minute), "900s"},
		{"seconds fraction", formatSeconds(2500 * time.Millisecond), "2.5s"},
		{"count small", formatCount(99_999), "99999"},
		{"count k", formatCount(123_456), "123k"},
		{"count M", formatCount(4_560_000), "4.6M"},
		{"count G", formatCount(1_200_000_000), "1.2G"},
		{"count negative", formatCount(-5), "-"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestAgentRows(t *testing.T) {
	tests := []struct {
		name  string
		state *api.ClusterState
		want  [][]string
	}{
		{"nil state", nil, nil},
		{"no agents", &api.ClusterState{}, [][]string{}},
		{
			"sorted by name, gone instances not counted",
			&api.ClusterState{Agents: []api.AgentStatus{
				{
					Heartbeat: api.Heartbeat{Name: "zeta", Stats: api.NodeStats{CPUPercent: 5, MemUsedBytes: 512 * mib, MemTotalBytes: 2 * gib, Load1: 0.1},
						Instances: []api.Instance{{State: api.StateIdle}, {State: api.StateGone}}},
					State: api.AgentSuspect, ReservedMB: 256,
				},
				{
					Heartbeat: api.Heartbeat{Name: "alpha"},
					State:     api.AgentGone,
				},
			}},
			[][]string{
				{"alpha", "gone", "0.0%", "-", "0.00", "0", "0 MB"},
				{"zeta", "suspect", "5.0%", "512 MB/2.0 GB", "0.10", "1", "256 MB"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows := agentRows(tt.state)
			if tt.want == nil {
				if rows != nil {
					t.Fatalf("rows = %v, want nil", rows)
				}
				return
			}
			got := [][]string{}
			for _, r := range rows {
				got = append(got, r.cells)
				if r.key != r.cells[agentColName] {
					t.Errorf("key %q != name %q", r.key, r.cells[agentColName])
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("cells\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestAgentRowTones(t *testing.T) {
	rows := agentRows(&api.ClusterState{Agents: []api.AgentStatus{
		{Heartbeat: api.Heartbeat{Name: "a"}, State: api.AgentReady},
		{Heartbeat: api.Heartbeat{Name: "b"}, State: api.AgentSuspect},
		{Heartbeat: api.Heartbeat{Name: "c"}, State: api.AgentGone},
	}})
	want := []tone{toneGood, toneWarn, toneBad}
	for i, r := range rows {
		if r.tones[agentColState] != want[i] {
			t.Errorf("%s: state tone %v, want %v", r.key, r.tones[agentColState], want[i])
		}
	}
	if rows[2].tones[agentColCPU] != toneDim {
		t.Errorf("gone agent figures not dimmed")
	}
}

func TestFunctionRows(t *testing.T) {
	tests := []struct {
		name string
		fns  []api.FunctionStatus
		want [][]string
	}{
		{"empty", nil, [][]string{}},
		{
			"counts idle and busy only, sorted",
			[]api.FunctionStatus{
				{
					Function: api.Function{FunctionSpec: api.FunctionSpec{Name: "web", MemoryMB: 256, Timeout: api.Duration(3 * time.Second)}, Version: 4},
					Instances: []api.Instance{
						{State: api.StateIdle}, {State: api.StateIdle}, {State: api.StateBusy},
						{State: api.StateCreating}, {State: api.StateInitializing}, {State: api.StateGone},
					},
					Stats: api.FunctionStats{Invocations: 1234, Errors: 2, LastStartKind: api.StartRestore},
				},
				{
					Function: api.Function{FunctionSpec: api.FunctionSpec{Name: "cron", MemoryMB: 128}, Version: 1},
				},
			},
			[][]string{
				{"cron", "1", "128 MB", "-", "0", "0", "0", "0", "-"},
				{"web", "4", "256 MB", "3s", "2", "1", "1234", "2", "restore"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := [][]string{}
			for _, r := range functionRows(&api.ClusterState{Functions: tt.fns}) {
				got = append(got, r.cells)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("cells\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	st := testState()
	got := summarize(st)
	want := summary{agents: 2, ready: 1, functions: 3, instances: 6}
	if got != want {
		t.Errorf("summarize = %+v, want %+v", got, want)
	}
	if (summarize(nil) != summary{}) {
		t.Errorf("summarize(nil) not zero")
	}
}

func TestFitColumns(t *testing.T) {
	rows := []row{{cells: []string{"a-rather-long-agent-name", "ready", "12.5%", "1.2 GB/7.8 GB", "0.42", "3", "512 MB"}}}
	cols := agentColumns[:]
	tests := []struct {
		w    int
		want []int
	}{
		{200, []int{24, 5, 5, 13, 4, 4, 8}},
		{60, []int{17, 5, 5, 13, 4, 4, 0}},
		{40, []int{9, 5, 5, 13, 0, 0, 0}},
		{20, []int{11, 5, 0, 0, 0, 0, 0}},
		{10, []int{8, 0, 0, 0, 0, 0, 0}},
		{5, []int{3, 0, 0, 0, 0, 0, 0}},
		{0, []int{1, 0, 0, 0, 0, 0, 0}},
	}
	for _, tt := range tests {
		got := fitColumns(cols, rows, tt.w)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("fitColumns(w=%d) = %v, want %v", tt.w, got, tt.want)
		}
	}
}

func TestLayout(t *testing.T) {
	tests := []struct {
		name  string
		body  int
		need  [2]int
		focus int
		want  sectionLayout
	}{
		{"everything fits", 22, [2]int{4, 5}, 0, sectionLayout{blankTop: true, blankMid: true, lines: [2]int{4, 5}}},
		{"share, focused gets more", 12, [2]int{12, 12}, 1, sectionLayout{blankTop: true, blankMid: true, lines: [2]int{5, 5}}},
		{"short table leaves room", 12, [2]int{3, 20}, 0, sectionLayout{blankTop: true, blankMid: true, lines: [2]int{3, 7}}},
		{"no blanks", 6, [2]int{5, 5}, 0, sectionLayout{lines: [2]int{3, 3}}},
		{"only focused", 4, [2]int{5, 5}, 1, sectionLayout{lines: [2]int{0, 4}}},
		{"nothing", 0, [2]int{5, 5}, 0, sectionLayout{}},
	}
	for _, tt := range tests {
		if got := layout(tt.body, tt.need, tt.focus); got != tt.want {
			t.Errorf("%s: layout = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}
