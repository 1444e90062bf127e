package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/amberfn/amber/agent/initd"
	"github.com/amberfn/amber/api"
)

// DirectRuntime is the baseline of a warm invocation: amber-init's Runtime
// API (initd.RuntimeAPI) served in-process on loopback to an echoing
// runtime loop in a goroutine parked on /next, with no agent, process,
// pipe or container between. A Call delivers one invocation and waits
// for its response frame: the Runtime API exchange alone.
type DirectRuntime struct {
	rt     *initd.RuntimeAPI
	frames chan api.Frame
	srv    *http.Server
	cancel context.CancelFunc
	done   chan struct{}
}

type chanSender chan api.Frame

func (c chanSender) Write(f api.Frame) error { c <- f; return nil }

// NewDirectRuntime starts the Runtime API and the runtime loop; Close
// stops both.
func NewDirectRuntime() (*DirectRuntime, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	frames := make(chan api.Frame, 16)
	ctx, cancel := context.WithCancel(context.Background())
	d := &DirectRuntime{rt: initd.NewRuntimeAPI(chanSender(frames), nil), frames: frames, cancel: cancel, done: make(chan struct{})}
	d.srv = &http.Server{Handler: d.rt}
	go func() { _ = d.srv.Serve(ln) }()
	go func() { // the runtime: /next, then /response with the event
		defer close(d.done)
		base := "http://" + ln.Addr().String() + "/2018-06-01/runtime/"
		hc := &http.Client{Transport: &http.Transport{}}
		defer hc.CloseIdleConnections()
		for ctx.Err() == nil {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"invocation/next", nil)
			resp, err := hc.Do(req)
			if err != nil {
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			id := resp.Header.Get("Lambda-Runtime-Aws-Request-Id")
			req, _ = http.NewRequestWithContext(ctx, http.MethodPost, base+"invocation/"+id+"/response", bytes.NewReader(body))
			resp, err = hc.Do(req)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	return d, nil
}

// Close stops the runtime loop and the server.
func (d *DirectRuntime) Close() {
	d.cancel()
	_ = d.srv.Close()
	<-d.done
}

// Call delivers one invocation and waits for its response frame, which
// must echo payload.
func (d *DirectRuntime) Call(ctx context.Context, id string, payload []byte) error {
	err := d.rt.Deliver(ctx, api.Frame{Kind: api.FrameInvoke, Meta: api.FrameMeta{
		RequestID: id, DeadlineMs: time.Now().Add(10 * time.Second).UnixMilli(),
	}, Body: payload})
	if err != nil {
		return err
	}
	for {
		select {
		case f := <-d.frames:
			switch f.Kind {
			case api.FrameResponse:
				if f.Meta.RequestID != id || !bytes.Equal(f.Body, payload) {
					return fmt.Errorf("response %q %s, want %q %s", f.Meta.RequestID, f.Body, id, payload)
				}
				return nil
			case api.FrameError:
				return fmt.Errorf("error frame: %s", f.Body)
			}
			// FrameReady: the runtime is parked on /next.
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
