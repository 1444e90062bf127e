package scheduler

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/amberfn/amber/api"
)

// maxSpecBytes bounds a deploy request body.
const maxSpecBytes = 1 << 20

// Handler serves the scheduler's API:
//
//	GET    /healthz                               (no auth) "ok"
//	POST   /v1/images                             body: OCI image archive → 201 {"digest","size"}
//	GET    /v1/images/{digest}                    the archive
//	POST   /v1/images/resolve                     body: api.ResolveRequest → api.ResolvedImage (registry reference, linux/amd64)
//	PUT    /v1/functions/{name}                   body: api.FunctionSpec → 201 (new version) or 200 (unchanged) api.Function
//	GET    /v1/functions                          []api.FunctionStatus, by name
//	GET    /v1/functions/{name}                   api.FunctionStatus
//	DELETE /v1/functions/{name}                   204
//	GET    /v1/functions/{name}/versions          []api.Function, oldest first
//	GET    /v1/functions/{name}/versions/{v}      api.Function
//	POST   /v1/functions/{name}/invoke            body: payload → the agent's answer, Amber-* headers
//	                                              with Amber-Invocation-Type: Event → 202 api.AsyncAccepted (queued); DryRun → 204
//	GET    /v1/functions/{name}/async             api.AsyncStatus (max_retries, pending, dead letters)
//	PUT    /v1/functions/{name}/async             body: api.AsyncConfig → api.AsyncStatus
//	GET    /v1/dead-letters[?function=]           []api.DeadLetter, oldest first (also /v1/functions/{name}/dead-letters)
//	PUT    /v1/functions/{name}/schedule          body: {"expression":"*/5 * * * *" | "rate(5 minutes)"} → api.Schedule
//	GET    /v1/functions/{name}/schedule          api.Schedule; DELETE → 204
//	GET    /v1/schedules                          []api.Schedule
//	GET    /v1/bill?since=&until=&by=hour|day     api.Bill (since/until: RFC 3339 or a duration back, e.g. 24h)
//	GET    /v1/ledger?function=&since=&limit=     []api.LedgerRecord, oldest first
//	GET    /v1/history?since=15m&function=        api.History: per-minute counters and latency, 24 hours (minutes.go)
//	GET    /v1/functions/{name}/logs?since=&limit=  []api.LogRecord from every agent, oldest first
//	GET    /v1/functions/{name}/pool              api.PoolStatus
//	PUT    /v1/functions/{name}/pool              body: api.PoolChange → api.PoolStatus
//	POST   /v1/agents/heartbeat                   body: api.Heartbeat → api.HeartbeatReply (pool targets)
//	GET    /v1/agents                             []api.AgentStatus, by name
//	POST   /v1/agents/{name}/drain                no new placements there (DELETE resumes)
//	POST   /v1/agents/{name}/drain                no new placements there (DELETE resumes)
//	GET    /v1/state                              api.ClusterState
//	GET    /v1/cluster                            api.ControlPlane: the engine's health (cluster.go); 503 when it does not answer
//	GET    /v1/events?since=SEQ                   []api.Event, oldest first
//	GET    /v1/stream?since=SEQ                   server-sent events: api.StreamMessage every second and on events
//	PUT    /v1/functions/{name}/route             body: RouteSpec {"path","methods"} → Route (routes.go)
//	GET    /v1/functions/{name}/route             Route; DELETE → 204
//	GET    /v1/routes                             []Route, by path
//	POST   /2015-03-31/functions/{name}/invocations  Lambda's Invoke API, AWS SigV4 auth (lambda.go)
//	ANY    /r/{path...}                           (public) HTTP route triggers, API Gateway 2.0 events (routes.go)
//
// Every /v1 endpoint requires "Authorization: Bearer TOKEN" when a token is
// configured. Errors are api.ErrorBody. The Lambda path takes SigV4 with the
// scheduler's access key instead, and answers Lambda's errors; route
// triggers take no credentials at all.
func (s *Scheduler) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	v1 := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, s.auth(validNames(h))) }
	// What agents call takes the join token as well as the API token.
	forAgents := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, s.auth(validNames(h), s.joinToken)) }
	v1("POST /v1/images", s.handleUploadImage)
	forAgents("GET /v1/images/{digest}", s.handleGetImage)
	v1("POST /v1/images/resolve", s.handleResolveImage)
	v1("PUT /v1/functions/{name}", s.handleDeploy)
	v1("GET /v1/functions", s.handleListFunctions)
	v1("GET /v1/functions/{name}", s.handleGetFunction)
	v1("DELETE /v1/functions/{name}", s.handleDeleteFunction)
	v1("GET /v1/functions/{name}/versions", s.handleListVersions)
	forAgents("GET /v1/functions/{name}/versions/{version}", s.handleGetVersion)
	v1("POST /v1/functions/{name}/invoke", s.handleInvoke)
	// async events, cron triggers, ledger (async.go, cron.go, ledger.go)
	v1("GET /v1/functions/{name}/async", s.handleGetAsync)
	v1("PUT /v1/functions/{name}/async", s.handlePutAsync)
	v1("GET /v1/functions/{name}/dead-letters", s.handleDeadLetters)
	v1("GET /v1/dead-letters", s.handleDeadLetters)
	v1("GET /v1/functions/{name}/schedule", s.handleGetSchedule)
	v1("PUT /v1/functions/{name}/schedule", s.handlePutSchedule)
	v1("DELETE /v1/functions/{name}/schedule", s.handleDeleteSchedule)
	v1("GET /v1/schedules", s.handleListSchedules)
	v1("GET /v1/bill", s.handleBill)
	v1("GET /v1/ledger", s.handleLedger)
	v1("GET /v1/history", s.handleHistory) // per-minute counters and latency, 24 hours (minutes.go)
	v1("GET /v1/functions/{name}/logs", s.handleLogs)
	v1("GET /v1/functions/{name}/pool", s.handleGetPool)
	v1("PUT /v1/functions/{name}/pool", s.handlePutPool)
	forAgents("POST /v1/agents/heartbeat", s.handleHeartbeat)
	v1("GET /v1/agents", s.handleListAgents)
	v1("POST /v1/agents/{name}/drain", s.handleDrain)
	v1("DELETE /v1/agents/{name}/drain", s.handleDrain)
	v1("GET /v1/state", s.handleState)
	v1("GET /v1/events", s.handleEvents)
	v1("GET /v1/stream", s.handleStream)
	v1("GET /v1/cluster", s.handleCluster)
	v1("PUT /v1/functions/{name}/route", s.handlePutRoute)
	v1("GET /v1/functions/{name}/route", s.handleGetRoute)
	v1("DELETE /v1/functions/{name}/route", s.handleDeleteRoute)
	v1("GET /v1/routes", s.handleListRoutes)
	v1("GET /metrics", s.handleMetrics) // Prometheus text format, same token (metrics.go)
	mux.HandleFunc("POST "+lambdaInvokePath, s.handleLambdaInvoke)
	mux.HandleFunc(RoutePrefix+"/", s.handleRoute)
	v1("/v1/", func(w http.ResponseWriter, r *http.Request) {
		api.WriteError(w, fmt.Errorf("no endpoint %s %s: %w", r.Method, r.URL.Path, api.ErrNotFound))
	})
	return mux
}

