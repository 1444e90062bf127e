package scheduler

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/amberfn/amber/api"
)

// maxEvents is how many recent events the scheduler keeps.
const maxEvents = 1000

// eventLog keeps the recent events and wakes stream watchers.
type eventLog struct {
	mu     sync.Mutex
	seq    int64
	events []api.Event
	wake   chan struct{}
	// last known agent states, to publish transitions
	agentStates map[string]api.AgentState
}

func newEventLog() *eventLog {
	return &eventLog{wake: make(chan struct{}), agentStates: map[string]api.AgentState{}}
}

func (l *eventLog) publish(ev api.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	ev.Seq = l.seq
	l.events = append(l.events, ev)
	if len(l.events) > maxEvents {
		l.events = append(l.events[:0:0], l.events[len(l.events)-maxEvents*3/4:]...)
	}
	close(l.wake)
	l.wake = make(chan struct{})
}

// since returns events after seq, and a channel closed on the next one.
func (l *eventLog) since(seq int64) ([]api.Event, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := len(l.events)
	for i > 0 && l.events[i-1].Seq > seq {
		i--
	}
	return append([]api.Event{}, l.events[i:]...), l.wake
}

// event publishes an event stamped with the scheduler's clock.
func (s *Scheduler) event(kind, function, agent, format string, args ...any) {
	s.events.publish(api.Event{Time: s.now().UTC(), Kind: kind, Function: function, Agent: agent, Message: fmt.Sprintf(format, args...)})
}

// noteAgentStates publishes agents that turned suspect, gone or back.
func (s *Scheduler) noteAgentStates() {
	s.mu.Lock()
	now := map[string]api.AgentState{}
	for name, e := range s.agents {
		now[name] = s.stateLocked(e)
	}
	s.mu.Unlock()
	s.events.mu.Lock()
	var changes [][3]string
	for name, st := range now {
		if old, ok := s.events.agentStates[name]; ok && old != st {
			changes = append(changes, [3]string{name, string(old), string(st)})
		}
		s.events.agentStates[name] = st
	}
	s.events.mu.Unlock()
	for _, c := range changes {
		s.event(api.EventAgentState, "", c[0], "agent %s: %s → %s", c[0], c[1], c[2])
	}
}

// handleEvents lists recent events after ?since=SEQ.
func (s *Scheduler) handleEvents(w http.ResponseWriter, r *http.Request) {
	var since int64
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			api.WriteError(w, api.Invalid("since", "%q: want a sequence number", v))
			return
		}
		since = n
	}
	s.noteAgentStates()
	evs, _ := s.events.since(since)
	api.WriteJSON(w, http.StatusOK, evs)
}

// streamInterval is how often the stream sends a state snapshot.
const streamInterval = time.Second

// handleStream serves server-sent events: a state snapshot at once and
// every second, and events as they happen (each "data:" line is one
// api.StreamMessage).
func (s *Scheduler) handleStream(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		api.WriteError(w, fmt.Errorf("streaming not supported: %w", api.ErrUnavailable))
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	var seq int64
	if v := r.URL.Query().Get("since"); v != "" {
		seq, _ = strconv.ParseInt(v, 10, 64)
	}
	send := func(m api.StreamMessage) bool {
		b, err := json.Marshal(m)
		if err != nil {
			return false
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return false
		}
		fl.Flush()
		return true
	}
	tick := time.NewTicker(streamInterval)
	defer tick.Stop()
	sendState := true
	for {
		s.noteAgentStates()
		evs, wake := s.events.since(seq)
		var m api.StreamMessage
		if len(evs) > 0 {
			m.Events = evs
			seq = evs[len(evs)-1].Seq
		}
		if sendState {
			st, err := s.State()
			if err == nil {
				m.State = st
			}
		}
		if m.State != nil || len(m.Events) > 0 {
			if !send(m) {
				return
			}
		}
		sendState = false
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			sendState = true
		case <-wake:
		}
	}
}
