package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/amberfn/amber/api"
)

// parseLogQuery reads ?since=RFC3339Nano&limit=N.
func parseLogQuery(q url.Values) (since time.Time, limit int, err error) {
	if v := q.Get("since"); v != "" {
		if since, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return since, 0, api.Invalid("since", "%q is not an RFC 3339 time", v)
		}
	}
	limit, err = api.ParseLogLimit(q.Get("limit"))
	return since, limit, err
}

// handleLogs gathers a function's log records from every agent that is not
// gone, merged in time order; the newest `limit` records after `since`.
func (s *Scheduler) handleLogs(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name") // valid: validNames checked it
	since, limit, err := parseLogQuery(r.URL.Query())
	if err != nil {
		api.WriteError(w, err)
		return
	}
	if _, err := s.reg.latest(name); err != nil {
		api.WriteError(w, err)
		return
	}
	type target struct{ name, url string }
	var targets []target
	s.mu.Lock()
	for n, e := range s.agents {
		if s.stateLocked(e) != api.AgentGone {
			targets = append(targets, target{n, e.hb.URL})
		}
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	var (
		mu   sync.Mutex
		all  = []api.LogRecord{}
		errs []error
		wg   sync.WaitGroup
	)
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if !since.IsZero() {
		q.Set("since", since.Format(time.RFC3339Nano))
	}
	for _, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs, err := s.agentLogs(ctx, t.url, name, q)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				s.log.Warn("logs from agent", "agent", t.name, "err", err)
				errs = append(errs, fmt.Errorf("agent %s: %w", t.name, err))
				return
			}
			all = append(all, recs...)
		}()
	}
	wg.Wait()
	// An agent that could not answer, or refused, makes the answer
	// incomplete: say so rather than return what the others had as if it
	// were everything.
	if len(errs) > 0 {
		sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
		api.WriteError(w, fmt.Errorf("logs of %s: %w", name, errors.Join(errs...)))
		return
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Time.Before(all[j].Time) })
	if len(all) > limit {
		all = all[len(all)-limit:]
	}
	api.WriteJSON(w, http.StatusOK, all)
}

func (s *Scheduler) agentLogs(ctx context.Context, agentURL, name string, q url.Values) ([]api.LogRecord, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		agentURL+"/v1/functions/"+url.PathEscape(name)+"/logs?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	if tok := s.agentToken(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, api.ErrUnavailable)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, agentError(resp)
	}
	var recs []api.LogRecord
	if err := json.NewDecoder(resp.Body).Decode(&recs); err != nil {
		return nil, fmt.Errorf("decode agent logs: %w", err)
	}
	return recs, nil
}

// agentError is an agent's error reply as an error: its message, and the
// sentinel for its status (a refused request stays a refused request; an
// agent failing is the service unavailable).
func agentError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var eb api.ErrorBody
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &eb) == nil && eb.Error.Message != "" {
		msg = eb.Error.Message
	}
	if resp.StatusCode == http.StatusBadRequest && eb.Error.Field != "" {
		return api.Invalid(eb.Error.Field, "refused by the agent: %s", strings.TrimPrefix(msg, eb.Error.Field+": "))
	}
	sentinel := api.SentinelFor(resp.StatusCode)
	if resp.StatusCode >= 500 || !errors.Is(sentinel, api.ErrInvalid) && !errors.Is(sentinel, api.ErrNotFound) {
		sentinel = api.ErrUnavailable
	}
	return fmt.Errorf("replied %s: %s: %w", resp.Status, msg, sentinel)
}
