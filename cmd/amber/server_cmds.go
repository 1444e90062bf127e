package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/amberfn/amber/agent"
	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/api/ociarchive"
	"github.com/amberfn/amber/internal/localcluster"
	"github.com/amberfn/amber/ops"
	"github.com/amberfn/amber/scheduler"
	"github.com/amberfn/amber/tui"
)

// serverFlags are the timeouts and the connection bound of a server.
type serverFlags struct {
	header, body, idle *time.Duration
	maxConns           *int
}

func addServerFlags(fs *flag.FlagSet) serverFlags {
	return serverFlags{
		header:   fs.Duration("header-timeout", api.DefaultHeaderTimeout, "most time a request's headers may take to arrive"),
		body:     fs.Duration("body-timeout", api.DefaultBodyTimeout, "most time a request's headers and body may take to arrive (not the handler: invocations run their full timeout)"),
		idle:     fs.Duration("idle-timeout", api.DefaultIdleTimeout, "close a keep-alive connection idle this long"),
		maxConns: fs.Int("max-conns", api.DefaultMaxConns, "most connections served at once; more wait to be accepted"),
	}
}

func (f serverFlags) options(log *slog.Logger) []api.ServerOption {
	return []api.ServerOption{
		api.WithHeaderTimeout(*f.header), api.WithBodyTimeout(*f.body),
		api.WithIdleTimeout(*f.idle), api.WithMaxConns(*f.maxConns),
		api.WithErrorLog(slog.NewLogLogger(log.Handler(), slog.LevelWarn)),
	}
}

// serve runs srv on ln until ctx ends.
func serve(ctx context.Context, ln net.Listener, srv *api.Server, certKey ...string) error {
	errc := make(chan error, 1)
	go func() {
		if len(certKey) == 2 && certKey[0] != "" {
			errc <- srv.ServeTLS(ln, certKey[0], certKey[1])
			return
		}
		errc <- srv.Serve(ln)
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	}
}

