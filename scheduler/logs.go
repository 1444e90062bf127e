package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/amberfn/amber/api"
)

// Bounds on one logs request.
const (
	defaultLogLimit = 200
	maxLogLimit     = 5000
)

// parseLogQuery reads ?since=RFC3339Nano&limit=N.
func parseLogQuery(q url.Values) (since time.Time, limit int, err error) {
	limit = defaultLogLimit
	if v := q.Get("since"); v != "" {
		if since, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return since, 0, api.Invalid("since", "%q is not an RFC 3339 time", v)
		}
	}
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > maxLogLimit {
			return since, 0, api.Invalid("limit", "%q: want 1–%d", v, maxLogLimit)
		}
	}
	return since, limit, nil
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
		mu  sync.Mutex
		all = []api.LogRecord{}
		wg  sync.WaitGroup
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
			if err != nil {
				s.log.Warn("logs from agent", "agent", t.name, "err", err)
				return
			}
			mu.Lock()
			all = append(all, recs...)
			mu.Unlock()
		}()
	}
	wg.Wait()
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
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("agent replied %s", resp.Status)
	}
	var recs []api.LogRecord
	if err := json.NewDecoder(resp.Body).Decode(&recs); err != nil {
		return nil, fmt.Errorf("decode agent logs: %w", err)
	}
	return recs, nil
}
