//go:build linux

package shell_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/amberfn/amber/api/ociarchive"
)

const hostBusybox = "/bin/busybox"

// needBusybox skips without /bin/busybox, except under CI=true.
func needBusybox(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(hostBusybox); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI=true (Debian: apt-get install busybox-static): %v", hostBusybox, err)
		}
		t.Skipf("%s not found (Debian: apt-get install busybox-static); skipping the shell runtime test", hostBusybox)
	}
}

// posted is one result the runtime sent back.
type posted struct {
	kind      string // "response", "error" or "init/error"
	requestID string
	errorType string
	body      []byte
}

// runtimeAPI is a minimal Lambda Runtime API: /next hands out the queued
// events, then blocks until the test ends; results go to a channel.
type runtimeAPI struct {
	srv     *httptest.Server
	events  chan [2]string // request id, payload
	results chan posted
	done    chan struct{}
	once    sync.Once
}

func newRuntimeAPI(t *testing.T, events ...[2]string) *runtimeAPI {
	api := &runtimeAPI{
		events:  make(chan [2]string, len(events)),
		results: make(chan posted, 8),
		done:    make(chan struct{}),
	}
	for _, e := range events {
		api.events <- e
	}
	const prefix = "/2018-06-01/runtime/"
	api.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := strings.CutPrefix(r.URL.Path, prefix)
		if !ok {
			http.NotFound(w, r)
			return
		}
		switch {
		case r.Method == http.MethodGet && p == "invocation/next":
			select {
			case e := <-api.events:
				// Lower-case names on the wire: the runtime must not
				// depend on the case.
				w.Header()["lambda-runtime-aws-request-id"] = []string{e[0]}
				w.Header()["Lambda-Runtime-Deadline-Ms"] = []string{"4102444800000"}
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, e[1])
			case <-api.done:
				http.Error(w, "shutting down", http.StatusGone)
			}
		case r.Method == http.MethodPost:
			body, _ := io.ReadAll(r.Body)
			res := posted{body: body, errorType: r.Header.Get("Lambda-Runtime-Function-Error-Type")}
			switch {
			case p == "init/error":
				res.kind = "init/error"
			case strings.HasPrefix(p, "invocation/"):
				rest := strings.TrimPrefix(p, "invocation/")
				id, kind, _ := strings.Cut(rest, "/")
				res.requestID, res.kind = id, kind
			}
			w.WriteHeader(http.StatusAccepted)
			api.results <- res
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(func() {
		api.once.Do(func() { close(api.done) })
		api.srv.Close()
	})
	return api
}

// startRuntime runs `busybox sh ./bootstrap` from taskRoot against api and
// returns its stderr.
func startRuntime(t *testing.T, api *runtimeAPI, taskRoot string, env ...string) *bytes.Buffer {
	t.Helper()
	cmd := exec.Command(hostBusybox, "sh", "./bootstrap")
	cmd.Dir = taskRoot
	cmd.Env = append([]string{
		"PATH=/usr/bin:/bin",
		"AWS_LAMBDA_RUNTIME_API=" + strings.TrimPrefix(api.srv.URL, "http://"),
		"BUSYBOX=" + hostBusybox,
		"TMPDIR=" + t.TempDir(),
		"LAMBDA_TASK_ROOT=" + taskRoot,
	}, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	// Its own process group, so wget children go with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		if t.Failed() {
			t.Logf("runtime output:\n%s", stderr.String())
		}
	})
	return &stderr
}

func (api *runtimeAPI) next(t *testing.T) posted {
	t.Helper()
	select {
	case r := <-api.results:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no result from the runtime within 10s")
		return posted{}
	}
}

