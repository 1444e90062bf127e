package tui

import (
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

func fnState(t time.Time, inv, cold, warm map[string]int64) *api.ClusterState {
	st := &api.ClusterState{Time: t}
	for name, n := range inv {
		st.Functions = append(st.Functions, api.FunctionStatus{
			Function: api.Function{FunctionSpec: api.FunctionSpec{Name: name, MemoryMB: 128}},
			Stats:    api.FunctionStats{Invocations: n, ColdStarts: cold[name], WarmStarts: warm[name]},
		})
	}
	return st
}

func TestRates(t *testing.T) {
	t0 := fixedNow
	tests := []struct {
		name     string
		states   []*api.ClusterState
		fn       string
		wantRate float64
		wantCold float64
		wantOK   bool
	}{
		{"one state: unknown", []*api.ClusterState{fnState(t0, map[string]int64{"a": 10}, nil, nil)}, "a", 0, 0, false},
		{"two states", []*api.ClusterState{
			fnState(t0, map[string]int64{"a": 10}, map[string]int64{"a": 1}, nil),
			fnState(t0.Add(2*time.Second), map[string]int64{"a": 30}, map[string]int64{"a": 2}, nil),
		}, "a", 10, 30, true},
		{"window: oldest within 10s", []*api.ClusterState{
			fnState(t0, map[string]int64{"a": 0}, nil, nil),
			fnState(t0.Add(5*time.Second), map[string]int64{"a": 100}, nil, nil),
			fnState(t0.Add(10*time.Second), map[string]int64{"a": 150}, nil, nil),
			fnState(t0.Add(15*time.Second), map[string]int64{"a": 200}, nil, nil),
		}, "a", 10, 0, true},
		{"counter reset counts from zero", []*api.ClusterState{
			fnState(t0, map[string]int64{"a": 500}, nil, nil),
			fnState(t0.Add(time.Second), map[string]int64{"a": 4}, nil, nil),
		}, "a", 4, 0, true},
		{"new function counts from zero", []*api.ClusterState{
			fnState(t0, map[string]int64{"a": 1}, nil, nil),
			fnState(t0.Add(2*time.Second), map[string]int64{"a": 1, "b": 6}, nil, nil),
		}, "b", 3, 0, true},
		{"late state ignored", []*api.ClusterState{
			fnState(t0, map[string]int64{"a": 0}, nil, nil),
			fnState(t0.Add(time.Second), map[string]int64{"a": 10}, nil, nil),
			fnState(t0, map[string]int64{"a": 0}, nil, nil),
		}, "a", 10, 0, true},
		{"unknown function", []*api.ClusterState{
			fnState(t0, map[string]int64{"a": 0}, nil, nil),
			fnState(t0.Add(time.Second), map[string]int64{"a": 10}, nil, nil),
		}, "zz", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHistory()
			for _, st := range tt.states {
				h.add(st, st.Time)
			}
			rate, cold, ok := h.fnRate(tt.fn)
			if ok != tt.wantOK || math.Abs(rate-tt.wantRate) > 1e-9 || math.Abs(cold-tt.wantCold) > 1e-9 {
				t.Errorf("fnRate = %v, %v, %v; want %v, %v, %v", rate, cold, ok, tt.wantRate, tt.wantCold, tt.wantOK)
			}
		})
	}
}

func TestClusterRateAndCold(t *testing.T) {
	h := newHistory()
	h.add(fnState(fixedNow, map[string]int64{"a": 0, "b": 0}, map[string]int64{"a": 0}, map[string]int64{"a": 0, "b": 0}), fixedNow)
	h.add(fnState(fixedNow.Add(10*time.Second), map[string]int64{"a": 50, "b": 50},
		map[string]int64{"a": 5}, map[string]int64{"a": 45, "b": 50}), fixedNow.Add(10*time.Second))
	if r, ok := h.clusterRate(); !ok || r != 10 {
		t.Errorf("clusterRate = %v, %v", r, ok)
	}
	perMin, share, ok := h.clusterCold()
	if !ok || perMin != 30 || share != 5 {
		t.Errorf("clusterCold = %v/min, %v%%, %v; want 30, 5", perMin, share, ok)
	}
	if len(h.rate) != 2 {
		t.Errorf("rate series %v", h.rate)
	}
}

