// Package scheduler is amber's control plane: the function registry (a
// JetStream key-value bucket every scheduler watches, registry.go),
// the image store, agent membership, placement and the invoke gateway.
//
// The scheduler keeps functions and images on disk under its data folder:
//
//	DATA/amber.db                    before JetStream: the registry, the async queue and dead
//	                                 letters; read once to import them (registry_import.go, async.go)
//	JetStream AMBER_ASYNC, AMBER_DEAD  async events (delivered at least once) and dead letters (async.go)
//	DATA/ledger.db                   one record per finished invocation, hourly sums (ledger.go)
//	DATA/history.db                  per-minute counters and latency histograms, 24 hours (minutes.go)
//	JetStream AMBER_IMAGES           OCI image archives (object store), named by the sha256 of the tar (images.go)
//	DATA/images/sha256/<hex>.tar     this scheduler's cache of AMBER_IMAGES (before JetStream: the archives)
//	DATA/images/tmp/                 uploads and cache fills in progress
//	DATA/aws-access-key.json         the SigV4 access key of the Lambda-compatible endpoint (0600)
//
// Membership, in-flight reservations and invocation counters live in memory:
// agents re-register with their next heartbeat after a restart.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/api/ociarchive"
	"github.com/amberfn/amber/scheduler/internal/engine"
)

// Defaults.
const (
	DefaultSuspectAfter = 5 * time.Second
	DefaultGoneAfter    = 15 * time.Second
	// DefaultForgetAfter is how long a gone agent stays listed (as gone)
	// before it is dropped from /v1/agents.
	DefaultForgetAfter = 10 * time.Minute
	// DefaultMaxImageBytes caps an uploaded image archive.
	DefaultMaxImageBytes int64 = 1 << 30
	// forwardSlack is how much longer than the function's timeout the
	// scheduler waits for an agent (cold start, image pull).
	forwardSlack = 60 * time.Second
)

// Scheduler is amber's control plane. Create it with New, serve Handler,
// and Close it when done.
type Scheduler struct {
	dataDir       string
	token         string
	joinToken     string
	log           *slog.Logger
	hc            *http.Client
	now           func() time.Time
	suspectAfter  time.Duration
	startGrace    time.Duration // see WithStartGrace
	started       time.Time     // wall clock, for startGrace
	goneAfter     time.Duration
	forgetAfter   time.Duration
	maxImageBytes int64
	maxUnpacked   int64 // see WithMaxUnpackedBytes
	uploadTimeout time.Duration
	newRequestID  func() string

	// natsCfg says where the engine runs; eng is NATS JetStream, under
	// every piece of state the schedulers share.
	natsCfg engine.Config
	eng     *engine.Engine
	// id names this scheduler process; hbBus shares agents' heartbeats
	// with the other schedulers (cluster.go).
	id    string
	hbBus *heartbeatBus

	reg    *registry
	images *imageStore

	mu     sync.Mutex
	agents map[string]*agentEntry
	drains map[string]bool // agents an operator drained (kept in the registry)

	closeOnce sync.Once
	closeErr  error
	stats     map[string]*fnStats

	limits   *limiter
	arrivals *arrivals
	events   *eventLog
	latency  *latencies
	minutes  *minuteLog

	// async delivery, cron triggers and the ledger (async.go, cron.go, ledger.go)
	bgCfg  backgroundConfig
	async  *asyncQueue
	ledger *ledger
	cron   *cronLoop

	// accessKey is what the Lambda-compatible endpoint accepts (sigv4.go).
	accessKey *AccessKey
}

// Option configures a Scheduler.
type Option func(*Scheduler)

// WithDataDir sets the folder that holds the registry and the images.
// Required.
func WithDataDir(dir string) Option { return func(s *Scheduler) { s.dataDir = dir } }

// WithToken makes every /v1 endpoint require "Authorization: Bearer TOKEN",
// and is sent to agents when forwarding invocations. Empty disables auth.
func WithToken(tok string) Option { return func(s *Scheduler) { s.token = tok } }

// WithJoinToken sets the token agents use: it opens only what agents call
// (heartbeats, function versions, image downloads), and the scheduler
// presents it to agents. Empty: agents use the API token.
func WithJoinToken(tok string) Option { return func(s *Scheduler) { s.joinToken = tok } }