func here(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestBootstrapEchoes(t *testing.T) {
	needBusybox(t)
	events := [][2]string{
		{"req-1", `{"name":"amber","n":[1,2,3]}`},
		{"8f2c1d3e-0000-4a5b-9c7d-abcdefabcdef", `"a \"quoted\" string"`},
		{"req-3", `{}`},
	}
	api := newRuntimeAPI(t, events...)
	startRuntime(t, api, here(t))
	for _, e := range events {
		got := api.next(t)
		if got.kind != "response" || got.requestID != e[0] {
			t.Fatalf("got %s for %q, want a response for %q: %s", got.kind, got.requestID, e[0], got.body)
		}
		var resp, want any
		if err := json.Unmarshal(got.body, &resp); err != nil {
			t.Fatalf("response %q is not JSON: %v", got.body, err)
		}
		json.Unmarshal([]byte(`{"echo": `+e[1]+`, "shell": "busybox"}`), &want)
		if !reflect.DeepEqual(resp, want) {
			t.Errorf("response %s, want %v", got.body, want)
		}
	}
}

func TestBootstrapErrors(t *testing.T) {
	needBusybox(t)
	tests := []struct {
		name      string
		handler   string // contents of fn.sh
		wantKind  string
		wantType  string
		wantInMsg string
	}{
		{
			name:      "handler fails",
			handler:   "handle() { echo oops >&2; return 3; }\n",
			wantKind:  "error",
			wantType:  "Unhandled",
			wantInMsg: "exited with status 3",
		},
		{
			name:      "handler exits",
			handler:   "handle() { exit 7; }\n",
			wantKind:  "error",
			wantType:  "Unhandled",
			wantInMsg: "exited with status 7",
		},
		{
			name:      "no such function",
			handler:   "other() { :; }\n",
			wantKind:  "init/error",
			wantType:  "Runtime.NoSuchHandler",
			wantInMsg: "defines no function handle",
		},
	}
	src, err := os.ReadFile(filepath.Join(here(t), "bootstrap"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if err := os.WriteFile(filepath.Join(root, "bootstrap"), src, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, "fn.sh"), []byte(tt.handler), 0o644); err != nil {
				t.Fatal(err)
			}
			api := newRuntimeAPI(t, [2]string{"req-e", `{}`})
			startRuntime(t, api, root, "_HANDLER=fn.handle")
			got := api.next(t)
			if got.kind != tt.wantKind || got.errorType != tt.wantType {
				t.Fatalf("got %s (%s), want %s (%s): %s", got.kind, got.errorType, tt.wantKind, tt.wantType, got.body)
			}
			var body struct{ ErrorType, ErrorMessage string }
			if err := json.Unmarshal(got.body, &body); err != nil {
				t.Fatalf("error body %q is not JSON: %v", got.body, err)
			}
			if !strings.Contains(body.ErrorMessage, tt.wantInMsg) {
				t.Errorf("errorMessage %q does not say %q", body.ErrorMessage, tt.wantInMsg)
			}
		})
	}
}

func TestStageAndBuild(t *testing.T) {
	needBusybox(t)
	stage := filepath.Join(t.TempDir(), "stage")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "sh", "./stage.sh", stage).CombinedOutput()
	if err != nil {
		t.Fatalf("stage.sh: %v\n%s", err, out)
	}
	for _, f := range []string{"bootstrap", "busybox"} {
		st, err := os.Stat(filepath.Join(stage, f))
		if err != nil || st.Mode().Perm()&0o111 == 0 {
			t.Errorf("staged %s: %v, mode %v", f, err, st.Mode())
		}
	}
	var archive bytes.Buffer
	img, err := ociarchive.Build(stage, &archive)
	if err != nil {
		t.Fatalf("Build of the staged dir: %v", err)
	}
	if _, err := ociarchive.Inspect(bytes.NewReader(archive.Bytes()), int64(archive.Len())); err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if got := img.Config.Entrypoint; len(got) != 1 || got[0] != "/var/task/bootstrap" {
		t.Errorf("entrypoint %v", got)
	}

	// A busybox that is not static is refused, with a reason.
	dyn, err := exec.LookPath("ls")
	if err != nil {
		t.Skip("no dynamic binary to try")
	}
	cmd := exec.CommandContext(ctx, "sh", "./stage.sh", filepath.Join(t.TempDir(), "x"))
	cmd.Env = append(os.Environ(), "BUSYBOX_SRC="+dyn)
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not statically linked") && !strings.Contains(string(out), "dynamically linked") {
		t.Errorf("stage.sh with %s: err %v, output %q; want a refusal", dyn, err, out)
	}
	cmd = exec.CommandContext(ctx, "sh", "./stage.sh", filepath.Join(t.TempDir(), "x"))
	cmd.Env = append(os.Environ(), "BUSYBOX_SRC=/nonexistent/busybox")
	if out, err = cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "is missing") {
		t.Errorf("stage.sh without busybox: err %v, output %q", err, out)
	}
}