func TestSubHist(t *testing.T) {
	base := observe(100, 1, 10)
	cur := base.Clone()
	extra := observe(50, 100, 200)
	cur.Merge(extra)
	tests := []struct {
		name      string
		cur, base *api.Histogram
		want      int64
		p50       float64
	}{
		{"window is the difference", cur, base, 50, extra.Quantile(0.5)},
		{"no base: everything", cur, nil, 150, cur.Quantile(0.5)},
		{"base larger (restart): everything", base, cur, 100, base.Quantile(0.5)},
		{"no change: empty", base, base, 0, 0},
	}
	for _, tt := range tests {
		got := subHist(tt.cur, tt.base)
		if got.Count != tt.want {
			t.Errorf("%s: count %d, want %d", tt.name, got.Count, tt.want)
		}
		var sum int64
		for _, c := range got.Counts {
			sum += c
		}
		if got.Count != sum {
			t.Errorf("%s: count %d but buckets sum to %d", tt.name, got.Count, sum)
		}
		if q := got.Quantile(0.5); math.Abs(q-tt.p50) > 1e-9 {
			t.Errorf("%s: p50 %v, want %v", tt.name, q, tt.p50)
		}
	}
	if subHist(nil, base) != nil {
		t.Error("subHist(nil) not nil")
	}
}

func TestWindowLatency(t *testing.T) {
	h := newHistory()
	mk := func(i int) *api.ClusterState {
		st := fnState(fixedNow.Add(time.Duration(i)*time.Minute), map[string]int64{"a": int64(i)}, nil, nil)
		st.Functions[0].Latency = map[api.StartKind]*api.Histogram{api.StartWarm: observe(100*i, 1, 2)}
		return st
	}
	var last *api.ClusterState
	for i := 1; i <= 20; i++ { // one state a minute: 100 more warm invocations each
		last = mk(i)
		h.add(last, last.Time)
	}
	now := last.Time
	tests := []struct {
		d        time.Duration
		want     int64
		wantSpan time.Duration
	}{
		{time.Minute, 100, time.Minute},
		{5 * time.Minute, 500, 5 * time.Minute},
		{15 * time.Minute, 1500, 15 * time.Minute},
		{0, 2000, 0},
	}
	for _, tt := range tests {
		got, span := h.windowLatency(last, "a", now, tt.d)
		if got[api.StartWarm].Count != tt.want || span != tt.wantSpan {
			t.Errorf("window %v: %d invocations over %v, want %d over %v", tt.d, got[api.StartWarm].Count, span, tt.want, tt.wantSpan)
		}
		all, _ := h.windowLatency(last, "", now, tt.d)
		if all[api.StartWarm].Count != tt.want {
			t.Errorf("window %v, all functions: %d", tt.d, all[api.StartWarm].Count)
		}
	}
	// Old snapshots are dropped: only latKeep is kept.
	if age := now.Sub(h.lat[0].t); age > latKeep {
		t.Errorf("oldest snapshot %v old", age)
	}
	tr := h.p99Trend(last, "a", api.StartWarm, 100)
	if len(tr) != len(h.lat)-1 {
		t.Errorf("trend of %d points for %d snapshots", len(tr), len(h.lat))
	}
}

func TestSnapshotsShareUnchanged(t *testing.T) {
	h := newHistory()
	st := fnState(fixedNow, map[string]int64{"idle": 0}, nil, nil)
	st.Functions[0].Latency = map[api.StartKind]*api.Histogram{api.StartWarm: observe(10, 1, 2)}
	h.add(st, fixedNow)
	st2 := *st
	st2.Time = fixedNow.Add(latStep)
	h.add(&st2, st2.Time)
	if h.lat[0].fns["idle"][api.StartWarm] != h.lat[1].fns["idle"][api.StartWarm] {
		t.Error("unchanged histogram copied instead of shared")
	}
}

func TestSortRows(t *testing.T) {
	rows := func() []row {
		mk := func(k string, n float64, s string) row {
			r := newRow(k, 3)
			r.cells = []string{k, "x", s}
			r.num[1] = n
			return r
		}
		return []row{mk("c", 2, "b"), mk("a", 2, "B"), mk("b", math.NaN(), "a"), mk("d", 5, "c")}
	}
	tests := []struct {
		name string
		col  int
		desc bool
		want string
	}{
		{"name", 0, false, "a b c d"},
		{"name reversed", 0, true, "d c b a"},
		{"number ascending, '-' first, name breaks ties", 1, false, "b a c d"},
		{"number descending, name still breaks ties ascending", 1, true, "d a c b"},
		{"text ignores case, name breaks ties", 2, false, "b a c d"},
		{"own order", -1, false, "c a b d"},
	}
	for _, tt := range tests {
		rs := rows()
		sortRows(rs, tt.col, tt.desc)
		var got []string
		for _, r := range rs {
			got = append(got, r.key)
		}
		if strings.Join(got, " ") != tt.want {
			t.Errorf("%s: %v, want %s", tt.name, got, tt.want)
		}
	}
}

