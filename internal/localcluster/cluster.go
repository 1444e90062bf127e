package localcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/amberfn/amber/agent"
	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/scheduler"
)

// ClusterConfig says what StartCluster brings up.
type ClusterConfig struct {
	Dir    string // data folder: containerd, scheduler database, agent state, env file
	Agents int    // how many agents (default 2)
	Listen string // scheduler address (default 127.0.0.1:0); with several, the first's (the others take the next ports)
	// Schedulers is how many schedulers (default 1). One runs in this
	// process on DIR/scheduler, as always. Several run as `amber
	// scheduler` processes of SchedulerBin, on DIR/scheduler-1 …, their
	// embedded NATS nodes joined as one cluster on loopback.
	Schedulers   int
	SchedulerBin string
	InitBin      string       // path of the static amber-init binary
	Token        string       // API token; made and kept in Dir/token when empty
	CapacityMB   int          // per agent (default 4096)
	Log          *slog.Logger // default slog.Default()
	// Extra options for the scheduler and for every agent's containerd
	// launcher (image limits, for one).
	SchedulerOptions  []scheduler.Option
	ContainerdOptions []agent.ContainerdOption
	// Server sets the timeouts and connection bound of the scheduler's
	// and the agents' HTTP servers (default: api's defaults).
	Server []api.ServerOption
}

// Cluster is a local amber cluster: a private containerd, a scheduler and
// agents, all on loopback.
type Cluster struct {
	Dir           string
	Token         string
	SchedulerURL  string   // the first scheduler's
	SchedulerURLs []string // every scheduler's
	Containerd    *Containerd
	Scheduler     *scheduler.Scheduler // the in-process scheduler (nil with several)
	Schedulers    []*SchedulerProcess  // the scheduler processes (with several)
	Agents        []*agent.Agent

	procs     []*SchedulerProcess // started so far, stopped by Stop
	accessKey scheduler.AccessKey // with several schedulers

	cancel  context.CancelFunc
	wg      sync.WaitGroup
	servers []*api.Server
	srvOpts []api.ServerOption
	closers []func() error
}

