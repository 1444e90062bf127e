package scheduler

import (
	"bufio"
	"context"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/amberfn/amber/api"
)

// GET /metrics serves the Prometheus text exposition format (version
// 0.0.4), written by hand: per function its counters, warm-pool figures
// and settings; per agent its health, instances and reserved memory. It
// sits behind the same bearer token as /v1.

// metricsContentType is the text format's media type.
const metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// metricFamily is one metric name with its samples.
type metricFamily struct {
	name, help, typ string
	samples         []metricSample
}

type metricSample struct {
	labels [][2]string
	value  float64
}

func (s *Scheduler) handleMetrics(w http.ResponseWriter, r *http.Request) {
	fams, err := s.metrics()
	if err != nil {
		api.WriteError(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	fams = append(fams, s.jetstreamMetrics(ctx)...) // cluster.go
	cancel()
	w.Header().Set("Content-Type", metricsContentType)
	bw := bufio.NewWriter(w)
	writeMetrics(bw, fams)
	bw.Flush()
}

// metrics gathers every family, functions by name then agents by name.
func (s *Scheduler) metrics() ([]*metricFamily, error) {
	fns, err := s.reg.list()
	if err != nil {
		return nil, err
	}
	pools, err := s.reg.pools()
	if err != nil {
		return nil, err
	}
	fam := func(name, typ, help string) *metricFamily {
		return &metricFamily{name: name, typ: typ, help: help}
	}
	var (
		invocations = fam("amber_invocations_total", "counter", "Invocations answered, by function.")
		errs        = fam("amber_errors_total", "counter", "Invocations that failed (function errors and platform failures).")
		colds       = fam("amber_cold_starts_total", "counter", "Invocations that started a new instance.")
		warms       = fam("amber_warm_starts_total", "counter", "Invocations served by an idle warm instance.")
		throttles   = fam("amber_throttles_total", "counter", "Invocations refused with 429 at max_instances.")
		hitRatio    = fam("amber_warm_hit_ratio", "gauge", "Share of invocations that found a warm instance.")
		coldRate    = fam("amber_cold_starts_per_minute", "gauge", "Cold starts per minute over the last five minutes.")
		queueWait   = fam("amber_queue_wait_seconds_total", "counter", "Time invocations waited for a slot under max_instances.")
		idle        = fam("amber_idle_instance_seconds_total", "counter", "Instance time spent idle (warmth), from heartbeats.")
		billed      = fam("amber_billed_gb_seconds_total", "counter", "Billed duration times memory, in GB-seconds.")
		minWarm     = fam("amber_pool_min_warm", "gauge", "Instances kept warm: min_warm, or auto mode's recommendation.")
		maxInst     = fam("amber_pool_max_instances", "gauge", "Cap on concurrent instances (0: no cap).")
		agentReady  = fam("amber_agent_ready", "gauge", "1 when the agent is ready for placement, else 0.")
		agentInst   = fam("amber_agent_instances", "gauge", "Instances the agent reported in its last heartbeat.")
		agentMem    = fam("amber_agent_reserved_mb", "gauge", "Memory held by invocations in flight on the agent, in MB.")
	)
	for _, fn := range fns {
		l := [][2]string{{"function", fn.Name}}
		add := func(f *metricFamily, v float64) { f.samples = append(f.samples, metricSample{l, v}) }
		st := s.statsFor(fn.Name)
		add(invocations, float64(st.Invocations))
		add(errs, float64(st.Errors))
		add(colds, float64(st.ColdStarts))
		add(warms, float64(st.WarmStarts))
		add(throttles, float64(st.Throttles))
		add(hitRatio, st.WarmHitRatio)
		add(coldRate, st.ColdStartsPerMinute)
		add(queueWait, float64(st.QueueWaitMs)/1000)
		add(idle, st.IdleInstanceSeconds)
		add(billed, st.GBSeconds)
		p, ok := pools[fn.Name]
		if !ok {
			p = api.DefaultPool()
		}
		add(minWarm, float64(s.effectiveMinWarm(fn.Name, p)))
		add(maxInst, float64(p.MaxInstances))
	}
	for _, a := range s.agentStatuses() {
		l := [][2]string{{"agent", a.Name}}
		ready := 0.0
		if a.State == api.AgentReady {
			ready = 1
		}
		agentReady.samples = append(agentReady.samples, metricSample{l, ready})
		agentInst.samples = append(agentInst.samples, metricSample{l, float64(len(a.Instances))})
		agentMem.samples = append(agentMem.samples, metricSample{l, float64(a.ReservedMB)})
	}
	return []*metricFamily{invocations, errs, colds, warms, throttles, hitRatio, coldRate, queueWait, idle, billed,
		minWarm, maxInst, agentReady, agentInst, agentMem}, nil
}

// writeMetrics writes families in the text format: HELP and TYPE lines,
// then one line per sample. A family with no samples still has its HELP
// and TYPE, so scrapers learn every name.
func writeMetrics(w *bufio.Writer, fams []*metricFamily) {
	for _, f := range fams {
		w.WriteString("# HELP " + f.name + " " + escapeHelp(f.help) + "\n")
		w.WriteString("# TYPE " + f.name + " " + f.typ + "\n")
		for _, smp := range f.samples {
			w.WriteString(f.name)
			if len(smp.labels) > 0 {
				w.WriteByte('{')
				for i, lv := range smp.labels {
					if i > 0 {
						w.WriteByte(',')
					}
					w.WriteString(lv[0] + `="` + escapeLabel(lv[1]) + `"`)
				}
				w.WriteByte('}')
			}
			w.WriteByte(' ')
			w.WriteString(formatMetric(smp.value))
			w.WriteByte('\n')
		}
	}
}

// escapeLabel escapes a label value: backslash, double quote and newline.
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

// escapeHelp escapes HELP text: backslash and newline.
func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

// formatMetric writes a sample value as the format wants it.
func formatMetric(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
