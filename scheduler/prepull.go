package scheduler

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/scheduler/internal/placement"
)

// prePullTimeout bounds an agent's pre-pull of a deployed image.
const prePullTimeout = 10 * time.Minute

// deployStream writes a streamed deploy's lines (api.DeployProgress) once
// the first one is ready: until then the reply may still be a plain one.
type deployStream struct {
	w       http.ResponseWriter
	want    bool // the client asked for application/x-ndjson
	started bool
}

func (d *deployStream) line(l api.DeployProgress) {
	if !d.want {
		return
	}
	if !d.started {
		d.w.Header().Set("Content-Type", api.ContentTypeNDJSON)
		d.w.WriteHeader(http.StatusOK)
		d.started = true
	}
	_ = json.NewEncoder(d.w).Encode(l)
	if fl, ok := d.w.(http.Flusher); ok {
		fl.Flush()
	}
}

// finish writes the outcome: the function (status on a plain reply) or
// the error, as a last line when the stream has started.
func (d *deployStream) finish(status int, fn *api.Function, err error) {
	if !d.started {
		if err != nil {
			writeError(d.w, err)
		} else {
			api.WriteJSON(d.w, status, fn)
		}
		return
	}
	if err != nil {
		code, detail := errorDetail(err)
		d.line(api.DeployProgress{Failure: &detail, HTTPCode: code})
		return
	}
	d.line(api.DeployProgress{Function: fn, Created: status == http.StatusCreated})
}

// errorDetail is what writeError would answer for err.
func errorDetail(err error) (int, api.ErrorDetail) {
	if errors.Is(err, errBadGateway) {
		return http.StatusBadGateway, api.ErrorDetail{Code: "BadGateway", Message: err.Error()}
	}
	status, code := api.StatusFor(err)
	d := api.ErrorDetail{Code: code, Message: err.Error()}
	var fe *api.FieldError
	if errors.As(err, &fe) {
		d.Field = fe.Field
	}
	return status, d
}

// homeAgent is the ready agent with the highest rendezvous score for
// function name, and its URL; "" when no agent is ready.
func (s *Scheduler) homeAgent(name string) (agent, agentURL string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if agent = placement.Home(name, s.readyAgentsLocked()...); agent != "" {
		agentURL = s.agents[agent].hb.URL
	}
	return agent, agentURL
}

// prePull asks function name's home agent to pull the pinned registry
// image before the version that runs it is stored, relaying the agent's
// progress to d. A failed pull is a 400 on "image" naming ref (what the
// operator gave) and image; an agent that cannot be asked is a 502. With
// no ready agent the deploy goes on: agents pull on first use.
func (s *Scheduler) prePull(ctx context.Context, d *deployStream, name, ref, image string) error {
	agent, agentURL := s.homeAgent(name)
	if agent == "" {
		s.log.Info("no ready agent to pre-pull the image; agents pull it on first use", "function", name, "image", image)
		return nil
	}
	log := s.log.With("function", name, "image", image, "agent", agent)
	ctx, cancel := context.WithTimeout(ctx, prePullTimeout)
	defer cancel()
	body, _ := json.Marshal(api.PullRequest{Image: image})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, agentURL+"/v1/images/pull", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("image %s: bad agent URL %q: %v: %w", ref, agentURL, err, errBadGateway)
	}
	req.Header.Set("Content-Type", "application/json")
	if tok := s.agentToken(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	start := time.Now()
	d.line(api.DeployProgress{Status: "pulling on " + agent})
	resp, err := s.hc.Do(req)
	if err != nil {
		log.Warn("image pre-pull: agent unreachable", "err", netCause(err).Error())
		return fmt.Errorf("image %s: pre-pull on agent %s: %v: %w", ref, agent, netCause(err), errBadGateway)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg := agentMessage(resp)
		log.Warn("image pre-pull refused", "status", resp.StatusCode, "err", msg)
		if resp.StatusCode == http.StatusBadRequest {
			return api.Invalid("image", "%s: pre-pull on agent %s: %s", ref, agent, msg)
		}
		return fmt.Errorf("image %s: pre-pull on agent %s: agent replied %d: %s: %w", ref, agent, resp.StatusCode, msg, errBadGateway)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var p api.PullProgress
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			return fmt.Errorf("image %s: pre-pull on agent %s: bad progress line %q: %w", ref, agent, sc.Text(), errBadGateway)
		}
		switch {
		case p.Error != "":
			log.Warn("image pre-pull failed", "err", p.Error)
			return api.Invalid("image", "%s: pre-pull on agent %s failed: %s", ref, agent, p.Error)
		case p.Done:
			log.Info("image pre-pulled", "took", time.Since(start).Round(time.Millisecond))
			return nil
		case p.Status != "":
			d.line(api.DeployProgress{Status: p.Status, Bytes: p.Bytes, Total: p.Total})
		}
	}
	cause := "the stream ended without an outcome"
	if err := sc.Err(); err != nil {
		cause = netCause(err).Error()
	}
	if ctx.Err() != nil {
		cause = strings.TrimSpace(cause + " (" + context.Cause(ctx).Error() + ")")
	}
	log.Warn("image pre-pull interrupted", "err", cause)
	return fmt.Errorf("image %s: pre-pull on agent %s: %s: %w", ref, agent, cause, errBadGateway)
}