// StartCluster brings up a cluster and returns once every agent has
// registered with the scheduler. Stop it with Stop.
func StartCluster(ctx context.Context, cfg ClusterConfig) (_ *Cluster, err error) {
	if cfg.Agents <= 0 {
		cfg.Agents = 2
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Schedulers <= 0 {
		cfg.Schedulers = 1
	}
	if cfg.CapacityMB == 0 {
		cfg.CapacityMB = 4096
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.InitBin == "" {
		return nil, errors.New("cluster: no amber-init binary given")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	c := &Cluster{Dir: cfg.Dir, srvOpts: cfg.Server}
	if _, err := api.NewServer(http.NotFoundHandler(), cfg.Server...); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = cancel
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if c.Token, err = loadToken(cfg.Dir, cfg.Token); err != nil {
		return nil, err
	}
	if c.Containerd, err = StartContainerd(ctx, filepath.Join(cfg.Dir, "containerd")); err != nil {
		return nil, err
	}
	if cfg.Schedulers > 1 {
		if len(cfg.SchedulerOptions) > 0 {
			return nil, errors.New("cluster: scheduler options apply to an in-process scheduler, not to several scheduler processes")
		}
		if err := c.startSchedulerProcesses(ctx, cfg); err != nil {
			return nil, err
		}
		c.SchedulerURL = c.SchedulerURLs[0]
	} else {
		c.Scheduler, err = scheduler.New(append([]scheduler.Option{
			scheduler.WithDataDir(filepath.Join(cfg.Dir, "scheduler")),
			scheduler.WithToken(c.Token),
			scheduler.WithLogger(cfg.Log.With("component", "scheduler")),
		}, cfg.SchedulerOptions...)...)
		if err != nil {
			return nil, fmt.Errorf("scheduler: %w", err)
		}
		c.closers = append(c.closers, c.Scheduler.Close)
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("scheduler listen on %s: %w", cfg.Listen, err)
		}
		c.SchedulerURL = "http://" + ln.Addr().String()
		c.SchedulerURLs = []string{c.SchedulerURL}
		c.serve(ln, c.Scheduler.Handler())
	}

	// Agents know every scheduler and move to the next when one goes.
	client := c.Client()
	for i := 1; i <= cfg.Agents; i++ {
		name := fmt.Sprintf("agent-%d", i)
		log := cfg.Log.With("component", "agent")
		ctr, err := agent.NewContainerd(c.Containerd.Address, name, cfg.InitBin,
			filepath.Join(cfg.Dir, "agents", name), client, log, cfg.ContainerdOptions...)
		if err != nil {
			return nil, err
		}
		c.closers = append(c.closers, ctr.Close)
		if n, err := ctr.Cleanup(ctx); err != nil {
			return nil, fmt.Errorf("%s: clean up leftovers: %w", name, err)
		} else if n > 0 {
			log.Info("removed leftover instances", "agent", name, "count", n)
		}
		aln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		a, err := agent.New(client,
			agent.WithName(name),
			agent.WithAdvertiseURL("http://"+aln.Addr().String()),
			agent.WithToken(c.Token),
			agent.WithCapacityMB(cfg.CapacityMB),
			agent.WithLauncher(ctr),
			agent.WithLogger(log),
		)
		if err != nil {
			aln.Close()
			return nil, err
		}
		c.Agents = append(c.Agents, a)
		c.serve(aln, a.Handler())
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			_ = a.Run(runCtx)
		}()
	}
	// Every scheduler must know every agent (with several, through the
	// heartbeats they share over NATS).
	for _, u := range c.SchedulerURLs {
		if err := c.waitAgents(ctx, api.NewClient(u, api.WithToken(c.Token)), cfg.Agents); err != nil {
			return nil, fmt.Errorf("scheduler %s: %w", u, err)
		}
	}
	if err := c.writeEnv(); err != nil {
		return nil, err
	}
	if err := c.writeAWSCredentials(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cluster) serve(ln net.Listener, h http.Handler) {
	srv, _ := api.NewServer(h, c.srvOpts...) // checked by StartCluster
	c.servers = append(c.servers, srv)
	go func() { _ = srv.Serve(ln) }()
}

func (c *Cluster) waitAgents(ctx context.Context, client *api.Client, n int) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		agents, err := client.Agents(ctx)
		ready := 0
		for _, a := range agents {
			if a.State == api.AgentReady {
				ready++
			}
		}
		if err == nil && ready >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d agents registered within 15s (last error: %v)", ready, n, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Client returns a client for the cluster's schedulers (every one, the
// next tried when one cannot be reached).
func (c *Cluster) Client() *api.Client {
	return api.NewClient(strings.Join(c.SchedulerURLs, ","), api.WithToken(c.Token))
}

// EnvFile is the path of the file with the export lines for AMBER_SCHEDULER and AMBER_TOKEN.
func (c *Cluster) EnvFile() string { return filepath.Join(c.Dir, "env") }

func (c *Cluster) writeEnv() error {
	body := fmt.Sprintf("export AMBER_SCHEDULER=%s\nexport AMBER_TOKEN=%s\n", strings.Join(c.SchedulerURLs, ","), c.Token)
	return os.WriteFile(c.EnvFile(), []byte(body), 0o600)
}

// AWSProfile is the profile in AWSCredentialsFile.
const AWSProfile = "amber"

// AWSCredentialsFile is the path of the AWS shared credentials file with the
// scheduler's access key under the [amber] profile, so that
//
//	AWS_SHARED_CREDENTIALS_FILE=DIR/aws-credentials aws --profile amber --region us-east-1 \
//	  lambda invoke --endpoint-url "$AMBER_SCHEDULER" --function-name hello …
//
// reaches the Lambda-compatible endpoint.
func (c *Cluster) AWSCredentialsFile() string { return filepath.Join(c.Dir, "aws-credentials") }

func (c *Cluster) writeAWSCredentials() error {
	k := c.accessKey
	if c.Scheduler != nil {
		k = c.Scheduler.AccessKey()
	}
	body := fmt.Sprintf("[%s]\naws_access_key_id = %s\naws_secret_access_key = %s\n", AWSProfile, k.AccessKeyID, k.SecretAccessKey)
	p := c.AWSCredentialsFile()
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		return err
	}
	return os.Chmod(p, 0o600) // an existing file keeps its mode in WriteFile
}

// Stop stops the agents (removing their instances), the scheduler and
// containerd, in that order.
func (c *Cluster) Stop() {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait() // agents remove their instances as Run returns
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := len(c.servers) - 1; i >= 0; i-- {
		_ = c.servers[i].Shutdown(ctx)
	}
	for i := len(c.closers) - 1; i >= 0; i-- {
		_ = c.closers[i]()
	}
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop(15 * time.Second)
	}
	if c.Containerd != nil {
		_ = c.Containerd.Stop()
	}
	_ = os.Remove(c.EnvFile())
}

