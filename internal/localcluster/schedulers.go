package localcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/amberfn/amber/scheduler"
)

// SchedulerProcess is one `amber scheduler` process of a cluster started
// with Schedulers > 1: an operator may kill it to watch the others carry
// on.
type SchedulerProcess struct {
	Name    string // scheduler-N, also its NATS server name
	URL     string // its HTTP API
	Dir     string // its data folder, DIR/scheduler-N
	Cluster string // its NATS cluster address (loopback)
	Log     string // where its output goes, DIR/scheduler-N/scheduler.log
	Args    []string
	bin     string
	token   string
	cmd     *exec.Cmd
	done    chan error
}

// Kill ends the process with SIGKILL, as a crash would, and waits for it.
func (p *SchedulerProcess) Kill() { p.signalWait(syscall.SIGKILL) }

// Stop ends the process with SIGTERM (SIGKILL after grace).
func (p *SchedulerProcess) Stop(grace time.Duration) { p.stop(grace) }

// Pause stops the process (SIGSTOP): it holds its connections but answers
// nothing, as a machine cut off the network would; Resume lets it go on.
func (p *SchedulerProcess) Pause() error  { return p.cmd.Process.Signal(syscall.SIGSTOP) }
func (p *SchedulerProcess) Resume() error { return p.cmd.Process.Signal(syscall.SIGCONT) }

// Restart starts the process again on its data folder, with the same
// flags, and waits until it serves.
func (p *SchedulerProcess) Restart(ctx context.Context) error {
	select {
	case err := <-p.done:
		p.done <- err
	default:
		return fmt.Errorf("cluster: %s is still running", p.Name)
	}
	if err := p.start(p.bin, p.token); err != nil {
		return fmt.Errorf("cluster: restart %s: %w", p.Name, err)
	}
	return p.waitHealthy(ctx, 60*time.Second)
}

func (p *SchedulerProcess) signalWait(sig syscall.Signal) {
	select {
	case err := <-p.done:
		p.done <- err
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	p.done <- <-p.done
}

// Pid is the process id.
func (p *SchedulerProcess) Pid() int { return p.cmd.Process.Pid }

// startSchedulerProcesses starts n `amber scheduler` processes whose
// embedded NATS nodes join one cluster on loopback, sharing the token (as
// API and join token) and the Lambda endpoint's access key, and waits for
// each to answer /healthz.
func (c *Cluster) startSchedulerProcesses(ctx context.Context, cfg ClusterConfig) error {
	if cfg.SchedulerBin == "" {
		return errors.New("cluster: several schedulers need the amber binary (SchedulerBin)")
	}
	host, basePort, err := splitListen(cfg.Listen)
	if err != nil {
		return err
	}
	n := cfg.Schedulers
	procs := make([]*SchedulerProcess, n)
	for i := range procs {
		name := fmt.Sprintf("scheduler-%d", i+1)
		addr, err := freeLoopbackPort()
		if err != nil {
			return err
		}
		listen := net.JoinHostPort(host, "0")
		if basePort != 0 {
			listen = net.JoinHostPort(host, strconv.Itoa(basePort+i))
		} else if listen, err = freeLoopbackPort(); err != nil {
			return err
		}
		dir := filepath.Join(cfg.Dir, name)
		procs[i] = &SchedulerProcess{Name: name, URL: "http://" + listen, Dir: dir, Cluster: addr, Log: filepath.Join(dir, "scheduler.log")}
	}
	// Every scheduler answers the Lambda endpoint with the same key.
	key, err := scheduler.LoadOrCreateAccessKey(procs[0].Dir)
	if err != nil {
		return fmt.Errorf("cluster: access key: %w", err)
	}
	c.accessKey = key
	keyFile, err := os.ReadFile(filepath.Join(procs[0].Dir, scheduler.AccessKeyFile))
	if err != nil {
		return err
	}
	for i, p := range procs {
		if err := os.MkdirAll(p.Dir, 0o700); err != nil {
			return err
		}
		if i > 0 {
			if err := os.WriteFile(filepath.Join(p.Dir, scheduler.AccessKeyFile), keyFile, 0o600); err != nil {
				return err
			}
		}
		var peers []string
		for j, q := range procs {
			if j != i {
				peers = append(peers, q.Cluster)
			}
		}
		p.Args = []string{"scheduler",
			"--listen", strings.TrimPrefix(p.URL, "http://"), "--data", p.Dir,
			"--nats-name", p.Name, "--cluster-listen", p.Cluster, "--cluster-peers", strings.Join(peers, ","),
		}
		if err := p.start(cfg.SchedulerBin, c.Token); err != nil {
			return fmt.Errorf("cluster: %s: %w", p.Name, err)
		}
		c.procs = append(c.procs, p)
	}
	// They wait for each other (a JetStream quorum) before they serve.
	for _, p := range procs {
		if err := p.waitHealthy(ctx, 60*time.Second); err != nil {
			return err
		}
		c.SchedulerURLs = append(c.SchedulerURLs, p.URL)
	}
	c.Schedulers = procs
	return nil
}

func (p *SchedulerProcess) start(bin, token string) error {
	p.bin, p.token = bin, token
	logf, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(bin, p.Args...)
	// The token through the environment, not the command line (ps shows
	// that); the scheduler presents the same token to the agents.
	cmd.Env = append(os.Environ(), "AMBER_TOKEN="+token, "AMBER_JOIN_TOKEN="+token)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C in the terminal reaches amber up,
	// which stops the agents before the schedulers. Pdeathsig: a killed
	// amber up does not leave schedulers behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return err
	}
	p.cmd = cmd
	p.done = make(chan error, 1)
	go func() { p.done <- cmd.Wait() }()
	return nil
}

func (p *SchedulerProcess) waitHealthy(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	hc := &http.Client{Timeout: time.Second}
	for {
		resp, err := hc.Get(p.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case werr := <-p.done:
			p.done <- werr
			return fmt.Errorf("cluster: %s exited (%v) before serving; see %s", p.Name, werr, p.Log)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster: %s did not serve on %s within %s (last error: %v); see %s", p.Name, p.URL, within, err, p.Log)
		}
	}
}

// stop ends the process: SIGTERM, then SIGKILL after grace.
func (p *SchedulerProcess) stop(grace time.Duration) {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	select {
	case err := <-p.done:
		p.done <- err
		return // already gone (an operator killed it)
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		p.done <- <-p.done
	}
}

// splitListen splits the first scheduler's address; port 0 means free
// ports for every scheduler, else they take port, port+1, ….
func splitListen(listen string) (string, int, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", 0, fmt.Errorf("cluster: scheduler address %q: %w", listen, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, fmt.Errorf("cluster: scheduler address %q: bad port", listen)
	}
	return host, n, nil
}

// freeLoopbackPort returns a loopback address that was free a moment ago.
func freeLoopbackPort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
