package agent

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// TestLogsLimit: the agent keeps at most api.MaxLogLines records of a
// function and answers a request for that many; one line more is refused
// naming the limit.
func TestLogsLimit(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, []*api.Function{testFn("web", 1, 10*time.Second, nil)})
	t0 := time.Now()
	for i := range api.MaxLogLines + 500 {
		e.a.logs.add(api.LogRecord{Time: t0.Add(time.Duration(i) * time.Microsecond), Function: "web", Text: fmt.Sprint("line ", i)})
	}
	srv := httptest.NewServer(e.a.Handler())
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		limit  string
		status int
		lines  int
	}{
		{"", 200, api.DefaultLogLines},
		{fmt.Sprint(api.MaxLogLines), 200, api.MaxLogLines},
		{fmt.Sprint(api.MaxLogLines + 1), 400, 0},
		{"3000", 400, 0},
		{"-1", 400, 0},
		{"many", 400, 0},
	} {
		t.Run("limit="+tc.limit, func(t *testing.T) {
			resp, err := http.Get(srv.URL + "/v1/functions/web/logs?limit=" + tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
			if tc.status != 200 {
				var eb api.ErrorBody
				if json.Unmarshal(b, &eb) != nil || eb.Error.Field != "limit" || !strings.Contains(eb.Error.Message, fmt.Sprint(api.MaxLogLines)) {
					t.Fatalf("refusal does not name the limit: %s", b)
				}
				return
			}
			var recs []api.LogRecord
			if err := json.Unmarshal(b, &recs); err != nil {
				t.Fatal(err)
			}
			// The ring drops an eighth of its lines at once when full.
			if len(recs) < tc.lines*7/8 || len(recs) > tc.lines || recs[len(recs)-1].Text != fmt.Sprint("line ", api.MaxLogLines+499) {
				t.Fatalf("%d lines ending %q, want the newest (up to %d)", len(recs), recs[len(recs)-1].Text, tc.lines)
			}
		})
	}
}