// StopScheduler stops the scheduler as an operator would: its HTTP
// server shuts down, letting requests in flight finish for up to grace
// (those still running then are cut); then the Scheduler closes (async
// deliveries in flight get their drain time, the registry and ledger
// close). The agents keep running; StartScheduler starts a new one.
func (c *Cluster) StopScheduler(ctx context.Context, grace time.Duration) error {
	if len(c.servers) == 0 || len(c.closers) == 0 || c.Scheduler == nil {
		return errors.New("stop scheduler: the cluster has no scheduler")
	}
	// StartCluster serves the scheduler first and registers its Close first.
	srv := c.servers[0]
	sctx, cancel := context.WithTimeout(ctx, grace)
	err := srv.Shutdown(sctx)
	cancel()
	if err != nil {
		_ = srv.Close()
	}
	if err := c.Scheduler.Close(); err != nil {
		return fmt.Errorf("stop scheduler: close: %w", err)
	}
	c.closers[0] = func() error { return nil }
	return nil
}

// StartScheduler starts a new scheduler on the data folder, token and
// address of the one StopScheduler stopped, waiting up to 10 s for the
// address to be free. Agents find it again with their next heartbeat.
// opts are added to the scheduler's options (a logger).
func (c *Cluster) StartScheduler(opts ...scheduler.Option) error {
	if len(c.procs) > 0 {
		return errors.New("start scheduler: the cluster runs scheduler processes, not one in-process scheduler")
	}
	if len(c.servers) == 0 || len(c.closers) == 0 {
		return errors.New("start scheduler: the cluster has no scheduler")
	}
	all := append([]scheduler.Option{
		scheduler.WithDataDir(filepath.Join(c.Dir, "scheduler")),
		scheduler.WithToken(c.Token),
	}, opts...)
	s, err := scheduler.New(all...)
	if err != nil {
		return fmt.Errorf("start scheduler: %w", err)
	}
	addr := strings.TrimPrefix(c.SchedulerURL, "http://")
	var ln net.Listener
	deadline := time.Now().Add(10 * time.Second)
	for {
		ln, err = net.Listen("tcp", addr)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			_ = s.Close()
			return fmt.Errorf("start scheduler: listen on %s: %w", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.Scheduler = s
	c.closers[0] = s.Close
	srv, _ := api.NewServer(s.Handler(), c.srvOpts...) // checked by StartCluster
	c.servers[0] = srv
	go func() { _ = srv.Serve(ln) }()
	return nil
}

func loadToken(dir, given string) (string, error) {
	if given != "" {
		return given, nil
	}
	return scheduler.LoadOrCreateToken(dir)
}