func TestFilterRows(t *testing.T) {
	rows := []row{{key: "hello", cells: []string{"hello", "128 MB"}}, {key: "thumb", cells: []string{"thumbnail", "1024 MB"}}}
	tests := []struct {
		f    string
		want []string
	}{
		{"", []string{"hello", "thumb"}},
		{"HEL", []string{"hello"}},
		{"1024", []string{"thumb"}},
		{" mb ", []string{"hello", "thumb"}},
		{"zzz", nil},
	}
	for _, tt := range tests {
		var got []string
		for _, r := range filterRows(rows, tt.f) {
			got = append(got, r.key)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("filter %q: %v, want %v", tt.f, got, tt.want)
		}
	}
}

func TestCostMath(t *testing.T) {
	p := api.DefaultPrices()
	f := api.FunctionStatus{
		Function: api.Function{FunctionSpec: api.FunctionSpec{Name: "f", MemoryMB: 1024}},
		Stats:    api.FunctionStats{Invocations: 2_000_000, GBSeconds: 100_000, IdleInstanceSeconds: 3600},
	}
	tests := []struct {
		name                    string
		minWarm                 int
		req, compute, warm, tot float64
	}{
		// 2M requests × $0.20/M = $0.40; 100,000 GB-s × $0.0000166667 = $1.66667.
		{"no warm pool: idle time is not billed", 0, 0.40, 1.66667, 0, 2.06667},
		// 3600 s × 1 GB × $0.0000041667 = $0.0150.
		{"warm pool: idle time is warmth", 2, 0.40, 1.66667, 0.0150001, 2.0816701},
	}
	for _, tt := range tests {
		f.Pool.MinWarm, f.Pool.EffectiveMinWarm = tt.minWarm, tt.minWarm
		u := usageEstimate(f, p)
		for _, c := range []struct {
			name      string
			got, want float64
		}{{"requests", u.RequestCost, tt.req}, {"compute", u.ComputeCost, tt.compute}, {"warmth", u.WarmthCost, tt.warm}, {"total", u.Cost, tt.tot}} {
			if math.Abs(c.got-c.want) > 1e-6 {
				t.Errorf("%s: %s cost %.7f, want %.7f", tt.name, c.name, c.got, c.want)
			}
		}
	}
	// Two warm 1 GB instances for an hour: 7200 GB-s × warmth price.
	f.Pool.EffectiveMinWarm = 2
	if got, want := poolCostPerHour(f, p), 7200*p.WarmthPerGBSecond; math.Abs(got-want) > 1e-12 {
		t.Errorf("poolCostPerHour = %v, want %v", got, want)
	}
	if got := recCostPerHour(api.PoolRecommendation{WarmthGBsPerHour: 1000}, p); math.Abs(got-1000*p.WarmthPerGBSecond) > 1e-12 {
		t.Errorf("recCostPerHour = %v", got)
	}
	per, tot := estimateTotals(testState(), p)
	var sum float64
	for _, u := range per {
		sum += u.Cost
	}
	if len(per) != 3 || math.Abs(sum-tot.Cost) > 1e-9 {
		t.Errorf("totals %v do not add up to %v", tot.Cost, sum)
	}
}

func TestFunctionRows(t *testing.T) {
	h := newHistory()
	for i := range steps {
		st := testStateAt(i)
		h.add(st, st.Time)
	}
	rows := functionRows(rowCtx{st: testState(), hist: h, prices: api.DefaultPrices()})
	got := map[string][]string{}
	for _, r := range rows {
		got[r.key] = r.cells
	}
	hello := got["hello"]
	want := map[int]string{fnColVer: "12", fnColMem: "128 MB", fnColWarm: "2/10", fnColIdle: "2", fnColBusy: "1", fnColInit: "0", fnColRate: "10.0/s", fnColCold: "0.1%"}
	for c, w := range want {
		if hello[c] != w {
			t.Errorf("hello %s = %q, want %q", functionColumns[c].title, hello[c], w)
		}
	}
	if th := got["thumbnail"]; th[fnColWarm] != "A 1/-" || th[fnColInit] != "1" || th[fnColRate] != "250/s" {
		t.Errorf("thumbnail %q", th)
	}
	if n := got["nightly-report"]; n[fnColRate] != "0/s" || n[fnColP50] != "-" || n[fnColCold] != "-" || n[fnColCost] != "$0" {
		t.Errorf("nightly-report %q", n)
	}
	if keys := []string{rows[0].key, rows[1].key, rows[2].key}; !reflect.DeepEqual(keys, []string{"hello", "nightly-report", "thumbnail"}) {
		t.Errorf("order %v", keys)
	}
}

