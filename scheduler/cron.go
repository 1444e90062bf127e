package scheduler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/amberfn/amber/api"
)

// A cron trigger lives in its function's head key (registry.go), with its
// fire state (NextAt, LastFiredAt, Fired).
//
// A loop (every second, on the scheduler's clock) fires each due schedule
// as an async event whose payload is an EventBridge "Scheduled Event"; the
// event is published to the async queue with a message id naming the tick,
// then the schedule's next time is stored, so a fire is neither lost by a
// crash nor doubled by a crash or by several schedulers (see fireDue).
// Times are UTC. When the
// scheduler was down over several fire times, the schedule fires once on
// start (for the latest missed time) and then carries on.

// cronLoop is the schedule loop's stop handshake.
type cronLoop struct{ stop, done chan struct{} }

// cronSchedule is a parsed expression: a 5-field cron or a rate().
type cronSchedule struct {
	minute, hour, dom, month, dow uint64 // bit i set: value i matches
	domStar, dowStar              bool   // the field started with '*'
	every                         time.Duration
}

type cronField struct {
	name     string
	min, max int
	names    []string // names[i] is value min+i
}

var cronFields = []cronField{
	{name: "minute", min: 0, max: 59},
	{name: "hour", min: 0, max: 23},
	{name: "day-of-month", min: 1, max: 31},
	{name: "month", min: 1, max: 12, names: []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}},
	{name: "day-of-week", min: 0, max: 7, names: []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}},
}

var cronMacros = map[string]string{
	"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
	"@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}

// maxScheduleExpr bounds an expression's length.
const maxScheduleExpr = 256

// parseSchedule parses a standard 5-field cron expression (minute hour
// day-of-month month day-of-week; *, lists, ranges, steps, month and day
// names, 7 as Sunday, @hourly-style macros) or a Lambda-style rate
// ("rate(1 minute)", "rate(5 minutes)", "rate(2 hours)", "rate(1 day)").
// Errors name the bad field.
func parseSchedule(expr string) (*cronSchedule, error) {
	e := strings.TrimSpace(expr)
	if e == "" {
		return nil, fmt.Errorf("empty expression; want 5 cron fields (minute hour day-of-month month day-of-week) or rate(N minutes|hours|days)")
	}
	if len(e) > maxScheduleExpr {
		return nil, fmt.Errorf("expression is over %d characters", maxScheduleExpr)
	}
	if strings.HasPrefix(strings.ToLower(e), "rate(") {
		return parseRate(e)
	}
	if m, ok := cronMacros[strings.ToLower(e)]; ok {
		e = m
	} else if strings.HasPrefix(e, "@") {
		return nil, fmt.Errorf("unknown macro %q; want @yearly, @monthly, @weekly, @daily or @hourly", e)
	}
	parts := strings.Fields(e)
	if len(parts) != 5 {
		return nil, fmt.Errorf("%d fields in %q; want 5: minute hour day-of-month month day-of-week", len(parts), e)
	}
	c := &cronSchedule{}
	dst := []*uint64{&c.minute, &c.hour, &c.dom, &c.month, &c.dow}
	for i, f := range cronFields {
		bits, err := f.parse(parts[i])
		if err != nil {
			return nil, fmt.Errorf("%s field %q: %v", f.name, parts[i], err)
		}
		*dst[i] = bits
	}
	if c.dow&(1<<7) != 0 { // 7 is Sunday too
		c.dow |= 1
		c.dow &^= 1 << 7
	}
	c.domStar = strings.HasPrefix(parts[2], "*")
	c.dowStar = strings.HasPrefix(parts[4], "*")
	return c, nil
}

func parseRate(e string) (*cronSchedule, error) {
	if !strings.HasSuffix(e, ")") {
		return nil, fmt.Errorf("rate expression %q: missing ')'", e)
	}
	inner := strings.Fields(e[len("rate(") : len(e)-1])
	if len(inner) != 2 {
		return nil, fmt.Errorf("rate expression %q: want rate(N unit), e.g. rate(5 minutes)", e)
	}
	n, err := strconv.Atoi(inner[0])
	if err != nil || n < 1 || n > 1_000_000 {
		return nil, fmt.Errorf("rate expression %q: value %q: want a whole number from 1", e, inner[0])
	}
	var unit time.Duration
	switch strings.ToLower(inner[1]) {
	case "minute", "minutes":
		unit = time.Minute
	case "hour", "hours":
		unit = time.Hour
	case "day", "days":
		unit = 24 * time.Hour
	default:
		return nil, fmt.Errorf("rate expression %q: unit %q: want minute(s), hour(s) or day(s)", e, inner[1])
	}
	return &cronSchedule{every: time.Duration(n) * unit}, nil
}

// parse reads one field into a bit set.
func (f cronField) parse(s string) (uint64, error) {
	if s == "" {
		return 0, fmt.Errorf("empty")
	}
	var bits uint64
	for _, part := range strings.Split(s, ",") {
		if part == "" {
			return 0, fmt.Errorf("empty list item")
		}
		rng, stepStr, hasStep := strings.Cut(part, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepStr)
			if err != nil || n < 1 {
				return 0, fmt.Errorf("step %q: want a whole number from 1", stepStr)
			}
			if n > f.max-f.min+1 {
				return 0, fmt.Errorf("step %d is larger than the field's range %d–%d", n, f.min, f.max)
			}
			step = n
		}
		var lo, hi int
		switch {
		case rng == "*":
			lo, hi = f.min, f.max
			if f.name == "day-of-week" {
				hi = 6
			}
		case strings.Contains(rng, "-"):
			a, b, _ := strings.Cut(rng, "-")
			var err error
			if lo, err = f.value(a); err != nil {
				return 0, err
			}
			if hi, err = f.value(b); err != nil {
				return 0, err
			}
			if lo > hi {
				return 0, fmt.Errorf("range %s-%s runs backwards", a, b)
			}
		default:
			v, err := f.value(rng)
			if err != nil {
				return 0, err
			}
			lo, hi = v, v
			if hasStep { // "a/n" is a to the field's end, by n
				hi = f.max
				if f.name == "day-of-week" {
					hi = 6
				}
			}
		}
		for v := lo; v <= hi; v += step {
			bits |= 1 << uint(v)
		}
	}
	return bits, nil
}

