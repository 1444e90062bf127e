package agent

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// syncBuffer is a bytes.Buffer safe for a logger and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestFunctionOutputInDebugLog: at debug level (AMBER_LOG=debug) each line
// a function prints reaches the agent's log with the function and
// instance; at info level it stays in the function's log only.
func TestFunctionOutputInDebugLog(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		level  slog.Level
		logged bool
	}{
		{slog.LevelDebug, true},
		{slog.LevelInfo, false},
	} {
		t.Run(tc.level.String(), func(t *testing.T) {
			var buf syncBuffer
			log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: tc.level}))
			e := newTestEnv(t, []*api.Function{testFn("talk", 1, 10*time.Second, nil)}, WithLogger(log))
			const line = "a line from the function"
			res, err := e.a.Invoke(t.Context(), "talk", 1, "req-talk", []byte(`{"op":"print","text":"`+line+`"}`))
			if err != nil || res.FunctionError != "" {
				t.Fatalf("invoke: %+v %v", res, err)
			}
			// The line reaches the function's log (and the agent's, at
			// debug) as amber-init forwards it, not necessarily before the
			// answer: wait for it in the function's log. A line that comes
			// after the answer carries no request id (issue 16's log race),
			// so the agent's log is held to the record, not to req-talk.
			deadline := time.Now().Add(10 * time.Second)
			var rec api.LogRecord
			for rec.Text == "" {
				for _, r := range e.a.Logs("talk", time.Time{}, 0) {
					if r.Text == line {
						rec = r
					}
				}
				if rec.Text == "" && time.Now().After(deadline) {
					t.Fatal("the line never reached the function's log")
				}
				time.Sleep(10 * time.Millisecond)
			}
			var found map[string]any
			for _, l := range strings.Split(buf.String(), "\n") {
				var m map[string]any
				if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "function output" && m["text"] == line {
					found = m
				}
			}
			if !tc.logged {
				if found != nil {
					t.Fatalf("function output in the agent's log at %s: %v", tc.level, found)
				}
				return
			}
			if found == nil {
				t.Fatalf("no function output line in the agent's log:\n%s", buf.String())
			}
			if found["level"] != "DEBUG" || found["function"] != "talk" || found["instance"] != rec.Instance || found["request_id"] != rec.RequestID || found["stream"] != rec.Stream {
				t.Fatalf("log line %v, want function talk, instance %s, request %q, stream %s", found, rec.Instance, rec.RequestID, rec.Stream)
			}
		})
	}
}
