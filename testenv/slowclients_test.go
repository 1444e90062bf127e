package testenv_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// TestSlowClientsDoNotStarveInvocations holds 500 connections that declare
// a 6 MB body and send it a byte a second (to the public route, the
// authenticated invoke endpoint and an agent) while clients invoke
// normally: every invocation succeeds, one that runs longer than the body
// timeout included, and every slow connection is closed by the server once
// its body deadline passes.
func TestSlowClientsDoNotStarveInvocations(t *testing.T) {
	const (
		slow        = 500
		bodyTimeout = 2 * time.Second
		// hang bounds how long a slow connection may stay open: far more
		// than the deadline, so that only a server that never closes it
		// fails the test.
		hang = 60 * time.Second
	)
	env := reliabilityCluster(t, "amber-slow-", 1,
		api.WithHeaderTimeout(bodyTimeout), api.WithBodyTimeout(bodyTimeout))
	c := env.cl.Client()
	deploy(t, c, "hello", env.helloTar)
	sleepy := shellImage(t, env.dir, "sleepy", `handler() { /var/task/busybox sleep 4; printf '{"slept":true}'; }`)
	deploy(t, c, "sleepy", sleepy, func(s *api.FunctionSpec) { s.Timeout = api.Duration(20 * time.Second) })
	putRoute(t, env.cl.SchedulerURL, env.cl.Token, "hello", "/hello")
	if _, err := c.Invoke(t.Context(), "hello", []byte(`{"name":"warm"}`)); err != nil {
		t.Fatalf("first invoke: %v", err)
	}
	agents, err := c.Agents(t.Context())
	if err != nil || len(agents) == 0 {
		t.Fatalf("agents: %v %v", agents, err)
	}
	sched, _ := url.Parse(env.cl.SchedulerURL)
	agent, _ := url.Parse(agents[0].URL)
	targets := []struct {
		host, path, auth string
	}{
		{sched.Host, "/r/hello", ""},
		{sched.Host, "/v1/functions/hello/invoke", "Bearer " + env.cl.Token},
		{agent.Host, "/v1/functions/hello/invoke", "Bearer " + env.cl.Token},
	}

	// The slow connections.
	var (
		wg             sync.WaitGroup
		closed, opened atomic.Int32
		errMu          sync.Mutex
		slowErrs       []string
	)
	slowErr := func(format string, args ...any) {
		errMu.Lock()
		defer errMu.Unlock()
		if len(slowErrs) < 10 {
			slowErrs = append(slowErrs, fmt.Sprintf(format, args...))
		}
	}
	for i := range slow {
		tg := targets[i%len(targets)]
		wg.Go(func() {
			conn, err := net.Dial("tcp", tg.host)
			if err != nil {
				slowErr("dial %s: %v", tg.host, err)
				return
			}
			defer conn.Close()
			opened.Add(1)
			head := "POST " + tg.path + " HTTP/1.1\r\nHost: " + tg.host + "\r\nContent-Length: 6000000\r\n"
			if tg.auth != "" {
				head += "Authorization: " + tg.auth + "\r\n"
			}
			if _, err := io.WriteString(conn, head+"\r\n"); err != nil {
				slowErr("write headers: %v", err)
				return
			}
			stop := make(chan struct{})
			go func() { // a byte a second until the server hangs up
				tick := time.NewTicker(time.Second)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
						if _, err := conn.Write([]byte{'x'}); err != nil {
							return
						}
					}
				}
			}()
			defer close(stop)
			conn.SetReadDeadline(time.Now().Add(hang))
			_, err = io.Copy(io.Discard, conn)
			if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
				slowErr("%s%s: still open after %s", tg.host, tg.path, hang)
				return
			}
			closed.Add(1)
		})
	}

	// Normal invocations meanwhile, until every slow connection is closed.
	ctx, cancel := context.WithCancel(t.Context())
	var (
		iwg        sync.WaitGroup
		ok, failed atomic.Int32
		invErr     atomic.Value
	)
	iwg.Go(func() {
		res, err := c.Invoke(t.Context(), "sleepy", []byte(`{}`))
		if err != nil || !bytes.Contains(res.Payload, []byte("slept")) {
			failed.Add(1)
			invErr.Store(fmt.Sprintf("sleepy (outlives the body timeout): %v", err))
			return
		}
		ok.Add(1)
	})
	for w := range 4 {
		iwg.Go(func() {
			for n := 0; ctx.Err() == nil || n == 0; n++ {
				var err error
				if w%2 == 0 {
					_, err = c.Invoke(t.Context(), "hello", []byte(`{"name":"x"}`))
				} else {
					err = routeCall(t.Context(), env.cl.SchedulerURL+"/r/hello")
				}
				if err != nil {
					failed.Add(1)
					invErr.Store(err.Error())
					continue
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	cancel()
	iwg.Wait()
	for _, e := range slowErrs {
		t.Error(e)
	}
	t.Logf("%d slow connections opened, %d closed by the server; %d invocations succeeded, %d failed", opened.Load(), closed.Load(), ok.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Errorf("%d invocations failed while slow clients were held; last: %v", failed.Load(), invErr.Load())
	}
	if opened.Load() != slow || closed.Load() != slow {
		t.Errorf("%d of %d slow connections opened, %d closed by the server", opened.Load(), slow, closed.Load())
	}
}

func putRoute(t *testing.T, base, token, fn, path string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, base+"/v1/functions/"+fn+"/route",
		strings.NewReader(`{"path":"`+path+`","methods":["POST"]}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("put route: %s %s", resp.Status, b)
	}
}

func routeCall(ctx context.Context, u string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(`{"name":"route"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("route: %s %s", resp.Status, b)
	}
	return nil
}
