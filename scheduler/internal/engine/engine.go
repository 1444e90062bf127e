// Package engine is the scheduler's storage and messaging engine: NATS with
// JetStream, either embedded in the scheduler process (the default, one
// node or several joined with cluster peers) or an external NATS cluster
// the operator runs.
//
// Durability: a lone embedded node writes JetStream with fsync on every
// write (SyncAlways), so what it acknowledges is on its disk. In a cluster,
// streams and buckets keep Replicas copies and JetStream acknowledges what
// a quorum of them holds; each node then fsyncs on NATS's own interval (two
// minutes) unless Fsync is FsyncAlways: a quorum of machines is the
// durability, and an fsync per write costs ~0.7 ms per invocation's ledger
// record on the disks measured (BENCH.md).
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// When an embedded node fsyncs (Config.Fsync).
const (
	FsyncAlways   = "always"
	FsyncInterval = "interval"
)

// ErrUnavailable is returned when JetStream cannot take a write or answer
// a read: no quorum, no meta leader, or no server reachable. It is also
// api.ErrUnavailable, so api.WriteError answers 503 with the cause.
var ErrUnavailable error = unavailableError{}

type unavailableError struct{}

func (unavailableError) Error() string { return "control plane store unavailable" }

// Is makes errors.Is(err, api.ErrUnavailable) hold for the store's outages.
func (unavailableError) Is(target error) bool { return target == api.ErrUnavailable }

// DefaultClusterName names the cluster embedded nodes form.
const DefaultClusterName = "amber"

// Config says where the engine runs.
type Config struct {
	// Dir is where an embedded node keeps JetStream (DATA/nats).
	Dir string
	// Name is this node's server name, unique in its cluster (default: the
	// host name and client port).
	Name string
	// Listen is the embedded node's client address (default 127.0.0.1,
	// a free port). Other schedulers and agents never need it unless the
	// operator points tools at it.
	Listen string
	// ClusterListen is the embedded node's cluster (route) address; set it
	// with Peers to join other schedulers.
	ClusterListen string
	// Peers are the cluster addresses (host:port) of the other embedded
	// nodes.
	Peers []string
	// URL, when set, connects to an external NATS (comma-separated
	// URLs) instead of embedding a node.
	URL string
	// Credentials, CA, Cert and Key configure the connection to an
	// external NATS: a .creds file, a CA bundle and a client certificate.
	Credentials, CA, Cert, Key string
	// Replicas of every stream and bucket (default: 1 for a lone embedded
	// node, 3 when there are peers or an external cluster).
	Replicas int
	// Log receives the embedded server's notices and errors.
	Log *slog.Logger
	// Fsync says when an embedded node fsyncs: FsyncAlways (every write)
	// or FsyncInterval (NATS's own two-minute interval). Default: always
	// for a lone node, the interval when it has peers.
	Fsync string
	// StartTimeout bounds how long Open waits for the server, a JetStream
	// leader and the connection (default 30s).
	StartTimeout time.Duration
}

// Engine is a connection to JetStream, and the embedded node when there is
// one.
type Engine struct {
	Conn     *nats.Conn
	JS       jetstream.JetStream
	srv      *server.Server
	replicas int
	log      *slog.Logger
}

// Open starts the embedded node (unless cfg.URL is set), connects and
// waits until JetStream answers.
func Open(ctx context.Context, cfg Config) (*Engine, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	e := &Engine{log: cfg.Log, replicas: cfg.Replicas}
	var copts []nats.Option
	url := cfg.URL
	if url == "" {
		srv, err := startServer(cfg)
		if err != nil {
			return nil, err
		}
		e.srv = srv
		url = srv.ClientURL()
		copts = append(copts, nats.InProcessServer(srv))
		if e.replicas == 0 {
			e.replicas = 1
			if len(cfg.Peers) > 0 {
				e.replicas = min(3, len(cfg.Peers)+1)
			}
		}
	} else {
		o, err := clientSecurity(cfg)
		if err != nil {
			return nil, err
		}
		copts = append(copts, o...)
		if e.replicas == 0 {
			e.replicas = 3
		}
	}
	copts = append(copts,
		nats.Name("amber-scheduler"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				cfg.Log.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { cfg.Log.Info("reconnected to NATS", "url", c.ConnectedUrlRedacted()) }),
	)
	nc, err := nats.Connect(url, copts...)
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("connect to NATS at %s: %w", redact(url), err)
	}
	e.Conn = nc
	js, err := jetstream.New(nc)
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("JetStream at %s: %w", redact(url), err)
	}
	e.JS = js
	// Wait for JetStream to answer (in a cluster: until a meta leader is
	// elected and enough peers are up for the replicas asked for).
	for {
		// Before a meta leader exists a request can go unanswered: ask
		// again every second rather than wait out the whole timeout.
		actx, acancel := context.WithTimeout(ctx, time.Second)
		_, err := js.AccountInfo(actx)
		acancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			e.Close()
			return nil, fmt.Errorf("JetStream at %s did not become ready within %s: %w (%w)", redact(url), cfg.StartTimeout, err, ErrUnavailable)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return e, nil
}

