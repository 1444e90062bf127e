package scheduler

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// TestLogsLimitAndAgentErrors: the scheduler takes the same limit as the
// agents, and an agent's refusal or failure is an error naming the agent,
// never an empty success.
func TestLogsLimitAndAgentErrors(t *testing.T) {
	rec := api.LogRecord{Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), Function: "echo", Agent: "n1", Text: "hello"}
	for _, tc := range []struct {
		name   string
		limit  string
		reply  func(w http.ResponseWriter, r *http.Request)
		down   bool // the agent is unreachable
		status int
		says   []string // in the error message
		asked  string   // the limit the agent was asked for ("" : not asked)
	}{
		{name: "default", status: 200, asked: fmt.Sprint(api.DefaultLogLines)},
		{name: "the most", limit: fmt.Sprint(api.MaxLogLines), status: 200, asked: fmt.Sprint(api.MaxLogLines)},
		{name: "over the most", limit: "3000", status: 400, says: []string{"limit", "3000", fmt.Sprint(api.MaxLogLines)}},
		{name: "zero", limit: "0", status: 400, says: []string{"limit"}},
		{name: "agent refuses", limit: "5", status: 400, asked: "5", says: []string{"agent n1", "limit", "want 1–2"},
			reply: func(w http.ResponseWriter, r *http.Request) {
				api.WriteError(w, api.Invalid("limit", "%q: want 1–2", r.URL.Query().Get("limit")))
			}},
		{name: "agent fails", status: 503, asked: fmt.Sprint(api.DefaultLogLines), says: []string{"agent n1", "500", "disk on fire"},
			reply: func(w http.ResponseWriter, r *http.Request) { http.Error(w, "disk on fire", 500) }},
		{name: "agent unreachable", down: true, status: 503, says: []string{"agent n1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestScheduler(t)
			ag := newFakeAgent(t, "n1")
			asked := ""
			ag.setReply(func(w http.ResponseWriter, r *http.Request, _ []byte) {
				asked = r.URL.Query().Get("limit")
				if tc.reply != nil {
					tc.reply(w, r)
					return
				}
				api.WriteJSON(w, 200, []api.LogRecord{rec})
			})
			ts.heartbeat(t, agentHB("n1", ag.srv.URL, 1024))
			ts.deploy(t, "echo", 128)
			if tc.down {
				ag.srv.Close()
			}
			path := "/v1/functions/echo/logs"
			if tc.limit != "" {
				path += "?limit=" + tc.limit
			}
			resp := ts.do(t, "GET", path, nil)
			if tc.status == 200 {
				recs := decode[[]api.LogRecord](t, resp, 200)
				if len(recs) != 1 || recs[0].Text != "hello" {
					t.Fatalf("records %+v", recs)
				}
			} else {
				e := errorBody(t, resp, tc.status)
				for _, s := range tc.says {
					if !strings.Contains(e.Message, s) {
						t.Errorf("message %q does not say %q", e.Message, s)
					}
				}
			}
			if asked != tc.asked {
				t.Errorf("the agent was asked for %q lines, want %q", asked, tc.asked)
			}
		})
	}
}
