package scheduler

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/scheduler/internal/placement"
)

// fnStats are the running counters of one function (guarded by Scheduler.mu).
type fnStats struct{ api.FunctionStats }

// record counts one invocation's outcome. kind is the agent's start kind
// ("" when the agent never answered); failed is set for function errors and
// platform failures alike (Lambda's Errors metric counts both).
func (s *Scheduler) record(name string, kind api.StartKind, failed bool, billed *api.InvokeResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.statsLocked(name)
	if s.minutes != nil {
		s.minutes.count(name, kind, failed)
	}
	st.Invocations++
	if failed {
		st.Errors++
	}
	switch kind {
	case api.StartCold, api.StartRestore: // both start an instance; the ledger counts them alike
		st.ColdStarts++
	case api.StartWarm:
		st.WarmStarts++
	}
	if kind != "" {
		st.LastStartKind = kind
	}
	if billed != nil {
		st.BilledMs += billed.BilledMs
		st.GBSeconds += billed.GBSeconds()
	}
	st.LastInvokedAt = s.now().UTC()
}

func (s *Scheduler) statsFor(name string) api.FunctionStats {
	s.mu.Lock()
	var out api.FunctionStats
	if st, ok := s.stats[name]; ok {
		out = st.FunctionStats
	}
	s.mu.Unlock()
	if out.Invocations > 0 {
		out.WarmHitRatio = float64(out.WarmStarts) / float64(out.Invocations)
	}
	cold := 0
	for _, a := range s.arrivals.recent(name, s.now().Add(-5*time.Minute)) {
		if a.Cold {
			cold++
		}
	}
	out.ColdStartsPerMinute = float64(cold) / 5
	return out
}

// statsLocked returns a function's counters, creating them.
func (s *Scheduler) statsLocked(name string) *fnStats {
	st, ok := s.stats[name]
	if !ok {
		st = &fnStats{}
		s.stats[name] = st
	}
	return st
}

// recordQueue counts the wait for a slot under max_instances, and throttles.
func (s *Scheduler) recordQueue(name string, waited time.Duration, throttled bool) {
	if waited == 0 && !throttled {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.statsLocked(name)
	st.QueueWaitMs += waited.Milliseconds()
	if throttled {
		st.Throttles++
		if s.minutes != nil {
			s.minutes.throttle(name)
		}
	}
}

// recordIdleLocked adds warmth: the idle instances an agent reported, for
// the time since its previous heartbeat; bill puts it in the ledger too.
func (s *Scheduler) recordIdleLocked(instances []api.Instance, since time.Duration, bill bool) {
	if since <= 0 || since > time.Minute {
		return
	}
	for _, in := range instances {
		if in.State == api.StateIdle {
			s.statsLocked(in.Function).IdleInstanceSeconds += since.Seconds()
			if bill && s.ledger != nil {
				s.ledger.addIdle(in.Function, in.MemoryMB, since)
			}
		}
	}
}

func (s *Scheduler) dropStats(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.stats, name)
}

// newRequestID returns a random UUID (version 4), the shape Lambda uses.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// hopHeaders are not copied from an agent's response.
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Transfer-Encoding": true,
	"Te": true, "Trailer": true, "Upgrade": true, "Content-Length": true,
}

// gatewayError is a platform failure of one invocation: it names the agent
// and the request id, and maps to the status of its sentinel.
type gatewayError struct {
	agent, requestID, msg string
	sentinel              error
}

func (e *gatewayError) Error() string {
	return fmt.Sprintf("agent %s, request %s: %s", e.agent, e.requestID, e.msg)
}
func (e *gatewayError) Unwrap() error { return e.sentinel }