func clientSecurity(cfg Config) ([]nats.Option, error) {
	var o []nats.Option
	if cfg.Credentials != "" {
		if _, err := os.Stat(cfg.Credentials); err != nil {
			return nil, fmt.Errorf("NATS credentials: %w", err)
		}
		o = append(o, nats.UserCredentials(cfg.Credentials))
	}
	if cfg.CA != "" {
		o = append(o, nats.RootCAs(cfg.CA))
	}
	if (cfg.Cert == "") != (cfg.Key == "") {
		return nil, errors.New("NATS client certificate: give both the certificate and its key")
	}
	if cfg.Cert != "" {
		o = append(o, nats.ClientCert(cfg.Cert, cfg.Key))
	}
	return o, nil
}

func hostPort(addr, what string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%s %q: want host:port: %w", what, addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, fmt.Errorf("%s %q: bad port", what, addr)
	}
	return h, n, nil
}

func startServer(cfg Config) (*server.Server, error) {
	if cfg.Dir == "" {
		return nil, errors.New("engine: an embedded NATS node needs a folder (Dir)")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	if cfg.Fsync != "" && cfg.Fsync != FsyncAlways && cfg.Fsync != FsyncInterval {
		return nil, fmt.Errorf("engine: fsync %q: want %s or %s", cfg.Fsync, FsyncAlways, FsyncInterval)
	}
	listen := cfg.Listen
	if listen == "" {
		listen = "127.0.0.1:-1"
	}
	host, port := "127.0.0.1", server.RANDOM_PORT
	if h, p, err := net.SplitHostPort(listen); err == nil && p == "-1" {
		host = h
	} else {
		if host, port, err = hostPort(listen, "NATS listen address"); err != nil {
			return nil, err
		}
	}
	opts := &server.Options{
		ServerName:         cfg.Name,
		Host:               host,
		Port:               port,
		JetStream:          true,
		StoreDir:           filepath.Clean(cfg.Dir),
		SyncAlways:         cfg.Fsync == FsyncAlways || (cfg.Fsync == "" && len(cfg.Peers) == 0),
		NoSigs:             true,
		MaxPayload:         8 << 20,
		JetStreamMaxMemory: 64 << 20,
	}
	if opts.ServerName == "" {
		hn, _ := os.Hostname()
		opts.ServerName = hn + "-" + filepath.Base(filepath.Dir(filepath.Clean(cfg.Dir)))
	}
	if cfg.ClusterListen != "" || len(cfg.Peers) > 0 {
		if cfg.ClusterListen == "" {
			return nil, errors.New("engine: cluster peers need a cluster listen address of this node")
		}
		ch, cp, err := hostPort(cfg.ClusterListen, "NATS cluster listen address")
		if err != nil {
			return nil, err
		}
		opts.Cluster = server.ClusterOpts{Name: DefaultClusterName, Host: ch, Port: cp}
		var routes []*url.URL
		for _, p := range cfg.Peers {
			if _, _, err := hostPort(p, "cluster peer"); err != nil {
				return nil, err
			}
			routes = append(routes, &url.URL{Scheme: "nats", Host: p})
		}
		opts.Routes = routes
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	srv.SetLoggerV2(slogLogger{cfg.Log}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(cfg.StartTimeoutOr(30 * time.Second)) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded NATS on %s did not start (is the port taken?)", listen)
	}
	return srv, nil
}

// StartTimeoutOr returns the start timeout, or d when none is set.
func (c Config) StartTimeoutOr(d time.Duration) time.Duration {
	if c.StartTimeout > 0 {
		return c.StartTimeout
	}
	return d
}

// Close drains the connection and stops the embedded node.
func (e *Engine) Close() {
	if e.Conn != nil {
		e.Conn.Close()
	}
	if e.srv != nil {
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
	}
}

// Replicas is how many copies every stream and bucket keeps.
func (e *Engine) Replicas() int { return e.replicas }

// ClientURL is the address tools (nats CLI, other schedulers) reach this
// engine at.
func (e *Engine) ClientURL() string {
	if e.srv != nil {
		return e.srv.ClientURL()
	}
	return e.Conn.ConnectedUrlRedacted()
}

// KeyValue creates (or updates) bucket with this engine's replicas and
// file storage.
func (e *Engine) KeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	cfg.Replicas = e.replicas
	cfg.Storage = jetstream.FileStorage
	var kv jetstream.KeyValue
	err := retrySetup(ctx, func(ctx context.Context) (err error) {
		kv, err = e.JS.CreateOrUpdateKeyValue(ctx, cfg)
		return err
	})
	if err != nil {
		return nil, Wrap(fmt.Errorf("bucket %s: %w", cfg.Bucket, err))
	}
	if err := e.waitLeader(ctx, "KV_"+cfg.Bucket); err != nil {
		return nil, err
	}
	return kv, nil
}

// Stream creates (or updates) a stream with this engine's replicas and
// file storage.
func (e *Engine) Stream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	cfg.Replicas = e.replicas
	cfg.Storage = jetstream.FileStorage
	var st jetstream.Stream
	err := retrySetup(ctx, func(ctx context.Context) (err error) {
		st, err = e.JS.CreateOrUpdateStream(ctx, cfg)
		return err
	})
	if err != nil {
		return nil, Wrap(fmt.Errorf("stream %s: %w", cfg.Name, err))
	}
	if err := e.waitLeader(ctx, cfg.Name); err != nil {
		return nil, err
	}
	return st, nil
}

