package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The control plane's fault tests run real components an operator would
// put around several schedulers: HAProxy in front of them (Debian's
// haproxy) and, for the "NATS the operator already runs" case, a cluster of
// Debian's nats-server. Both come from .ci/install-deps.

// FreeAddr returns a loopback address with a port free at the time of the
// call.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// HAProxy is a haproxy process balancing HTTP over backends.
type HAProxy struct {
	Addr string // where clients connect
	cmd  *exec.Cmd
	done chan struct{}
}

// URL is the HTTP address of the front door.
func (h *HAProxy) URL() string { return "http://" + h.Addr }

// haproxyConfig is a minimal front door for schedulers: round robin,
// health checks on /healthz every 500 ms, a connection that could not be
// made retried on another backend (retries + option redispatch; nothing
// that reached a scheduler is sent twice: an invocation would run twice),
// and a server timeout (20 s) above the test functions' timeouts, so a call
// caught on a scheduler that stopped answering gets the balancer's 504.
func haproxyConfig(listen string, backends []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 120s
  timeout server 20s
  retries 3
  option redispatch
  retry-on conn-failure
frontend amber
  bind %s
  default_backend schedulers
backend schedulers
  balance roundrobin
  option httpchk GET /healthz
  default-server inter 500ms fall 2 rise 2
`, listen)
	for i, be := range backends {
		fmt.Fprintf(&b, "  server s%d %s check\n", i+1, be)
	}
	return b.String()
}

// StartHAProxy starts haproxy in front of backends (host:port each); it is
// stopped when the test ends.
func StartHAProxy(t testing.TB, backends []string) *HAProxy {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	Require(t, err)
	dir := t.TempDir()
	h := &HAProxy{Addr: FreeAddr(t), done: make(chan struct{})}
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(haproxyConfig(h.Addr, backends)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-q", "-f", cfg).CombinedOutput(); err != nil {
		t.Fatalf("haproxy rejects its config: %v\n%s", err, out)
	}
	logf, err := os.Create(filepath.Join(dir, "haproxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	h.cmd = exec.Command(bin, "-db", "-f", cfg)
	h.cmd.Stdout, h.cmd.Stderr = logf, logf
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	go func() { _ = h.cmd.Wait(); logf.Close(); close(h.done) }()
	t.Cleanup(func() {
		_ = h.cmd.Process.Kill()
		<-h.done
	})
	if err := waitListening(t.Context(), h.Addr, h.done, 10*time.Second); err != nil {
		b, _ := os.ReadFile(logf.Name())
		t.Fatalf("haproxy: %v\n%s", err, b)
	}
	return h
}

// waitListening waits until addr accepts connections, or the process
// whose done is given exits.
func waitListening(ctx context.Context, addr string, done <-chan struct{}, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("exited before listening on %s", addr)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s within %s", addr, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// NATSNode is one nats-server process of an external cluster.
type NATSNode struct {
	Name, Client, Route string
	dir                 string
	bin                 string
	cmd                 *exec.Cmd
	done                chan struct{}
	routes              []string
}

// NATSCluster is a cluster of Debian's nats-server with JetStream, the
// kind an operator already runs, started by a test.
type NATSCluster struct {
	Nodes []*NATSNode
}

// URL lists every node's client address, as --nats takes it.
func (c *NATSCluster) URL() string {
	var us []string
	for _, n := range c.Nodes {
		us = append(us, "nats://"+n.Client)
	}
	return strings.Join(us, ",")
}

// StartNATSCluster starts n nats-server processes with JetStream joined as
// one cluster; they are stopped when the test ends.
func StartNATSCluster(t testing.TB, n int) *NATSCluster {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	Require(t, err)
	c := &NATSCluster{}
	base := t.TempDir()
	for i := range n {
		c.Nodes = append(c.Nodes, &NATSNode{Name: fmt.Sprintf("n%d", i+1), Client: FreeAddr(t), Route: FreeAddr(t), dir: filepath.Join(base, fmt.Sprintf("n%d", i+1)), bin: bin})
	}
	for _, nd := range c.Nodes {
		for _, o := range c.Nodes {
			if o != nd {
				nd.routes = append(nd.routes, "nats://"+o.Route)
			}
		}
	}
	for _, nd := range c.Nodes {
		if err := nd.Start(t); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, nd := range c.Nodes {
			nd.Kill()
		}
	})
	return c
}

// Start starts (or restarts) the node on its folder.
func (nd *NATSNode) Start(t testing.TB) error {
	if err := os.MkdirAll(nd.dir, 0o700); err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(nd.Client)
	rhost, rport, _ := net.SplitHostPort(nd.Route)
	logf, err := os.OpenFile(filepath.Join(nd.dir, "nats.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	nd.cmd = exec.Command(nd.bin, "--name", nd.Name, "-a", host, "-p", port,
		"--js", "--store_dir", filepath.Join(nd.dir, "js"),
		"--cluster_name", "ext", "--cluster", "nats://"+rhost+":"+rport, "--routes", strings.Join(nd.routes, ","))
	nd.cmd.Stdout, nd.cmd.Stderr = logf, logf
	if err := nd.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start nats-server %s: %w", nd.Name, err)
	}
	nd.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); logf.Close(); close(done) }(nd.cmd, nd.done)
	if err := waitListening(t.Context(), nd.Client, nd.done, 10*time.Second); err != nil {
		b, _ := os.ReadFile(filepath.Join(nd.dir, "nats.log"))
		return fmt.Errorf("nats-server %s: %v\n%s", nd.Name, err, b)
	}
	return nil
}

// Kill stops the node with SIGKILL and waits for it.
func (nd *NATSNode) Kill() {
	if nd.cmd == nil || nd.cmd.Process == nil {
		return
	}
	select {
	case <-nd.done:
	default:
		_ = nd.cmd.Process.Kill()
		<-nd.done
	}
}