func cmdScheduler(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("scheduler", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:7700", "address to serve the API on")
	data := fs.String("data", "/var/lib/amber/scheduler", "data folder (registry, images)")
	token := fs.String("token", "", "API token (default: $AMBER_TOKEN, else made in the data folder)")
	join := fs.String("join-token", "", "token agents join with (default: made in the data folder)")
	unpackedMB := fs.Int64("image-unpacked-mb", ociarchive.DefaultMaxUnpackedBytes>>20, "refuse an uploaded image whose layers unpack to more than this, MB")
	tlsf := addTLSFlags(fs, "agents")
	srvf := addServerFlags(fs)
	natsf := addNATSFlags(fs)
	config := fs.String("config", "", "configuration file (default $AMBER_CONFIG, else /etc/amber/amber.json if present)")
	hc, err := parseServerFlags(fs, args, "scheduler", config, tlsf)
	if err != nil {
		return err
	}
	natsCfg, err := natsf.config()
	if err != nil {
		return err
	}
	if *join == "" {
		tok, err := scheduler.LoadOrCreateJoinToken(*data)
		if err != nil {
			return err
		}
		*join = tok
	}
	log := newLogger(stderr)
	if *token == "" {
		tok, err := scheduler.LoadOrCreateToken(*data)
		if err != nil {
			return err
		}
		*token = tok
		log.Info("API token in the data folder", "file", filepath.Join(*data, scheduler.TokenFile))
	}
	s, err := scheduler.New(scheduler.WithDataDir(*data), scheduler.WithToken(*token), scheduler.WithJoinToken(*join), scheduler.WithHTTPClient(hc), scheduler.WithLogger(log),
		scheduler.WithMaxUnpackedBytes(*unpackedMB<<20), scheduler.WithNATS(natsCfg))
	if err != nil {
		return err
	}
	defer s.Close()
	srv, err := api.NewServer(s.Handler(), srvf.options(log)...)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	log.Info("scheduler serving", "addr", ln.Addr().String(), "data", *data)
	_ = ops.Notify("READY=1")
	defer ops.Notify("STOPPING=1")
	return serve(ctx, ln, srv, *tlsf.cert, *tlsf.key)
}

func cmdAgent(ctx context.Context, args []string, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "drain" || args[0] == "undrain") {
		if len(args) != 2 {
			return fmt.Errorf("usage: amber agent %s NAME", args[0])
		}
		if err := client().Drain(ctx, args[1], args[0] == "drain"); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "agent %s: %sed\n", args[1], args[0])
		return nil
	}
	host, _ := os.Hostname()
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	name := fs.String("name", sanitize(host), "agent name ([a-z0-9-])")
	listen := fs.String("listen", "127.0.0.1:7701", "address to serve the agent API on")
	advertise := fs.String("advertise", "", "URL the scheduler reaches this agent at (default http://LISTEN)")
	sched := fs.String("scheduler", "http://127.0.0.1:7700", "scheduler URL, or every scheduler's, comma-separated: heartbeats move to the next on a connection error or 5xx ($AMBER_SCHEDULER)")
	token := fs.String("token", "", "the scheduler's join token (or its API token) ($AMBER_TOKEN)")
	config := fs.String("config", "", "configuration file (default $AMBER_CONFIG, else /etc/amber/amber.json if present)")
	ctrd := fs.String("containerd", "/run/containerd/containerd.sock", "containerd socket")
	initBin := fs.String("init", defaultInit(), "path of the static amber-init binary")
	state := fs.String("state", "/var/lib/amber/agent", "state folder")
	capacity := fs.Int("capacity", 4096, "memory for instances, MB")
	keepAlive := fs.Duration("keep-alive", 10*time.Minute, "how long an idle instance lives")
	unpackedMB := fs.Int64("image-unpacked-mb", ociarchive.DefaultMaxUnpackedBytes>>20, "refuse an image whose layers unpack to more than this, MB")
	freezeAfter := fs.Duration("freeze-after", agent.DefaultFreezeAfter, "idle time before an instance is frozen (0: at once; negative: never)")
	tlsf := addTLSFlags(fs, "the scheduler")
	srvf := addServerFlags(fs)
	hc, err := parseServerFlags(fs, args, "agent", config, tlsf)
	if err != nil {
		return err
	}
	log := newLogger(stderr)
	client := api.NewClient(*sched, api.WithToken(*token), api.WithHTTPClient(hc))
	ctr, err := agent.NewContainerd(*ctrd, *name, *initBin, *state, client, log, agent.WithMaxUnpackedBytes(*unpackedMB<<20))
	if err != nil {
		return err
	}
	defer ctr.Close()
	// What a killed predecessor left goes first. One that cannot be
	// removed (its shim stuck) does not keep this agent from serving: it
	// is logged, and tried again when this agent stops.
	if n, err := ctr.Cleanup(ctx); err != nil {
		log.Warn("could not remove every leftover instance", "found", n, "err", err.Error())
	} else if n > 0 {
		log.Info("removed leftover instances", "count", n)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if *advertise == "" {
		scheme := "http://"
		if *tlsf.cert != "" {
			scheme = "https://"
		}
		*advertise = scheme + ln.Addr().String()
	}
	a, err := agent.New(client, agent.WithName(*name), agent.WithAdvertiseURL(*advertise), agent.WithToken(*token),
		agent.WithCapacityMB(*capacity), agent.WithKeepAlive(*keepAlive), agent.WithFreezeAfter(*freezeAfter), agent.WithLauncher(ctr), agent.WithLogger(log))
	if err != nil {
		return err
	}
	srv, err := api.NewServer(a.Handler(), srvf.options(log)...)
	if err != nil {
		return err
	}
	log.Info("agent serving", "addr", ln.Addr().String(), "scheduler", *sched)
	_ = ops.Notify("READY=1")
	defer ops.Notify("STOPPING=1")
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, ln, srv, *tlsf.cert, *tlsf.key) }()
	runErr := a.Run(ctx)
	return errors.Join(runErr, <-errc)
}

// defaultInit is amber-init next to the amber binary.
func defaultInit() string {
	exe, err := os.Executable()
	if err != nil {
		return "amber-init"
	}
	return filepath.Join(filepath.Dir(exe), "amber-init")
}

func sanitize(s string) string {
	s = strings.ToLower(s)
	var b strings.Builder
	for _, r := range s {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	if b.Len() == 0 || b.Len() > 63 {
		return "agent"
	}
	return b.String()
}

func defaultDataDir() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return ".amber"
	}
	return filepath.Join(home, ".amber")
}

func cmdUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	agents := fs.Int("agents", 2, "number of agents")
	schedulers := fs.Int("schedulers", 1, "number of schedulers: 1 runs in this process on DIR/scheduler; more run as amber scheduler processes on DIR/scheduler-N, joined as one control plane")
	data := fs.String("data", defaultDataDir(), "data folder")
	noConsole := fs.Bool("no-console", false, "do not open the console; run until Ctrl-C or SIGTERM")
	listen := fs.String("listen", "127.0.0.1:7700", "scheduler address (with several, the first's; the others take the next ports)")
	examples := fs.String("examples", filepath.Join(filepath.Dir(defaultInit()), "examples"), "folder of IMAGE.tar archives to deploy (the file name is the function name)")
	initBin := fs.String("init", defaultInit(), "path of the static amber-init binary")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *agents < 1 || *agents > 16 {
		return api.Invalid("agents", "%d: want 1–16", *agents)
	}
	if *schedulers < 1 || *schedulers > 7 {
		return api.Invalid("schedulers", "%d: want 1–7", *schedulers)
	}
	var self string
	if *schedulers > 1 {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find the amber binary for the scheduler processes: %w", err)
		}
		self = exe
	}
	if err := os.MkdirAll(*data, 0o700); err != nil {
		return err
	}
	logPath := filepath.Join(*data, "amber.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	logOut := io.Writer(logFile)
	if *noConsole {
		logOut = io.MultiWriter(logFile, stderr)
	}
	log := newLogger(logOut)
	fmt.Fprintf(stdout, "starting containerd, %d scheduler(s) and %d agents in %s …\n", *schedulers, *agents, *data)
	cl, err := localcluster.StartCluster(ctx, localcluster.ClusterConfig{
		Dir: *data, Agents: *agents, Listen: *listen, InitBin: *initBin, Log: log,
		Schedulers: *schedulers, SchedulerBin: self,
	})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(stdout, "stopping the cluster …")
		cl.Stop()
	}()
	// Put this amber on PATH for shells that source DIR/env.
	if env, err := os.OpenFile(cl.EnvFile(), os.O_APPEND|os.O_WRONLY, 0o600); err == nil {
		fmt.Fprintf(env, "export PATH=%s:\"$PATH\"\n", filepath.Dir(defaultInit()))
		env.Close()
	}
	if err := deployExamples(ctx, cl.Client(), *examples, stdout); err != nil {
		return err
	}
	for _, p := range cl.Schedulers {
		fmt.Fprintf(stdout, "%s: %s, pid %d, data %s, log %s\n", p.Name, p.URL, p.Pid(), p.Dir, p.Log)
	}
	fmt.Fprintf(stdout, "cluster up: scheduler %s, log %s\nin another shell:  . %s && amber invoke hello --data '{\"name\":\"amber\"}'\n",
		strings.Join(cl.SchedulerURLs, ","), logPath, cl.EnvFile())
	if *noConsole {
		<-ctx.Done()
		return nil
	}
	return tui.Run(ctx, cl.Client())
}

// deployExamples deploys every NAME.tar in dir as function NAME.
func deployExamples(ctx context.Context, c *api.Client, dir string, stdout io.Writer) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stdout, "no example images in %s (run `go tool task build`); nothing deployed\n", dir)
		return nil
	}
	if err != nil {
		return err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".tar")
		if !ok || e.IsDir() {
			continue
		}
		if err := deployFile(ctx, c, name, filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("deploy example %s: %w", name, err)
		}
		fmt.Fprintf(stdout, "deployed %s\n", name)
	}
	return nil
}

func deployFile(ctx context.Context, c *api.Client, name, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	digest, err := c.UploadImage(ctx, f)
	if err != nil {
		return err
	}
	_, err = c.Deploy(ctx, api.FunctionSpec{Name: name, Image: digest, MemoryMB: api.DefaultMemory, Timeout: api.Duration(api.DefaultTimeout)})
	return err
}

// parseServerFlags parses a server command's flags, applies AMBER_* and
// the configuration file's section to those not given, checks the TLS
// flags and returns the HTTP client trusting their CA.
func parseServerFlags(fs *flag.FlagSet, args []string, section string, config *string, tlsf tlsFlags) (*http.Client, error) {
	if _, err := parse(fs, args); err != nil {
		return nil, err
	}
	if err := configure(fs, section, *config); err != nil {
		return nil, err
	}
	if err := tlsf.check(); err != nil {
		return nil, err
	}
	return httpClient(*tlsf.ca)
}