func TestPoolRows(t *testing.T) {
	rows := poolRows(testState())
	got := map[string][]string{}
	for _, r := range rows {
		got[r.key] = r.cells
	}
	if want := []string{"hello", "2/10", "2+1", "2+0/1", "0+1/1"}; !reflect.DeepEqual(got["hello"], want) {
		t.Errorf("hello %q, want %q", got["hello"], want)
	}
	if want := []string{"thumbnail", "A 1/-", "0+2", "0+1/-", "0+1/1"}; !reflect.DeepEqual(got["thumbnail"], want) {
		t.Errorf("thumbnail %q, want %q", got["thumbnail"], want)
	}
	if want := []string{"nightly-report", "0/-", "0+0", "·", "·"}; !reflect.DeepEqual(got["nightly-report"], want) {
		t.Errorf("nightly-report %q, want %q", got["nightly-report"], want)
	}
}

func TestSparkline(t *testing.T) {
	tests := []struct {
		vs     []float64
		lo, hi float64
		w      int
		want   string
	}{
		{nil, 0, 100, 4, "    "},
		{[]float64{0, 50, 100}, 0, 100, 3, "▁▅█"},
		{[]float64{0, 50, 100}, 0, 100, 5, "  ▁▅█"},
		{[]float64{1, 2, 3, 4}, 0, 100, 2, "▁▁"},
		{[]float64{1, math.NaN(), 2}, 0, 0, 3, "▅ █"},
		{[]float64{5, 5}, 0, 0, 2, "██"},
		{[]float64{-5, 500}, 0, 100, 2, "▁█"},
		{[]float64{1}, 0, 1, 0, ""},
	}
	for _, tt := range tests {
		if got := sparkline(tt.vs, tt.lo, tt.hi, tt.w); got != tt.want {
			t.Errorf("sparkline(%v, %v, %v, %d) = %q, want %q", tt.vs, tt.lo, tt.hi, tt.w, got, tt.want)
		}
	}
}

func TestFormatUnits(t *testing.T) {
	tests := []struct{ got, want string }{
		{formatMs(0.423), "0.42 ms"},
		{formatMs(42.04), "42.0 ms"},
		{formatMs(420.4), "420 ms"},
		{formatMs(4200), "4.20 s"},
		{formatMs(math.NaN()), "-"},
		{formatUSD(0), "$0"},
		{formatUSD(0.00001), "<$0.0001"},
		{formatUSD(0.01234), "$0.0123"},
		{formatUSD(12.345), "$12.35"},
		{formatUSD(12345), "$12345"},
		{formatGBs(0), "0 GB-s"},
		{formatGBs(1.5), "1.500 GB-s"},
		{formatGBs(123.45), "123.5 GB-s"},
		{formatGBs(123456), "123456 GB-s"},
		{formatRate(0, true), "0/s"},
		{formatRate(3.333, true), "3.33/s"},
		{formatRate(250, true), "250/s"},
		{formatRate(25.04, true), "25.0/s"},
		{formatRate(2500, true), "2500/s"},
		{formatRate(1, false), "-"},
		{formatWarm(api.PoolStatus{EffectiveMinWarm: 2, PoolSettings: api.PoolSettings{MaxInstances: 10}}), "2/10"},
		{formatWarm(api.PoolStatus{EffectiveMinWarm: 3, PoolSettings: api.PoolSettings{Auto: true}}), "A 3/-"},
	}
	for i, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%d: got %q, want %q", i, tt.got, tt.want)
		}
	}
}

func TestCompletions(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"p", []string{"pools"}},
		{"f", []string{"fn"}},
		{"l", []string{"lat", "events"}},
		{"", []string{"fn", "agents", "pools", "lat", "bill", "events", "help", "quit"}},
		{"x", nil},
	}
	for _, tt := range tests {
		if got := completions(tt.in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("completions(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
	if got := commonPrefix([]string{"lat", "latency"}); got != "lat" {
		t.Errorf("commonPrefix = %q", got)
	}
}