// netCause strips the *url.Error wrapper ("Post URL: ...") off a transport error.
func netCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// safeToRetry reports whether a forward failed before any byte of the
// request could reach the agent (the dial failed), so another agent may be
// tried without risking running the function twice.
func safeToRetry(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

// handleInvoke places a synchronous invocation on an agent and streams the
// agent's answer back.
func (s *Scheduler) handleInvoke(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name") // valid: validNames checked it
	payload, err := api.ReadPayload(r)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	var fn *api.Function
	if v := r.Header.Get(api.HeaderVersion); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			api.WriteError(w, api.Invalid("version", "header %s must be a positive integer, got %q", api.HeaderVersion, v))
			return
		}
		fn, err = s.reg.version(name, n)
		if err != nil {
			api.WriteError(w, err)
			return
		}
	} else if fn, err = s.reg.latest(name); err != nil {
		api.WriteError(w, err)
		return
	}
	// Lambda takes JSON events only: refuse anything else before it reaches a runtime.
	if len(bytes.TrimSpace(payload)) > 0 && !json.Valid(payload) {
		api.WriteError(w, api.Invalid("payload", "the request body is not valid JSON (%d bytes)", len(payload)))
		return
	}
	switch it := r.Header.Get(api.HeaderInvocationType); it {
	case "", "RequestResponse":
	case "Event":
		s.handleEnqueue(w, fn, payload)
		return
	case "DryRun":
		w.WriteHeader(http.StatusNoContent)
		return
	default:
		api.WriteError(w, api.Invalid("invocation_type", "header %s: %q; want RequestResponse, Event or DryRun", api.HeaderInvocationType, it))
		return
	}
	ctx := r.Context()
	if r.Header.Get(api.HeaderLogType) == api.LogTypeTail {
		ctx = withLogTail(ctx)
	}
	s.invoke(w, ctx, fn, s.newRequestID(), payload)
}

// invoke admits, places and forwards one invocation of fn, writing the
// outcome to w: the caller's HTTP reply, or a recorder when an async
// event is delivered.
func (s *Scheduler) invoke(w http.ResponseWriter, ctx context.Context, fn *api.Function, reqID string, payload []byte) {
	name := fn.Name
	log := s.log.With("function", name, "version", fn.Version, "request_id", reqID)

	pool, err := s.reg.pool(name)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	done, waited, err := s.limits.admit(ctx, name, pool.MaxInstances)
	// A caller that gave up while queued is not a throttle (no 429).
	s.recordQueue(name, waited, errors.Is(err, api.ErrThrottled))
	if err != nil {
		log.Info("throttled", "max_instances", pool.MaxInstances, "waited", waited)
		s.event(api.EventThrottled, name, "", "%v", err)
		w.Header().Set(api.HeaderRequestID, reqID)
		api.WriteError(w, err)
		return
	}
	defer done()
	arrived := s.now()
	concurrent := s.limits.current(name)
	defer func() {
		kind := api.StartKind(w.Header().Get(api.HeaderStartKind))
		s.latency.observe(name, kind, s.now().Sub(arrived))
		s.arrivals.add(name, placement.Arrival{At: arrived, Concurrent: concurrent, Cold: kind == api.StartCold || kind == api.StartRestore})
	}()

	exclude := map[string]bool{}
	var refused []string
	var lastErr error
	for {
		res, agentURL, p, err := s.reserve(fn, pool, exclude)
		if err != nil && len(refused) == 0 && time.Since(s.started) < s.startGrace {
			// Just started: the agents have not all sent a heartbeat yet.
			select {
			case <-time.After(50 * time.Millisecond):
				continue
			case <-ctx.Done():
			}
		}
		if err != nil {
			log.Warn("no placement", "err", err.Error(), "refused", refused)
			w.Header().Set(api.HeaderRequestID, reqID)
			if len(refused) > 0 {
				// Every agent tried refused the connection: report those.
				s.record(fn.Name, "", true, nil)
				w.Header().Set(api.HeaderAgent, refused[len(refused)-1])
				writeError(w, &gatewayError{agent: strings.Join(refused, ", "), requestID: reqID, sentinel: errBadGateway,
					msg: fmt.Sprintf("unreachable (%v), and no other agent can take it", netCause(lastErr))})
				return
			}
			writeError(w, err)
			return
		}
		log := log.With("agent", p.Agent, "reason", p.Reason)
		dialErr := s.forward(w, ctx, fn, reqID, payload, agentURL, p.Agent, log)
		s.release(res)
		if dialErr == nil {
			return
		}
		exclude[p.Agent] = true
		refused = append(refused, p.Agent)
		lastErr = dialErr
	}
}