// value reads a number or a name within the field's bounds.
func (f cronField) value(s string) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("missing value")
	}
	for i, n := range f.names {
		if strings.EqualFold(s, n) {
			return f.min + i, nil
		}
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		if f.names != nil {
			return 0, fmt.Errorf("%q is not a number from %d to %d or a name (%s)", s, f.min, f.max, strings.Join(f.names, ", "))
		}
		return 0, fmt.Errorf("%q is not a number from %d to %d", s, f.min, f.max)
	}
	if v < f.min || v > f.max {
		return 0, fmt.Errorf("%d is out of range %d–%d", v, f.min, f.max)
	}
	return v, nil
}

// next returns the first fire time strictly after t (UTC), or the zero time
// when the expression never matches within five years (e.g. 30 February).
// A rate fires every interval from anchor.
func (c *cronSchedule) next(t, anchor time.Time) time.Time {
	t = t.UTC()
	if c.every > 0 {
		anchor = anchor.UTC()
		if t.Before(anchor) {
			return anchor
		}
		k := t.Sub(anchor)/c.every + 1
		return anchor.Add(k * c.every)
	}
	t = t.Truncate(time.Minute).Add(time.Minute)
	limit := t.AddDate(5, 0, 0)
	for t.Before(limit) {
		y, m, d := t.Date()
		switch {
		case c.month&(1<<uint(m)) == 0:
			t = time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC)
		case !c.dayMatches(t):
			t = time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)
		case c.hour&(1<<uint(t.Hour())) == 0:
			t = t.Truncate(time.Hour).Add(time.Hour)
		case c.minute&(1<<uint(t.Minute())) == 0:
			t = t.Add(time.Minute)
		default:
			return t
		}
	}
	return time.Time{}
}

// dayMatches follows cron: when both day fields are restricted, a day
// matching either fires; otherwise both must match.
func (c *cronSchedule) dayMatches(t time.Time) bool {
	dom := c.dom&(1<<uint(t.Day())) != 0
	dow := c.dow&(1<<uint(t.Weekday())) != 0
	if c.domStar || c.dowStar {
		return dom && dow
	}
	return dom || dow
}

// scheduledEvent is the EventBridge payload of a scheduled invocation.
func scheduledEvent(id, function string, at time.Time) []byte {
	b, _ := json.Marshal(map[string]any{
		"version":     "0",
		"id":          id,
		"detail-type": "Scheduled Event",
		"source":      "aws.events",
		"account":     "000000000000",
		"time":        at.UTC().Format(time.RFC3339),
		"region":      "us-east-1",
		"resources":   []string{"arn:aws:events:us-east-1:000000000000:rule/amber-" + function},
		"detail":      map[string]any{},
	})
	return b
}

// setSchedule validates expr and stores it as name's schedule.
func (s *Scheduler) setSchedule(name, expr string) (*api.Schedule, error) {
	expr = strings.TrimSpace(expr)
	c, err := parseSchedule(expr)
	if err != nil {
		return nil, api.Invalid("expression", "%v", err)
	}
	now := s.now().UTC()
	sc := api.Schedule{Function: name, Expression: expr, CreatedAt: now.Truncate(time.Second)}
	sc.NextAt = c.next(now, sc.CreatedAt)
	if sc.NextAt.IsZero() {
		return nil, api.Invalid("expression", "%q never fires (no such date within five years)", expr)
	}
	_, err = s.reg.updateHead(name, func(h *fnHead) error {
		h.Schedule = &sc
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &sc, nil
}

// schedules lists every function's schedule, by function name, from memory.
func (s *Scheduler) schedules() ([]api.Schedule, error) {
	c := &s.reg.cache
	c.mu.RLock()
	out := []api.Schedule{}
	for _, h := range c.heads {
		if h.Schedule != nil {
			out = append(out, *h.Schedule)
		}
	}
	c.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Function < out[j].Function })
	return out, nil
}

