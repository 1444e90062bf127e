package testenv_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/testenv"
)

var (
	probeOnce sync.Once
	probePath string
	probeErr  error
)

// probe deploys testdata/lambdaprobe, an aws-lambda-go function that
// reports what it sees, with 256 MB, a 7 s timeout and one env variable.
func probe(t *testing.T) (*fixture, *api.Function) {
	t.Helper()
	f := cluster(t)
	probeOnce.Do(func() {
		probePath, probeErr = testenv.BuildGoFunction(t.Context(), "./testenv/testdata/lambdaprobe", "probe", f.dir)
	})
	if probeErr != nil {
		t.Fatal(probeErr)
	}
	fn := deploy(t, f.cluster.Client(), "probe", probePath, func(s *api.FunctionSpec) {
		s.MemoryMB = 256
		s.Timeout = api.Duration(7 * time.Second)
		s.Env = map[string]string{"PROBE_COLOUR": "amber"}
	})
	return f, fn
}

type probeReport struct {
	Env          map[string]string `json:"env"`
	FunctionName string            `json:"function_name"`
	Version      string            `json:"version"`
	MemoryMB     int               `json:"memory_mb"`
	RequestID    string            `json:"request_id"`
	ARN          string            `json:"arn"`
	DeadlineMs   int64             `json:"deadline_ms"`
	Cwd          string            `json:"cwd"`
}

// TestConformanceAWSLambdaGo runs the Runtime API conformance cases
// through a real aws-lambda-go function in a real container.
func TestConformanceAWSLambdaGo(t *testing.T) {
	f, fn := probe(t)
	c := f.cluster.Client()
	res, err := c.Invoke(t.Context(), "probe", []byte(`{}`))
	if err != nil || res.FunctionError != "" {
		t.Fatalf("invoke: %v %s", err, res.Payload)
	}
	var r probeReport
	if err := json.Unmarshal(res.Payload, &r); err != nil {
		t.Fatalf("report %q: %v", res.Payload, err)
	}
	wantEnv := map[string]string{
		"AWS_LAMBDA_RUNTIME_API":          "127.0.0.1:9001",
		"AWS_LAMBDA_FUNCTION_NAME":        "probe",
		"AWS_LAMBDA_FUNCTION_VERSION":     strconv.Itoa(fn.Version),
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
		"LAMBDA_TASK_ROOT":                "/var/task",
		"TZ":                              ":UTC",
		"PROBE_COLOUR":                    "amber",
	}
	for k, v := range wantEnv {
		if got := r.Env[k]; got != v {
			t.Errorf("env %s = %q, want %q", k, got, v)
		}
	}
	checks := []struct {
		what      string
		got, want any
	}{
		{"lambdacontext.FunctionName", r.FunctionName, "probe"},
		{"lambdacontext.FunctionVersion", r.Version, strconv.Itoa(fn.Version)},
		{"lambdacontext.MemoryLimitInMB", r.MemoryMB, 256},
		{"request id", r.RequestID, res.RequestID},
		{"working directory", r.Cwd, "/var/task"},
		{"ARN names the function", strings.HasSuffix(r.ARN, ":function:probe"), true},
		{"ctx.Deadline within the 7 s timeout", r.DeadlineMs > 5000 && r.DeadlineMs <= 7000, true},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.what, ch.got, ch.want)
		}
	}
}

func TestConformanceErrors(t *testing.T) {
	f, _ := probe(t)
	c := f.cluster.Client()
	cases := []struct {
		name, payload string
		wantType      string // "" = any non-empty
		wantMsg       string
	}{
		{"returned error", `{"do":"error"}`, "", "probe failed on purpose"},
		{"panic", `{"do":"panic"}`, "", "probe panicked on purpose"},
		{"exit mid-invocation", `{"do":"exit"}`, "Runtime.ExitError", "exit status 7"},
		{"response over 6 MB", `{"do":"big","bytes":7000000}`, "Function.ResponseSizeTooLarge", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := c.Invoke(t.Context(), "probe", []byte(tc.payload))
			if err != nil {
				t.Fatalf("a function failure must not be a platform error: %v", err)
			}
			var fe api.FunctionError
			if res.FunctionError == "" || json.Unmarshal(res.Payload, &fe) != nil {
				t.Fatalf("want a function error, got %q %.200q", res.FunctionError, res.Payload)
			}
			if fe.ErrorType == "" || (tc.wantType != "" && fe.ErrorType != tc.wantType) {
				t.Errorf("errorType %q, want %q", fe.ErrorType, tc.wantType)
			}
			if !strings.Contains(fe.ErrorMessage, tc.wantMsg) {
				t.Errorf("errorMessage %q lacks %q", fe.ErrorMessage, tc.wantMsg)
			}
			// Whatever happened, the function keeps serving.
			next, err := c.Invoke(t.Context(), "probe", []byte(`{}`))
			if err != nil || next.FunctionError != "" {
				t.Errorf("after %s: %v %.200s", tc.name, err, next.Payload)
			}
		})
	}
}

func TestConformanceLogs(t *testing.T) {
	f, _ := probe(t)
	c := f.cluster.Client()
	res, err := c.Invoke(t.Context(), "probe", []byte(`{"do":"print"}`))
	if err != nil || res.FunctionError != "" {
		t.Fatalf("invoke: %v %s", err, res.Payload)
	}
	var got []string
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		recs, err := c.Logs(t.Context(), "probe", time.Time{}, 500)
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for _, r := range recs {
			if r.RequestID == res.RequestID {
				got = append(got, r.Stream+": "+r.Text)
			}
		}
		if len(got) >= 5 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	joined := strings.Join(got, "\n")
	for _, want := range []string{"stdout: probe says hello on stdout", "stderr: probe says hello on stderr", "platform: START", "platform: END", "platform: REPORT"} {
		if !strings.Contains(joined, want) {
			t.Errorf("logs of %s lack %q:\n%s", res.RequestID, want, joined)
		}
	}
}