// forward sends one invocation to an agent and writes the outcome to w. It
// returns the dial error, having written nothing, when the agent could not
// be reached at all and another agent may be tried.
func (s *Scheduler) forward(w http.ResponseWriter, ctx context.Context, fn *api.Function, reqID string, payload []byte, agentURL, agent string, log *slog.Logger) (dialErr error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(fn.Timeout)+forwardSlack)
	defer cancel()
	fail := func(sentinel error, format string, args ...any) {
		s.record(fn.Name, "", true, nil)
		s.ledgerInvocation(ctx, fn, reqID, agent, nil, true)
		w.Header().Set(api.HeaderRequestID, reqID)
		w.Header().Set(api.HeaderAgent, agent)
		writeError(w, &gatewayError{agent: agent, requestID: reqID, msg: fmt.Sprintf(format, args...), sentinel: sentinel})
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		agentURL+"/v1/functions/"+url.PathEscape(fn.Name)+"/invoke", bytes.NewReader(payload))
	if err != nil {
		fail(api.ErrUnavailable, "bad agent URL %q: %v", agentURL, err)
		return nil
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(api.HeaderVersion, strconv.Itoa(fn.Version))
	req.Header.Set(api.HeaderRequestID, reqID)
	if wantsLogTail(ctx) {
		req.Header.Set(api.HeaderLogType, api.LogTypeTail)
	}
	if tok := s.agentToken(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	start := time.Now()
	resp, err := s.hc.Do(req)
	if err != nil {
		if safeToRetry(err) {
			log.Warn("agent unreachable; trying another", "err", netCause(err).Error())
			s.markUnreachable(agent)
			return err
		}
		if ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
			log.Warn("agent did not answer in time", "err", err.Error())
			fail(api.ErrTimeout, "no answer within %s", time.Duration(fn.Timeout)+forwardSlack)
			return nil
		}
		log.Warn("forward failed", "err", err.Error())
		fail(errBadGateway, "request failed: %v", netCause(err))
		return nil
	}
	defer resp.Body.Close()

	if resp.StatusCode >= 500 {
		msg := agentMessage(resp)
		log.Warn("agent failed", "status", resp.StatusCode, "err", msg)
		var sentinel error = errBadGateway
		switch resp.StatusCode {
		case http.StatusServiceUnavailable:
			sentinel = api.ErrUnavailable
		case http.StatusGatewayTimeout:
			sentinel = api.ErrTimeout
		}
		fail(sentinel, "agent replied %d: %s", resp.StatusCode, msg)
		return nil
	}

	kind := api.StartKind(resp.Header.Get(api.HeaderStartKind))
	funcErr := resp.Header.Get(api.HeaderFunctionError) != ""
	billed, failed := api.ReadInvokeHeaders(resp.Header, nil), funcErr || resp.StatusCode != http.StatusOK
	s.record(fn.Name, kind, failed, billed)
	// The ledger record is on disk before the caller sees any of the answer.
	s.ledgerInvocation(ctx, fn, reqID, agent, billed, failed)
	for k, vs := range resp.Header {
		if hopHeaders[k] {
			continue
		}
		w.Header()[k] = vs
	}
	if w.Header().Get(api.HeaderRequestID) == "" {
		w.Header().Set(api.HeaderRequestID, reqID)
	}
	if w.Header().Get(api.HeaderAgent) == "" {
		w.Header().Set(api.HeaderAgent, agent)
	}
	w.WriteHeader(resp.StatusCode)
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		log.Warn("relay response", "err", err.Error(), "bytes", n)
	}
	log.Debug("invoked", "status", resp.StatusCode, "start_kind", string(kind),
		"function_error", funcErr, "elapsed", time.Since(start))
	return nil
}

// errBadGateway marks an agent failure reported to the caller as 502. It
// wraps api.ErrUnavailable so clients map it back to that sentinel.
var errBadGateway = &badGateway{}

type badGateway struct{}

func (*badGateway) Error() string { return "bad gateway" }
func (*badGateway) Unwrap() error { return api.ErrUnavailable }

// agentMessage reads the message of an agent's error reply.
func agentMessage(resp *http.Response) string {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var eb api.ErrorBody
	if json.Unmarshal(b, &eb) == nil && eb.Error.Message != "" {
		return eb.Error.Message
	}
	if s := strings.TrimSpace(string(b)); s != "" {
		return s
	}
	return http.StatusText(resp.StatusCode)
}
