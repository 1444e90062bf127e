package api_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

func TestNewServerRefusesBadSettings(t *testing.T) {
	for _, tc := range []struct {
		opt   api.ServerOption
		field string
	}{
		{api.WithHeaderTimeout(0), "header-timeout"},
		{api.WithBodyTimeout(-time.Second), "body-timeout"},
		{api.WithIdleTimeout(0), "idle-timeout"},
		{api.WithMaxConns(0), "max-conns"},
	} {
		t.Run(tc.field, func(t *testing.T) {
			_, err := api.NewServer(http.NotFoundHandler(), tc.opt)
			var fe *api.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, api.ErrInvalid) {
				t.Fatalf("err = %v, want a FieldError for %s", err, tc.field)
			}
		})
	}
	if _, err := api.NewServer(http.NotFoundHandler()); err != nil {
		t.Fatalf("defaults: %v", err)
	}
}

// fakeListener hands out the connections pushed into conns and runs
// onAccept before each.
type fakeListener struct {
	conns    chan net.Conn
	onAccept func(n int)
	n        int
}

func (l *fakeListener) Accept() (net.Conn, error) {
	l.n++
	l.onAccept(l.n)
	c, ok := <-l.conns
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}
func (l *fakeListener) Close() error   { return nil }
func (l *fakeListener) Addr() net.Addr { return &net.TCPAddr{} }

func TestLimitListenerWaitsForAFreeSlot(t *testing.T) {
	const limit = 2
	var closed atomic.Bool
	early := make(chan int, 1)
	inner := &fakeListener{conns: make(chan net.Conn, limit+1)}
	inner.onAccept = func(n int) {
		// The inner Accept may run for connection limit+1 only once a
		// slot is free again.
		if n == limit+1 && !closed.Load() {
			early <- n
		}
	}
	for range limit + 1 {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		inner.conns <- a
	}
	ln := api.LimitListener(inner, limit)
	var got []net.Conn
	for range limit {
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, c)
	}
	third := make(chan net.Conn)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		third <- c
	}()
	closed.Store(true)
	got[0].Close()
	got[0].Close() // a second Close gives back nothing more
	if c := <-third; c == nil {
		t.Fatal("no third connection")
	}
	select {
	case n := <-early:
		t.Fatalf("inner Accept %d ran while %d connections were open", n, limit)
	default:
	}
}

func TestLimitListenerCloseEndsAWaitingAccept(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := api.LimitListener(inner, 1)
	d, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error)
	go func() { _, err := ln.Accept(); done <- err }()
	ln.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
}

// startServer serves h with opts on loopback.
func startServer(t *testing.T, h http.Handler, opts ...api.ServerOption) string {
	t.Helper()
	srv, err := api.NewServer(h, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// waitClosed reads from c until the server closes it, failing the test if
// that does not happen within limit (a hang, not a measurement).
func waitClosed(t *testing.T, c net.Conn, limit time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(limit))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server kept the connection open for %s", limit)
	}
}

func TestServerClosesSlowAndIdleConnections(t *testing.T) {
	var handled atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return
		}
		handled.Add(1)
		io.WriteString(w, "ok")
	})
	addr := startServer(t, h, api.WithHeaderTimeout(200*time.Millisecond),
		api.WithBodyTimeout(300*time.Millisecond), api.WithIdleTimeout(300*time.Millisecond))
	for _, tc := range []struct {
		name string
		send func(c net.Conn, r *bufio.Reader) error
	}{
		{"headers never finish", func(c net.Conn, _ *bufio.Reader) error {
			_, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\n")
			return err
		}},
		{"body trickles", func(c net.Conn, _ *bufio.Reader) error {
			if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6000000\r\n\r\n"); err != nil {
				return err
			}
			for range 3 { // well under the declared length, slower than the deadline allows
				if _, err := c.Write([]byte{'x'}); err != nil {
					return nil // closed already
				}
				time.Sleep(200 * time.Millisecond)
			}
			return nil
		}},
		{"keep-alive idle after one request", func(c net.Conn, r *bufio.Reader) error {
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				return err
			}
			resp, err := http.ReadResponse(r, nil)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 || resp.Close {
				return fmt.Errorf("first request: %s, close=%v", resp.Status, resp.Close)
			}
			_, err = io.Copy(io.Discard, resp.Body)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			r := bufio.NewReader(c)
			if err := tc.send(c, r); err != nil {
				t.Fatal(err)
			}
			waitClosed(t, c, 30*time.Second)
		})
	}
	if n := handled.Load(); n != 1 {
		t.Fatalf("%d requests handled, want only the keep-alive one", n)
	}
}

func TestServerBodyTimeoutDoesNotCutTheHandler(t *testing.T) {
	// The handler outlives the body timeout many times over, as a
	// synchronous invocation may outlive it; its context stays alive and
	// its answer arrives.
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		select {
		case <-time.After(time.Second):
		case <-r.Context().Done():
			return
		}
		fmt.Fprintf(w, "%s after the body", b)
	})
	addr := startServer(t, h, api.WithBodyTimeout(100*time.Millisecond), api.WithHeaderTimeout(100*time.Millisecond))
	var wg sync.WaitGroup
	for _, method := range []string{http.MethodPost, http.MethodGet} {
		wg.Go(func() {
			var body io.Reader
			if method == http.MethodPost {
				body = strings.NewReader("payload")
			}
			req, _ := http.NewRequestWithContext(t.Context(), method, "http://"+addr+"/", body)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("%s: %v", method, err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || !strings.HasSuffix(string(b), "after the body") {
				t.Errorf("%s: %s %q", method, resp.Status, b)
			}
		})
	}
	wg.Wait()
}

// TestServerBoundsConnections serves through the limit: the third client
// waits for a slot and is then served (TestLimitListenerWaitsForAFreeSlot
// shows it waits).
func TestServerBoundsConnections(t *testing.T) {
	release := make(chan struct{})
	var busy atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		busy.Add(1)
		<-release
		io.WriteString(w, "ok")
	})
	addr := startServer(t, h, api.WithMaxConns(2))
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		wg.Go(func() {
			tr := &http.Transport{DisableKeepAlives: true}
			resp, err := (&http.Client{Transport: tr}).Get("http://" + addr + "/")
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
		})
	}
	for busy.Load() < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	if n := busy.Load(); n > 2 {
		t.Fatalf("%d handlers running with max-conns 2", n)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := busy.Load(); n != 3 {
		t.Fatalf("%d requests served, want 3 (the third after a slot freed)", n)
	}
}
