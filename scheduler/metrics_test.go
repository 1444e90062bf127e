package scheduler

import (
	"bufio"
	"bytes"
	"io"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// parsedMetrics is a scrape: sample values by `name{labels}` exactly as
// written, and each family's TYPE.
type parsedMetrics struct {
	values map[string]float64
	types  map[string]string
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? (\S+)$`)

// parseMetrics checks the text format line by line: every sample belongs
// to the family whose HELP and TYPE came just before it, no family
// appears twice, no sample twice.
func parseMetrics(t *testing.T, body string) parsedMetrics {
	t.Helper()
	pm := parsedMetrics{values: map[string]float64{}, types: map[string]string{}}
	current := ""
	sc := bufio.NewScanner(strings.NewReader(body))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "# HELP "):
			f := strings.SplitN(line, " ", 4)
			if len(f) < 4 || f[3] == "" {
				t.Fatalf("line %d: HELP without text: %q", n, line)
			}
			if _, dup := pm.types[f[2]]; dup {
				t.Fatalf("line %d: family %s twice", n, f[2])
			}
			current = f[2]
		case strings.HasPrefix(line, "# TYPE "):
			f := strings.Fields(line)
			if len(f) != 4 || f[2] != current || (f[3] != "counter" && f[3] != "gauge") {
				t.Fatalf("line %d: bad TYPE %q after HELP of %s", n, line, current)
			}
			if f[3] == "counter" && !strings.HasSuffix(f[2], "_total") {
				t.Errorf("line %d: counter %s without _total", n, f[2])
			}
			pm.types[f[2]] = f[3]
		default:
			m := sampleLine.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("line %d: not a sample: %q", n, line)
			}
			if m[1] != current || pm.types[current] == "" {
				t.Fatalf("line %d: sample of %s inside family %s", n, m[1], current)
			}
			v, err := strconv.ParseFloat(m[3], 64)
			if err != nil {
				t.Fatalf("line %d: value %q: %v", n, m[3], err)
			}
			key := m[1] + m[2]
			if _, dup := pm.values[key]; dup {
				t.Fatalf("line %d: sample %s twice", n, key)
			}
			pm.values[key] = v
		}
	}
	if !strings.HasSuffix(body, "\n") {
		t.Error("exposition does not end with a newline")
	}
	return pm
}

func TestMetrics(t *testing.T) {
	ts := newTestScheduler(t, WithToken("tok"))
	ag := newFakeAgent(t, "n1")
	ts.heartbeat(t, agentHB("n1", ag.srv.URL, 4096))
	ts.heartbeat(t, agentHB("n2", "http://127.0.0.1:1", 2048))
	ts.deploy(t, "hello", 512)
	ts.deploy(t, "idle", 128)
	ts.putPool(t, "hello", api.PoolChange{MinWarm: intp(2), MaxInstances: intp(5)})

	kinds := []api.StartKind{api.StartCold, api.StartWarm, api.StartWarm, api.StartWarm}
	var mu sync.Mutex
	i := 0
	ag.setReply(func(w http.ResponseWriter, r *http.Request, payload []byte) {
		mu.Lock()
		k := kinds[i%len(kinds)]
		i++
		n := i
		mu.Unlock()
		if n == 4 {
			w.Header().Set(api.HeaderFunctionError, "Unhandled")
		}
		writeResult(w, r, "n1", k, payload)
	})
	for range kinds {
		ts.do(t, "POST", "/v1/functions/hello/invoke", strings.NewReader(`{}`))
	}
	// One throttle and 1.5 s of queue wait, straight into the counters.
	ts.recordQueue("hello", 1500*time.Millisecond, true)
	// Idle warmth: 2 idle instances of hello for 3 s; n2 goes suspect.
	idle := func(id string) api.Instance {
		return api.Instance{ID: id, Function: "hello", Version: 1, State: api.StateIdle, MemoryMB: 512}
	}
	ts.heartbeat(t, agentHB("n1", ag.srv.URL, 4096, idle("i1"), idle("i2")))
	ts.clock.Advance(3 * time.Second)
	ts.heartbeat(t, agentHB("n1", ag.srv.URL, 4096, idle("i1"), idle("i2")))
	ts.clock.Advance(3 * time.Second) // n2: 6 s without a heartbeat
	ts.heartbeat(t, agentHB("n1", ag.srv.URL, 4096, idle("i1"), idle("i2")))

	// Behind the token.
	req, _ := http.NewRequest("GET", ts.srv.URL+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/metrics without a token: %d", resp.StatusCode)
	}

	resp = ts.do(t, "GET", "/metrics", nil)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("/metrics: %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	t.Logf("scrape:\n%s", body)
	pm := parseMetrics(t, string(body))
	want := map[string]float64{
		`amber_invocations_total{function="hello"}`:           4,
		`amber_errors_total{function="hello"}`:                1,
		`amber_cold_starts_total{function="hello"}`:           1,
		`amber_warm_starts_total{function="hello"}`:           3,
		`amber_throttles_total{function="hello"}`:             1,
		`amber_warm_hit_ratio{function="hello"}`:              0.75,
		`amber_cold_starts_per_minute{function="hello"}`:      0.2,
		`amber_queue_wait_seconds_total{function="hello"}`:    1.5,
		`amber_idle_instance_seconds_total{function="hello"}`: 12, // 2 instances × (3 s + 3 s)
		`amber_billed_gb_seconds_total{function="hello"}`:     4 * 0.5,
		`amber_pool_min_warm{function="hello"}`:               2,
		`amber_pool_max_instances{function="hello"}`:          5,
		`amber_invocations_total{function="idle"}`:            0,
		`amber_warm_hit_ratio{function="idle"}`:               0,
		`amber_pool_min_warm{function="idle"}`:                0,
		`amber_pool_max_instances{function="idle"}`:           0,
		`amber_agent_ready{agent="n1"}`:                       1,
		`amber_agent_ready{agent="n2"}`:                       0,
		`amber_agent_instances{agent="n1"}`:                   2,
		`amber_agent_instances{agent="n2"}`:                   0,
		`amber_agent_reserved_mb{agent="n1"}`:                 0,
	}
	for k, v := range want {
		got, ok := pm.values[k]
		if !ok {
			t.Errorf("missing %s", k)
		} else if got != v {
			t.Errorf("%s = %v, want %v", k, got, v)
		}
	}
	for _, name := range []string{"amber_invocations_total", "amber_errors_total", "amber_cold_starts_total", "amber_warm_starts_total",
		"amber_throttles_total", "amber_queue_wait_seconds_total", "amber_idle_instance_seconds_total", "amber_billed_gb_seconds_total"} {
		if pm.types[name] != "counter" {
			t.Errorf("%s: type %q, want counter", name, pm.types[name])
		}
	}
	for _, name := range []string{"amber_warm_hit_ratio", "amber_cold_starts_per_minute", "amber_pool_min_warm", "amber_pool_max_instances",
		"amber_agent_ready", "amber_agent_instances", "amber_agent_reserved_mb"} {
		if pm.types[name] != "gauge" {
			t.Errorf("%s: type %q, want gauge", name, pm.types[name])
		}
	}
	// 12 families × 2 functions + 3 × 2 agents (the engine's
	// amber_jetstream_* figures are TestJetStreamMetrics's).
	n := 0
	for k := range pm.values {
		if !strings.HasPrefix(k, "amber_jetstream_") {
			n++
		}
	}
	if n != 12*2+3*2 {
		t.Errorf("%d samples, want 30", n)
	}
	// A deleted function leaves the scrape.
	ts.do(t, "DELETE", "/v1/functions/idle", nil)
	pm = parseMetrics(t, string(readAll(t, ts.do(t, "GET", "/metrics", nil))))
	if _, ok := pm.values[`amber_invocations_total{function="idle"}`]; ok {
		t.Error("a deleted function is still scraped")
	}
}

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d %v: %s", resp.StatusCode, err, b)
	}
	return b
}

func TestWriteMetricsEscapes(t *testing.T) {
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	writeMetrics(bw, []*metricFamily{
		{name: "x_total", typ: "counter", help: "a \\ help\nline", samples: []metricSample{
			{labels: [][2]string{{"function", `we"ird\name` + "\n"}}, value: 1},
			{labels: [][2]string{{"agent", "a"}, {"function", "f"}}, value: 0.25},
		}},
		{name: "empty", typ: "gauge", help: "no samples"},
		{name: "y", typ: "gauge", help: "odd values", samples: []metricSample{{value: 1e21}, {value: -3}}},
	})
	bw.Flush()
	want := `# HELP x_total a \\ help\nline
# TYPE x_total counter
x_total{function="we\"ird\\name\n"} 1
x_total{agent="a",function="f"} 0.25
# HELP empty no samples
# TYPE empty gauge
# HELP y odd values
# TYPE y gauge
y 1e+21
y -3
`
	if buf.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", buf.String(), want)
	}
	for v, want := range map[float64]string{0: "0", 1.5: "1.5", 100: "100"} {
		if got := formatMetric(v); got != want {
			t.Errorf("formatMetric(%v) = %q, want %q", v, got, want)
		}
	}
	if formatMetric(math.Inf(1)) != "+Inf" || formatMetric(math.Inf(-1)) != "-Inf" || formatMetric(math.NaN()) != "NaN" {
		t.Error("special values")
	}
}
