package initd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

const waitFor = 10 * time.Second

// harness runs a Server on an ephemeral loopback port with its frame
// streams on pipes: the test plays the agent (frames) and the runtime (HTTP).
type harness struct {
	t      *testing.T
	srv    *Server
	base   string // http://127.0.0.1:PORT/2018-06-01/runtime/
	addr   string
	toInit *io.PipeWriter
	agent  *api.FrameWriter
	frames chan api.Frame
	held   []api.Frame     // non-log frames seen while waiting for output
	logs   strings.Builder // runtime output seen so far
	done   chan error
	cancel context.CancelFunc
}

// testLogger sends a Server's diagnostics to the test log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startHarness starts a Server with opts added to the harness's own.
// Without a process unless opts ask otherwise is the caller's choice.
func startHarness(t *testing.T, opts ...Option) *harness {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	all := append([]Option{
		WithListenAddr("127.0.0.1:0"),
		WithStdio(inR, outW),
		WithLogger(testLogger(t)),
	}, opts...)
	srv := New(all...)
	ctx, cancel := context.WithCancel(context.Background())
	addr, err := srv.Listen(ctx)
	if err != nil {
		cancel()
		t.Fatalf("Listen: %v", err)
	}
	h := &harness{
		t: t, srv: srv, addr: addr.String(),
		base:   "http://" + addr.String() + apiPrefix,
		toInit: inW, agent: api.NewFrameWriter(inW),
		frames: make(chan api.Frame, 1024),
		done:   make(chan error, 1),
		cancel: cancel,
	}
	go func() {
		defer close(h.frames)
		for {
			f, err := api.ReadFrame(outR)
			if err != nil {
				return
			}
			h.frames <- f
		}
	}()
	go func() {
		err := srv.Run(ctx)
		_ = outW.Close()
		h.done <- err
	}()
	t.Cleanup(func() {
		_ = inW.Close()
		select {
		case <-h.done:
		case <-time.After(waitFor):
			t.Error("Run did not return after stdin closed")
		}
		cancel()
	})
	return h
}

// invoke sends an invoke frame as the agent would.
func (h *harness) invoke(meta api.FrameMeta, body string) {
	h.t.Helper()
	if err := h.agent.Write(api.Frame{Kind: api.FrameInvoke, Meta: meta, Body: []byte(body)}); err != nil {
		h.t.Fatalf("write invoke frame: %v", err)
	}
}

// frame waits for the next frame that is not a FrameLog, keeping the
// output of the log frames it passes.
func (h *harness) frame() api.Frame {
	h.t.Helper()
	if len(h.held) > 0 {
		f := h.held[0]
		h.held = h.held[1:]
		return f
	}
	for {
		f := h.raw()
		if f.Kind != api.FrameLog {
			return f
		}
	}
}

// raw waits for the next frame of any kind.
func (h *harness) raw() api.Frame {
	h.t.Helper()
	select {
	case f, ok := <-h.frames:
		if !ok {
			h.t.Fatal("frame stream closed")
		}
		if f.Kind == api.FrameLog {
			h.logs.Write(f.Body)
		}
		return f
	case <-time.After(waitFor):
		h.t.Fatalf("timed out waiting for a frame; output so far:\n%s", h.logs.String())
		return api.Frame{}
	}
}

// waitOutput waits until the runtime's output contains s, holding any
// other frames for frame.
func (h *harness) waitOutput(s string) {
	h.t.Helper()
	for !strings.Contains(h.logs.String(), s) {
		if f := h.raw(); f.Kind != api.FrameLog {
			h.held = append(h.held, f)
		}
	}
}

// expect waits for the next non-log frame and checks its kind.
func (h *harness) expect(kind api.FrameKind) api.Frame {
	h.t.Helper()
	f := h.frame()
	if f.Kind != kind {
		h.t.Fatalf("frame kind = %c (%+v, body %q), want %c", f.Kind, f.Meta, f.Body, kind)
	}
	return f
}

// noFrame checks that no non-log frame arrives for a short while.
func (h *harness) noFrame() {
	h.t.Helper()
	deadline := time.After(100 * time.Millisecond)
	for {
		select {
		case f := <-h.frames:
			if f.Kind != api.FrameLog {
				h.t.Fatalf("unexpected frame %c %+v %q", f.Kind, f.Meta, f.Body)
			}
		case <-deadline:
			return
		}
	}
}

// reply is one HTTP answer from the Runtime API.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// errorType decodes a Lambda error body's errorType.
func (r reply) errorType() string {
	var fe api.FunctionError
	_ = json.Unmarshal(r.body, &fe)
	return fe.ErrorType
}

// do sends one request to the Runtime API; path is relative to apiPrefix
// unless it starts with "/".
func (h *harness) do(method, path string, body []byte, header http.Header) reply {
	h.t.Helper()
	r, err := h.request(context.Background(), method, path, body, header)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

func (h *harness) request(ctx context.Context, method, path string, body []byte, header http.Header) (reply, error) {
	url := h.base + path
	if strings.HasPrefix(path, "/") {
		url = "http://" + h.addr + path
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return reply{}, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: b}, err
}

// nextAsync calls /next in the background.
func (h *harness) nextAsync() <-chan reply {
	ch := make(chan reply, 1)
	go func() {
		r, err := h.request(context.Background(), http.MethodGet, "invocation/next", nil, nil)
		if err != nil && !errors.Is(err, context.Canceled) {
			r.status = -1
			r.body = []byte(err.Error())
		}
		ch <- r
	}()
	return ch
}

// await waits for a reply from nextAsync.
func (h *harness) await(ch <-chan reply) reply {
	h.t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(waitFor):
		h.t.Fatal("timed out waiting for /next")
		return reply{}
	}
}

// begin makes id the outstanding invocation: /next parks (FrameReady),
// the agent sends the invoke, /next returns it.
func (h *harness) begin(id, payload string) reply {
	h.t.Helper()
	ch := h.nextAsync()
	h.expect(api.FrameReady)
	h.invoke(api.FrameMeta{RequestID: id, DeadlineMs: time.Now().Add(time.Minute).UnixMilli()}, payload)
	r := h.await(ch)
	if r.status != http.StatusOK {
		h.t.Fatalf("/next: %d %s", r.status, r.body)
	}
	return r
}