// ObjectStore creates (or updates) an object store bucket with this
// engine's replicas and file storage.
func (e *Engine) ObjectStore(ctx context.Context, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	cfg.Replicas = e.replicas
	cfg.Storage = jetstream.FileStorage
	var obs jetstream.ObjectStore
	err := retrySetup(ctx, func(ctx context.Context) (err error) {
		obs, err = e.JS.CreateOrUpdateObjectStore(ctx, cfg)
		return err
	})
	if err != nil {
		return nil, Wrap(fmt.Errorf("object store %s: %w", cfg.Bucket, err))
	}
	if err := e.waitLeader(ctx, "OBJ_"+cfg.Bucket); err != nil {
		return nil, err
	}
	// An object written through one scheduler must be found through any
	// other at once: direct gets may be answered by a replica that has not
	// applied the write yet (seen with nats-server 2.9), so lookups go to
	// the stream's leader.
	if e.replicas > 1 {
		name := "OBJ_" + cfg.Bucket
		err := retrySetup(ctx, func(ctx context.Context) error {
			st, err := e.JS.Stream(ctx, name)
			if err != nil {
				return err
			}
			sc := st.CachedInfo().Config
			if !sc.AllowDirect {
				return nil
			}
			sc.AllowDirect = false
			_, err = e.JS.UpdateStream(ctx, sc)
			return err
		})
		if err == nil {
			obs, err = e.JS.ObjectStore(ctx, cfg.Bucket)
		}
		if err != nil {
			return nil, Wrap(fmt.Errorf("object store %s: %w", cfg.Bucket, err))
		}
	}
	return obs, nil
}