// NATSConfig says where the control plane's engine, NATS JetStream,
// runs: embedded (the default, storing under DATA/nats), embedded and
// joined with other schedulers' nodes (ClusterListen, Peers), or an
// external NATS (URL).
type NATSConfig = engine.Config

// When an embedded node fsyncs JetStream (NATSConfig.Fsync).
const (
	FsyncAlways   = engine.FsyncAlways
	FsyncInterval = engine.FsyncInterval
)

// WithNATS sets where the engine runs (default: one embedded node under
// DATA/nats on a free loopback port).
func WithNATS(c NATSConfig) Option { return func(s *Scheduler) { s.natsCfg = c } }

// ErrStoreUnavailable means the engine cannot take a write or answer a read
// now (no quorum, no NATS reachable); front ends answer 503 naming the cause.
var ErrStoreUnavailable = engine.ErrUnavailable

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(s *Scheduler) {
		if l != nil {
			s.log = l
		}
	}
}

// WithHeartbeatTimeouts sets after how long without a heartbeat an agent
// becomes suspect, then gone (defaults 5s and 15s).
func WithHeartbeatTimeouts(suspect, gone time.Duration) Option {
	return func(s *Scheduler) { s.suspectAfter, s.goneAfter = suspect, gone }
}

// WithHTTPClient sets the client used to forward invocations to agents.
func WithHTTPClient(h *http.Client) Option {
	return func(s *Scheduler) {
		if h != nil {
			s.hc = h
		}
	}
}

// WithClock replaces time.Now, for tests.
func WithClock(now func() time.Time) Option {
	return func(s *Scheduler) {
		if now != nil {
			s.now = now
		}
	}
}

// WithStartGrace sets how long after the scheduler starts an invocation
// that finds no ready agent waits for agents to (re-)register before it
// is refused (default DefaultStartGrace; 0 refuses at once).
func WithStartGrace(d time.Duration) Option { return func(s *Scheduler) { s.startGrace = d } }

// DefaultStartGrace covers a few heartbeats (agents send one a second): a
// restarted scheduler knows no agent until each has sent one.
const DefaultStartGrace = 3 * time.Second

// WithMaxImageBytes caps the size of an uploaded image archive (default 1 GiB).
func WithMaxImageBytes(n int64) Option { return func(s *Scheduler) { s.maxImageBytes = n } }

// WithMaxUnpackedBytes bounds what an uploaded image's layers unpack to,
// all together (default ociarchive.DefaultMaxUnpackedBytes, 4 GiB). An
// upload past it is refused while its layers are counted, naming the layer
// and the limit. Agents have their own bound (agent.WithMaxUnpackedBytes).
func WithMaxUnpackedBytes(n int64) Option { return func(s *Scheduler) { s.maxUnpacked = n } }

// DefaultUploadTimeout is how long an image upload's body may take.
const DefaultUploadTimeout = 30 * time.Minute

// WithUploadTimeout sets how long the body of an (authenticated) image
// upload may take to arrive, in place of the server's shorter body
// timeout (default DefaultUploadTimeout).
func WithUploadTimeout(d time.Duration) Option { return func(s *Scheduler) { s.uploadTimeout = d } }

// WithForgetAfter sets how long a gone agent stays listed as gone before it
// is dropped (default 10 minutes).
func WithForgetAfter(d time.Duration) Option { return func(s *Scheduler) { s.forgetAfter = d } }