// auth checks the bearer token in constant time.
func (s *Scheduler) auth(h http.Handler, also ...string) http.Handler {
	if s.token == "" {
		return h
	}
	wants := [][]byte{[]byte("Bearer " + s.token)}
	for _, t := range also {
		if t != "" {
			wants = append(wants, []byte("Bearer "+t))
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		ok := 0
		for _, want := range wants {
			ok |= subtle.ConstantTimeCompare(got, want)
		}
		if ok != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="amber"`)
			api.WriteError(w, fmt.Errorf("missing or wrong bearer token: %w", api.ErrUnauthorized))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// validNames refuses a {name} in the path or a ?function= that is not a
// valid name with 400, before any handler looks it up.
func validNames(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if n := r.PathValue("name"); n != "" {
			if err := api.ValidateName("name", n); err != nil {
				api.WriteError(w, err)
				return
			}
		}
		if f := r.URL.Query().Get("function"); f != "" {
			if err := api.ValidateName("function", f); err != nil {
				api.WriteError(w, err)
				return
			}
		}
		h(w, r)
	}
}

// agentToken is what the scheduler presents to agents: the join token
// when there is one, else the API token.
func (s *Scheduler) agentToken() string {
	if s.joinToken != "" {
		return s.joinToken
	}
	return s.token
}

// writeError writes err as an api.ErrorBody; agent failures are 502.
func writeError(w http.ResponseWriter, err error) {
	if errors.Is(err, errBadGateway) {
		api.WriteJSON(w, http.StatusBadGateway, api.ErrorBody{Error: api.ErrorDetail{Code: "BadGateway", Message: err.Error()}})
		return
	}
	api.WriteError(w, err)
}

// decodeJSON reads one JSON value of at most limit bytes into v, naming
// the problem when it cannot.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		var ute *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &mbe):
			return fmt.Errorf("request body is over %d bytes: %w", limit, api.ErrTooLarge)
		case errors.Is(err, io.EOF):
			return api.Invalid("body", "empty request body; want JSON")
		case errors.As(err, &ute):
			field := ute.Field
			if field == "" {
				field = "body"
			}
			return api.Invalid(field, "want a JSON %s, got %s", ute.Type, ute.Value)
		case errors.As(err, &se):
			return api.Invalid("body", "malformed JSON at byte %d: %v", se.Offset, err)
		default:
			return api.Invalid("body", "malformed JSON: %v", err)
		}
	}
	if dec.More() {
		return api.Invalid("body", "malformed JSON: more than one value")
	}
	return nil
}

func (s *Scheduler) handleUploadImage(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > s.maxImageBytes {
		api.WriteError(w, fmt.Errorf("image archive of %d bytes is over the %d-byte limit: %w", r.ContentLength, s.maxImageBytes, api.ErrTooLarge))
		return
	}
	// An archive may be large: its body gets longer than the server's
	// body timeout, once the caller has proven who it is.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.uploadTimeout))
	start := time.Now()
	digest, size, err := s.images.putContext(r.Context(), r.Body)
	if err != nil {
		s.log.Warn("image upload refused", "err", err.Error())
		api.WriteError(w, err)
		return
	}
	s.log.Info("image stored", "digest", digest, "size", size, "elapsed", time.Since(start))
	api.WriteJSON(w, http.StatusCreated, api.ImageUpload{Digest: digest, Size: size})
}

func (s *Scheduler) handleGetImage(w http.ResponseWriter, r *http.Request) {
	digest := r.PathValue("digest")
	img, err := s.images.open(r.Context(), digest)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	defer img.Close()
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("ETag", `"`+digest+`"`)
	if img.file != nil { // cached: ranges and conditional requests too
		http.ServeContent(w, r, "", img.modTime, img.file)
		return
	}
	// Streamed from the object store (and into the cache).
	w.Header().Set("Content-Length", strconv.FormatInt(img.size, 10))
	w.Header().Set("Last-Modified", img.modTime.UTC().Format(http.TimeFormat))
	if r.Method == http.MethodHead {
		return
	}
	if n, err := io.Copy(w, img); err != nil {
		// The body stops short of its Content-Length: the agent sees a
		// truncated download, never a wrong archive.
		s.log.Warn("image download cut short", "digest", digest, "sent", n, "size", img.size, "err", err.Error())
	}
}

func (s *Scheduler) handleDeploy(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name") // valid: validNames checked it
	var spec api.FunctionSpec
	if err := decodeJSON(w, r, maxSpecBytes, &spec); err != nil {
		// api.Duration's own decode errors start with "duration".
		if fe := (*api.FieldError)(nil); errors.As(err, &fe) && fe.Field == "body" && strings.Contains(fe.Reason, ": duration") {
			fe.Field = "timeout"
		}
		api.WriteError(w, err)
		return
	}
	// A registry reference is pinned to the digest it resolves to now.
	if err := s.pinImage(r.Context(), &spec); err != nil {
		api.WriteError(w, err)
		return
	}
	// It is pulled by the function's home agent before the version is
	// stored: a failed pull leaves the earlier version serving.
	stream := &deployStream{w: w, want: strings.Contains(r.Header.Get("Accept"), api.ContentTypeNDJSON)}
	if spec.Image != "" && !api.IsArchiveDigest(spec.Image) {
		ref := spec.ImageRef
		if ref == "" {
			ref = spec.Image
		}
		if err := s.prePull(r.Context(), stream, name, ref, spec.Image); err != nil {
			stream.finish(0, nil, err)
			return
		}
	}
	fn, created, err := s.deploy(name, spec)
	if err != nil {
		stream.finish(0, nil, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		s.event(api.EventDeployed, fn.Name, "", "%s version %d deployed (%d MB, timeout %s)", fn.Name, fn.Version, fn.MemoryMB, fn.Timeout)
		s.log.Info("function deployed", "function", fn.Name, "version", fn.Version, "image", fn.Image,
			"memory_mb", fn.MemoryMB, "timeout", fn.Timeout.String())
	}
	stream.finish(status, fn, nil)
}

// deploy applies defaults, validates spec and stores it as name's next
// version (or returns the latest when nothing changed).
func (s *Scheduler) deploy(name string, spec api.FunctionSpec) (*api.Function, bool, error) {
	if spec.Name == "" {
		spec.Name = name
	}
	if spec.Name != name {
		return nil, false, api.Invalid("name", "%q in the body does not match %q in the path", spec.Name, name)
	}
	if spec.MemoryMB == 0 {
		spec.MemoryMB = api.DefaultMemory
	}
	if spec.Timeout == 0 {
		spec.Timeout = api.Duration(api.DefaultTimeout)
	}
	if len(spec.Env) == 0 {
		spec.Env = nil
	}
	if err := spec.Validate(); err != nil {
		return nil, false, err
	}
	if api.IsArchiveDigest(spec.Image) {
		// The object store, so an image uploaded through any scheduler.
		ok, err := s.images.exists(context.Background(), spec.Image)
		if err != nil {
			return nil, false, err
		}
		if !ok {
			return nil, false, api.Invalid("image", "%s is not in the image store; upload it first (POST /v1/images)", spec.Image)
		}
	}
	return s.reg.put(spec)
}

// status builds a function's status from the registry, heartbeats and counters.
func (s *Scheduler) status(fn api.Function, instances map[string][]api.Instance) api.FunctionStatus {
	in := instances[fn.Name]
	if in == nil {
		in = []api.Instance{}
	}
	st := api.FunctionStatus{Function: fn, Instances: in, Stats: s.statsFor(fn.Name), Latency: s.latency.of(fn.Name)}
	if pool, err := s.poolStatus(fn.Name); err == nil {
		st.Pool = *pool
	}
	return st
}

func (s *Scheduler) functionStatuses() ([]api.FunctionStatus, error) {
	fns, err := s.reg.list()
	if err != nil {
		return nil, err
	}
	instances := s.instancesByFunction()
	out := make([]api.FunctionStatus, 0, len(fns))
	for _, fn := range fns {
		out = append(out, s.status(fn, instances))
	}
	return out, nil
}

func (s *Scheduler) handleListFunctions(w http.ResponseWriter, _ *http.Request) {
	out, err := s.functionStatuses()
	if err != nil {
		api.WriteError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, out)
}

func (s *Scheduler) handleGetFunction(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	fn, err := s.reg.latest(name)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, s.status(*fn, s.instancesByFunction()))
}

func (s *Scheduler) handleDeleteFunction(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.reg.remove(name); err != nil {
		api.WriteError(w, err)
		return
	}
	// One step: the route, schedule, pool and async settings went with it.
	s.dropStats(name)
	s.purgeAsync(name)
	s.arrivals.drop(name)
	s.latency.drop(name)
	s.event(api.EventDeleted, name, "", "function %s deleted", name)
	s.log.Info("function deleted", "function", name)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Scheduler) handleListVersions(w http.ResponseWriter, r *http.Request) {
	out, err := s.reg.versions(r.PathValue("name"))
	if err != nil {
		api.WriteError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, out)
}

func (s *Scheduler) handleGetVersion(w http.ResponseWriter, r *http.Request) {
	v, err := strconv.Atoi(r.PathValue("version"))
	if err != nil || v < 1 {
		api.WriteError(w, api.Invalid("version", "%q: want a positive integer", r.PathValue("version")))
		return
	}
	fn, err := s.reg.version(r.PathValue("name"), v)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, fn)
}

func (s *Scheduler) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	var hb api.Heartbeat
	if err := decodeJSON(w, r, 8<<20, &hb); err != nil {
		api.WriteError(w, err)
		return
	}
	if err := s.heartbeat(hb); err != nil {
		api.WriteError(w, err)
		return
	}
	s.hbBus.publish(hb) // the other schedulers learn of it too (cluster.go)
	targets, err := s.targetsFor(hb.Name)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, api.HeartbeatReply{Targets: targets})
}

func (s *Scheduler) handleListAgents(w http.ResponseWriter, _ *http.Request) {
	api.WriteJSON(w, http.StatusOK, s.agentStatuses())
}

// State returns the cluster picture: agents, functions, counters.
func (s *Scheduler) State() (*api.ClusterState, error) {
	fns, err := s.functionStatuses()
	if err != nil {
		return nil, err
	}
	return &api.ClusterState{Time: s.now().UTC(), Agents: s.agentStatuses(), Functions: fns}, nil
}

func (s *Scheduler) handleState(w http.ResponseWriter, _ *http.Request) {
	st, err := s.State()
	if err != nil {
		api.WriteError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, st)
}
