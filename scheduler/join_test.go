package scheduler

import (
	"net/http"
	"testing"
)

// TestJoinTokenOpensOnlyWhatAgentsCall: agents join with their own token,
// which cannot deploy or invoke; the scheduler presents it to agents.
func TestJoinTokenOpensOnlyWhatAgentsCall(t *testing.T) {
	ts := newTestScheduler(t, WithToken("api"), WithJoinToken("join"))
	fn := ts.deploy(t, "hello", 128)
	ag := newFakeAgent(t, "a1")
	cases := []struct {
		token, method, path string
		want                int
	}{
		{"join", "GET", "/v1/functions/hello/versions/1", http.StatusOK},
		{"join", "GET", "/v1/images/" + fn.Image, http.StatusOK},
		{"join", "GET", "/v1/functions", http.StatusUnauthorized},
		{"join", "POST", "/v1/functions/hello/invoke", http.StatusUnauthorized},
		{"join", "DELETE", "/v1/functions/hello", http.StatusUnauthorized},
		{"wrong", "GET", "/v1/functions/hello/versions/1", http.StatusUnauthorized},
		{"api", "GET", "/v1/functions/hello/versions/1", http.StatusOK},
	}
	for _, tc := range cases {
		ts.token = tc.token
		resp := ts.do(t, tc.method, tc.path, nil)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s with the %s token: %d, want %d", tc.method, tc.path, tc.token, resp.StatusCode, tc.want)
		}
	}
	ts.token = "join"
	ts.heartbeat(t, agentHB("a1", ag.srv.URL, 1024))
	ts.token = "api"
	ts.do(t, "POST", "/v1/functions/hello/invoke", nil).Body.Close()
	got := ag.got()
	if len(got) != 1 || got[0].Auth != "Bearer join" {
		t.Errorf("the agent saw %+v, want one request with the join token", got)
	}
}