// Consumer creates (or updates) a durable consumer of stream and, in a
// cluster, waits until it has elected its leader.
func (e *Engine) Consumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	var c jetstream.Consumer
	err := retrySetup(ctx, func(ctx context.Context) (err error) {
		c, err = e.JS.CreateOrUpdateConsumer(ctx, stream, cfg)
		return err
	})
	if err != nil {
		return nil, Wrap(fmt.Errorf("consumer %s of %s: %w", cfg.Durable, stream, err))
	}
	err = e.waitElected(ctx, fmt.Sprintf("consumer %s of %s", cfg.Durable, stream), func(ctx context.Context) (*jetstream.ClusterInfo, error) {
		info, err := c.Info(ctx)
		if err != nil {
			return nil, err
		}
		return info.Cluster, nil
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// waitLeader waits until a replicated stream has elected its leader: in a
// cluster, the first reads and writes after creating it would otherwise
// find no responder.
func (e *Engine) waitLeader(ctx context.Context, stream string) error {
	return e.waitElected(ctx, "stream "+stream, func(ctx context.Context) (*jetstream.ClusterInfo, error) {
		st, err := e.JS.Stream(ctx, stream)
		if err != nil {
			return nil, err
		}
		info, err := st.Info(ctx)
		if err != nil {
			return nil, err
		}
		return info.Cluster, nil
	})
}

// waitElected asks cluster (a stream's or consumer's) until it names a
// leader, in a cluster; a lone node has nothing to wait for.
func (e *Engine) waitElected(ctx context.Context, what string, cluster func(context.Context) (*jetstream.ClusterInfo, error)) error {
	if e.replicas <= 1 {
		return nil
	}
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ci, err := cluster(actx)
		cancel()
		if err == nil && (ci == nil || ci.Leader != "") {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New("no leader elected")
			}
			return Wrap(fmt.Errorf("%s: %w (%w)", what, err, ErrUnavailable))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// retrySetup runs op (creating a stream or bucket) again while JetStream
// cannot answer yet, each attempt with its own deadline: in a cluster
// that has just formed, the meta leader may not know every peer, and a
// request can go unanswered rather than fail.
//
// Schedulers starting together create the same streams at the same moment;
// JetStream then leaves the concurrent requests unanswered (seen with
// nats-server 2.15 in a three-node cluster): the first attempts are short
// and grow, so a start costs about a second per stream, not a timeout.
func retrySetup(ctx context.Context, op func(context.Context) error) error {
	wait := time.Second
	for {
		actx, cancel := context.WithTimeout(ctx, wait)
		wait = min(2*wait, 8*time.Second)
		err := op(actx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		var apiErr *jetstream.APIError
		// 10023 insufficient resources, 10005 no suitable peers: the
		// cluster does not know all its peers yet.
		insufficient := errors.As(err, &apiErr) && (apiErr.ErrorCode == 10023 || apiErr.ErrorCode == 10005)
		if !errors.Is(Wrap(err), ErrUnavailable) && !insufficient {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Wrap marks errors that mean "JetStream cannot answer now" with
// ErrUnavailable, so front ends answer 503 naming the cause.
func Wrap(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	switch {
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrNoServers), errors.Is(err, jetstream.ErrJetStreamNotEnabled):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.Code == 503 || apiErr.ErrorCode == jetstream.JSErrCodeJetStreamNotEnabled) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if strings.Contains(err.Error(), "temporarily unavailable") || strings.Contains(err.Error(), "no quorum") {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// Health is what doctor and /metrics report about the engine.
type Health struct {
	Embedded   bool
	Server     string
	Cluster    string
	Peers      int      // cluster peers this node sees (embedded)
	MetaLeader string   // JetStream meta leader, "" when none
	Offline    []string // meta group peers that are offline
	Streams    int
	Bytes      uint64
}

// Health reports the embedded node's view of JetStream; for an external
// NATS it reports what the account info says.
func (e *Engine) Health(ctx context.Context) (Health, error) {
	h := Health{Embedded: e.srv != nil}
	ai, err := e.JS.AccountInfo(ctx)
	if err != nil {
		return h, Wrap(err)
	}
	h.Streams, h.Bytes = ai.Streams, ai.Store
	if e.srv == nil {
		h.Server = e.Conn.ConnectedServerName()
		h.Cluster = e.Conn.ConnectedClusterName()
		return h, nil
	}
	h.Server = e.srv.Name()
	if rz, err := e.srv.Routez(nil); err == nil {
		seen := map[string]bool{}
		for _, r := range rz.Routes {
			seen[r.RemoteName] = true
		}
		h.Peers = len(seen)
	}
	if jz, err := e.srv.Jsz(nil); err == nil && jz.Meta != nil {
		h.Cluster = jz.Meta.Name
		h.MetaLeader = jz.Meta.Leader
		for _, p := range jz.Meta.Replicas {
			if p.Offline || !p.Current {
				h.Offline = append(h.Offline, p.Name)
			}
		}
	} else if err == nil {
		h.MetaLeader = h.Server
	}
	return h, nil
}

func redact(u string) string {
	parts := strings.Split(u, ",")
	for i, p := range parts {
		if pu, err := url.Parse(strings.TrimSpace(p)); err == nil && pu.User != nil {
			pu.User = url.User("***")
			parts[i] = pu.String()
		}
	}
	return strings.Join(parts, ",")
}

type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Noticef(f string, v ...any) { s.l.Debug("nats: " + fmt.Sprintf(f, v...)) }
func (s slogLogger) Warnf(f string, v ...any)   { s.l.Warn("nats: " + fmt.Sprintf(f, v...)) }
func (s slogLogger) Fatalf(f string, v ...any)  { s.l.Error("nats: " + fmt.Sprintf(f, v...)) }
func (s slogLogger) Errorf(f string, v ...any)  { s.l.Error("nats: " + fmt.Sprintf(f, v...)) }
func (s slogLogger) Debugf(f string, v ...any)  {}
func (s slogLogger) Tracef(f string, v ...any)  {}