// fireDue publishes an event for every schedule due at the scheduler's
// clock, then advances the schedule, and returns how many events it added
// (a tick another scheduler published already is not counted).
//
// The event's message id is the function, the schedule's identity and the
// tick time (cronMsgID), and its event id derives from it, so schedulers
// that fire the same tick (several schedulers, or the next pass after a
// lost update) add one event: the queue's duplicate window (10 minutes)
// drops the rest. The schedule is advanced only after JetStream took the
// event; when advancing fails or another scheduler moved it first, the
// next pass republishes the same tick and it is dropped as a duplicate.
func (s *Scheduler) fireDue() (int, error) {
	now := s.now().UTC()
	scs, err := s.schedules()
	if err != nil {
		return 0, err
	}
	fired := 0
	var errs []error
	for _, sc := range scs {
		if sc.NextAt.IsZero() || sc.NextAt.After(now) {
			continue
		}
		c, err := parseSchedule(sc.Expression)
		if err != nil {
			s.log.Error("bad stored schedule; skipped", "function", sc.Function, "err", err.Error())
			continue
		}
		fn, err := s.reg.latest(sc.Function)
		if err != nil {
			continue // deleted with its function
		}
		tick := sc.NextAt
		msgID := cronMsgID(sc, tick)
		ev := s.newEvent(fn, nil, sourceSchedule)
		ev.ID = eventIDFor(msgID)
		ev.Payload = scheduledEvent(ev.ID, sc.Function, tick)
		ctx, cancel := context.WithTimeout(context.Background(), asyncOpTimeout)
		dup, err := s.publishEvent(ctx, ev, msgID)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("schedule of %s, tick %s: %w", sc.Function, tick.Format(time.RFC3339), err))
			continue // not advanced: the next pass tries the same tick
		}
		next := sc
		next.LastFiredAt = tick
		next.Fired++
		next.NextAt = c.next(now, sc.CreatedAt)
		advanced, err := s.reg.advanceSchedule(sc.Function, sc, next)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("advance the schedule of %s past %s: %w", sc.Function, tick.Format(time.RFC3339), err))
		case !advanced:
			s.log.Debug("schedule moved by another pass", "function", sc.Function, "tick", tick)
		}
		if dup {
			s.log.Debug("schedule tick fired already", "function", sc.Function, "tick", tick, "event_id", ev.ID)
			continue
		}
		fired++
		s.log.Info("schedule fired", "function", sc.Function, "expression", sc.Expression, "tick", tick, "event_id", ev.ID, "next_at", next.NextAt)
	}
	return fired, errors.Join(errs...)
}

// cronMsgID names one tick of one schedule: the function, the schedule's
// identity (when it was set, and a hash of its expression: setting it
// again starts a new identity) and the tick time.
func cronMsgID(sc api.Schedule, tick time.Time) string {
	h := sha256.Sum256([]byte(sc.Expression))
	return fmt.Sprintf("cron/%s/%d-%s/%d", sc.Function, sc.CreatedAt.Unix(), hex.EncodeToString(h[:6]), tick.Unix())
}

// eventIDFor derives a UUID-shaped event id from a message id, so every
// scheduler firing a tick names its event the same.
func eventIDFor(msgID string) string {
	b := sha256.Sum256([]byte(msgID))
	b[6] = b[6]&0x0f | 0x50
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:16])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func (s *Scheduler) cronRun() {
	defer close(s.cron.done)
	t := time.NewTicker(s.bgCfg.cronTick)
	defer t.Stop()
	for {
		select {
		case <-s.cron.stop:
			return
		case <-t.C:
			if _, err := s.fireDue(); err != nil {
				s.log.Error("fire schedules", "err", err.Error())
			}
		}
	}
}

func (s *Scheduler) handlePutSchedule(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var body struct {
		Expression string `json:"expression"`
	}
	if err := decodeJSON(w, r, 4<<10, &body); err != nil {
		api.WriteError(w, err)
		return
	}
	sc, err := s.setSchedule(name, body.Expression)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	s.log.Info("schedule set", "function", name, "expression", sc.Expression, "next_at", sc.NextAt)
	api.WriteJSON(w, http.StatusOK, sc)
}

func (s *Scheduler) handleGetSchedule(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	h, _ := s.reg.cache.head(name)
	if h == nil || h.Schedule == nil {
		api.WriteError(w, fmt.Errorf("schedule of function %q %w", name, api.ErrNotFound))
		return
	}
	api.WriteJSON(w, http.StatusOK, h.Schedule)
}

func (s *Scheduler) handleDeleteSchedule(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	_, err := s.reg.updateHead(name, func(h *fnHead) error {
		if h.Schedule == nil {
			return fmt.Errorf("schedule of function %q %w", name, api.ErrNotFound)
		}
		h.Schedule = nil
		return nil
	})
	if err != nil {
		api.WriteError(w, err)
		return
	}
	s.log.Info("schedule removed", "function", name)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Scheduler) handleListSchedules(w http.ResponseWriter, _ *http.Request) {
	out, err := s.schedules()
	if err != nil {
		api.WriteError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, out)
}