// New opens (or creates) the scheduler's data folder and registry.
func New(opts ...Option) (*Scheduler, error) {
	s := &Scheduler{
		log:           slog.New(slog.NewTextHandler(io.Discard, nil)),
		now:           time.Now,
		suspectAfter:  DefaultSuspectAfter,
		goneAfter:     DefaultGoneAfter,
		forgetAfter:   DefaultForgetAfter,
		startGrace:    DefaultStartGrace,
		started:       time.Now(),
		maxImageBytes: DefaultMaxImageBytes,
		maxUnpacked:   ociarchive.DefaultMaxUnpackedBytes,
		uploadTimeout: DefaultUploadTimeout,
		newRequestID:  newRequestID,
		agents:        map[string]*agentEntry{},
		stats:         map[string]*fnStats{},
		limits:        newLimiter(),
		arrivals:      newArrivals(),
		events:        newEventLog(),
		latency:       newLatencies(),
	}
	for _, o := range opts {
		o(s)
	}
	if s.dataDir == "" {
		return nil, errors.New("scheduler: a data folder is required (WithDataDir)")
	}
	if s.suspectAfter <= 0 || s.goneAfter < s.suspectAfter {
		return nil, fmt.Errorf("scheduler: heartbeat timeouts suspect=%s gone=%s: want 0 < suspect <= gone", s.suspectAfter, s.goneAfter)
	}
	if s.maxImageBytes <= 0 {
		return nil, fmt.Errorf("scheduler: max image size %d: want > 0", s.maxImageBytes)
	}
	if s.maxUnpacked <= 0 {
		return nil, fmt.Errorf("scheduler: max unpacked image size %d: want > 0", s.maxUnpacked)
	}
	if s.uploadTimeout <= 0 {
		return nil, fmt.Errorf("scheduler: upload timeout %s: want > 0", s.uploadTimeout)
	}
	if s.hc == nil {
		s.hc = &http.Client{Transport: api.NewTransport()}
	}
	if err := os.MkdirAll(s.dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("scheduler: data folder: %w", err)
	}
	if s.natsCfg.Dir == "" && s.natsCfg.URL == "" {
		s.natsCfg.Dir = filepath.Join(s.dataDir, "nats")
	}
	if s.natsCfg.Log == nil {
		s.natsCfg.Log = s.log
	}
	eng, err := engine.Open(context.Background(), s.natsCfg)
	if err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	s.eng = eng
	s.id = newSchedulerID()
	ok := false
	defer func() {
		if !ok {
			eng.Close()
		}
	}()
	if s.accessKey == nil {
		k, err := loadAccessKey(s.dataDir)
		if err != nil {
			return nil, fmt.Errorf("scheduler: access key: %w", err)
		}
		s.accessKey = k
	}
	ictx, icancel := context.WithTimeout(context.Background(), s.natsCfg.StartTimeoutOr(30*time.Second))
	imgs, err := openImageStore(ictx, s.eng, filepath.Join(s.dataDir, "images"), s.maxImageBytes, s.maxUnpacked, s.log)
	icancel()
	if err != nil {
		return nil, fmt.Errorf("scheduler: image store: %w", err)
	}
	s.images = imgs
	s.drains = map[string]bool{}
	rctx, rcancel := context.WithTimeout(context.Background(), s.natsCfg.StartTimeoutOr(30*time.Second))
	reg, err := openRegistry(rctx, s.eng, s.dataDir, s.now, s.log, s.applyDrain)
	rcancel()
	if err != nil {
		return nil, fmt.Errorf("scheduler: registry: %w", err)
	}
	s.reg = reg
	ml, err := openMinuteLog(filepath.Join(s.dataDir, "history.db"), withMinuteClock(s.now), withMinuteLogger(s.log))
	if err != nil {
		reg.close()
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	s.minutes, s.latency.minutes = ml, ml
	if err := s.startBackground(); err != nil {
		ml.close()
		reg.close()
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	if s.hbBus, err = startHeartbeatBus(eng.Conn, s.id, s.heartbeatRelayed, s.log); err != nil {
		s.stopBackground()
		ml.close()
		reg.close()
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	ml.start()
	ok = true
	return s, nil
}

// Close stops the background loops and closes the ledger and the
// registry; later calls do nothing. In-flight requests should be finished
// first (shut the HTTP server down before closing).
func (s *Scheduler) Close() error {
	s.closeOnce.Do(func() {
		s.stopBackground()
		if err := s.minutes.close(); err != nil {
			s.log.Warn("close history", "err", err.Error())
		}
		if t, ok := s.hc.Transport.(*http.Transport); ok {
			t.CloseIdleConnections()
		}
		s.closeErr = s.reg.close()
		s.hbBus.stop()
		s.eng.Close()
	})
	return s.closeErr
}
