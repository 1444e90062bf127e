package scheduler

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/scheduler/internal/engine"
)

// The registry keeps functions, their versions, pools, routes, schedules,
// async settings and drains in one JetStream key-value bucket that every
// scheduler on the same JetStream shares:
//
//	fn.<name>          JSON fnHead: the latest version (a copy), pool, route,
//	                   schedule (with its fire state), async settings and
//	                   the incarnation, a random id set when the function is
//	                   created from nothing
//	ver.<name>.<n>     JSON storedVersion (api.Function and its incarnation),
//	                   written once, never changed
//	seq.<name>         the last version number ever assigned (decimal)
//	route.<path b64>   JSON routeClaim: which function holds an HTTP path
//	drain.<agent>      RFC 3339 time an operator drained the agent
//	import.<id>        the one-time import from a data folder's amber.db
//
// Function and agent names are [a-z0-9-] (api.ValidateName), which key
// names allow as they are; route paths may hold '~' and empty segments, so
// their keys are base64url.
//
// Every scheduler watches the whole bucket into memory (registryCache), so
// the invocation path — latest, pool — never reads the store; a write
// through this scheduler updates its cache at once (read your writes), the
// others within a moment, through their watchers.
//
// Writes:
//   - Deleting a function is one step, deleting its head key: its route,
//     schedule, pool and async settings go with it. Its versions are then
//     swept (purged) in the background; one left behind (a sweep cut short)
//     is invisible, because a version counts only when its incarnation is
//     the head's, and a function created again gets a new incarnation.
//   - Pool, route, schedule and async changes are a compare-and-set on the
//     head's revision, retried on conflict, so two schedulers changing one
//     function never lose a write.
//   - A deploy takes the next number by compare-and-set on seq.<name>,
//     writes ver.<name>.<n>, then sets the head (the head keeps the higher
//     number when two deploys race: both get their own version). The
//     sequence outlives a delete, so a function deleted and deployed again
//     continues at the next number: an agent never sees two different specs
//     under one name and version.
//   - A route's path is held by a claim key created (or taken over from a
//     function no longer alive) before the head names the route, so two
//     schedulers cannot give one path to two functions.
//
// A write JetStream cannot take (no quorum) fails with an error that is
// ErrStoreUnavailable (and api.ErrUnavailable: 503 naming the cause).
const registryBucket = "AMBER_REGISTRY"

const (
	// storeTimeout bounds one store operation.
	storeTimeout = 5 * time.Second
	// casAttempts bounds the retries of a compare-and-set under contention.
	casAttempts = 64
)

// fnHead is the head key of a function.
type fnHead struct {
	Incarnation string            `json:"incarnation"`
	Latest      api.Function      `json:"latest"`
	Pool        *api.PoolSettings `json:"pool,omitempty"`
	Route       *Route            `json:"route,omitempty"`
	Schedule    *api.Schedule     `json:"schedule,omitempty"`
	Async       *api.AsyncConfig  `json:"async,omitempty"`
}

// storedVersion is a version key: api.Function's JSON plus the
// incarnation it belongs to.
type storedVersion struct {
	api.Function
	Incarnation string `json:"incarnation"`
}

// routeClaim is the holder of a route path: valid while that incarnation
// of the function lives.
type routeClaim struct {
	Function    string `json:"function"`
	Incarnation string `json:"incarnation"`
}

func headKey(name string) string           { return "fn." + name }
func seqKey(name string) string            { return "seq." + name }
func versionKey(name string, v int) string { return "ver." + name + "." + strconv.Itoa(v) }
func drainKey(agent string) string         { return "drain." + agent }
func claimKey(path string) string {
	return "route." + base64.RawURLEncoding.EncodeToString([]byte(path))
}

type registry struct {
	kv  jetstream.KeyValue
	now func() time.Time
	log *slog.Logger
	// timeout bounds one store operation (storeTimeout).
	timeout time.Duration
	// onDrain hears every drain change, this scheduler's and the others'.
	onDrain func(agent string, on bool)

	cache registryCache

	stopWatch context.CancelFunc
	watchDone chan struct{}
	sweeps    sync.WaitGroup
}

// registryCache is every scheduler's in-memory copy of the bucket.
type registryCache struct {
	mu sync.RWMutex
	// revs is the last revision applied per key, deletes included: the
	// watcher's older news never undoes this scheduler's newer write.
	revs     map[string]uint64
	heads    map[string]*fnHead
	headRevs map[string]uint64
	versions map[string]map[int]*storedVersion
	claims   map[string]claimEntry // by path
	drains   map[string]bool
	// routes is the sorted list of live routes; nil when a head changed.
	routes []Route
}

type claimEntry struct {
	routeClaim
	rev uint64
}

func newRegistryCache() registryCache {
	return registryCache{revs: map[string]uint64{}, heads: map[string]*fnHead{}, headRevs: map[string]uint64{},
		versions: map[string]map[int]*storedVersion{}, claims: map[string]claimEntry{}, drains: map[string]bool{}}
}

// apply records one key's new value (nil: deleted) at rev, unless the
// cache holds a newer one. It returns a drain change to report, if any.
func (c *registryCache) apply(key string, value []byte, rev uint64, log *slog.Logger) (drain string, on, changed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rev <= c.revs[key] {
		return "", false, false
	}
	c.revs[key] = rev
	kind, rest, _ := strings.Cut(key, ".")
	switch kind {
	case "fn":
		c.routes = nil
		if value == nil {
			delete(c.heads, rest)
			delete(c.headRevs, rest)
			return
		}
		var h fnHead
		if err := json.Unmarshal(value, &h); err != nil {
			log.Error("undecodable function head; ignored", "key", key, "err", err.Error())
			return
		}
		c.heads[rest], c.headRevs[rest] = &h, rev
	case "ver":
		i := strings.LastIndexByte(rest, '.')
		if i < 0 {
			return
		}
		name := rest[:i]
		n, err := strconv.Atoi(rest[i+1:])
		if err != nil {
			return
		}
		if value == nil {
			delete(c.versions[name], n)
			if len(c.versions[name]) == 0 {
				delete(c.versions, name)
			}
			return
		}
		var v storedVersion
		if err := json.Unmarshal(value, &v); err != nil {
			log.Error("undecodable function version; ignored", "key", key, "err", err.Error())
			return
		}
		if c.versions[name] == nil {
			c.versions[name] = map[int]*storedVersion{}
		}
		c.versions[name][n] = &v
	case "route":
		b, err := base64.RawURLEncoding.DecodeString(rest)
		if err != nil {
			return
		}
		if value == nil {
			delete(c.claims, string(b))
			return
		}
		var cl routeClaim
		if json.Unmarshal(value, &cl) == nil {
			c.claims[string(b)] = claimEntry{cl, rev}
		}
	case "drain":
		if value == nil {
			delete(c.drains, rest)
			return rest, false, true
		}
		c.drains[rest] = true
		return rest, true, true
	}
	return "", false, false
}

// head returns the cached head of name (nil when there is none).
func (c *registryCache) head(name string) (*fnHead, uint64) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.heads[name], c.headRevs[name]
}

// openRegistry opens the registry's bucket on eng, imports dataDir's
// amber.db once, fills the cache and starts watching; onDrain hears every
// drain, the ones already recorded first.
func openRegistry(ctx context.Context, eng *engine.Engine, dataDir string, now func() time.Time, log *slog.Logger, onDrain func(string, bool)) (*registry, error) {
	if onDrain == nil {
		onDrain = func(string, bool) {}
	}
	kv, err := eng.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      registryBucket,
		Description: "amber's functions, versions, pools, routes, schedules and drains",
		History:     1,
	})
	if err != nil {
		return nil, err
	}
	r := &registry{kv: kv, now: now, log: log, timeout: storeTimeout, onDrain: onDrain, cache: newRegistryCache()}
	if dataDir != "" {
		if err := r.importBolt(ctx, dataDir); err != nil {
			return nil, fmt.Errorf("import %s: %w", boltFile(dataDir), err)
		}
	}
	if err := r.watch(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// applyDrain keeps the scheduler's set of drained agents current with the
// registry (every scheduler's drains).
func (s *Scheduler) applyDrain(agent string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.drains[agent] = true
	} else {
		delete(s.drains, agent)
	}
}

// watch fills the cache with the bucket's contents and keeps it current.
func (r *registry) watch(ctx context.Context) error {
	wctx, cancel := context.WithCancel(context.Background())
	w, err := r.kv.WatchAll(wctx)
	if err != nil {
		cancel()
		return engine.Wrap(fmt.Errorf("watch bucket %s: %w", registryBucket, err))
	}
	// The initial values end with a nil entry.
	for loaded := false; !loaded; {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				cancel()
				return engine.Wrap(fmt.Errorf("watch bucket %s: closed while loading", registryBucket))
			}
			if e == nil {
				loaded = true
				continue
			}
			r.applyEntry(e)
		case <-ctx.Done():
			_ = w.Stop()
			cancel()
			return engine.Wrap(fmt.Errorf("load bucket %s: %w", registryBucket, ctx.Err()))
		}
	}
	r.stopWatch, r.watchDone = cancel, make(chan struct{})
	go r.follow(wctx, w)
	return nil
}

// follow applies the watcher's news until ctx ends. Should the watch end
// on its own (its consumer lost for good), it watches again: the initial
// values then bring every change missed, deletes included, and the
// revision check skips what the cache has already.
func (r *registry) follow(ctx context.Context, w jetstream.KeyWatcher) {
	defer close(r.watchDone)
	for {
		r.drain(ctx, w)
		_ = w.Stop()
		for {
			if ctx.Err() != nil {
				return
			}
			r.log.Warn("registry watch ended; watching again", "bucket", registryBucket)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			var err error
			if w, err = r.kv.WatchAll(ctx); err == nil {
				break
			}
			r.log.Warn("watch the registry", "bucket", registryBucket, "err", err.Error())
		}
	}
}

// drain applies w's entries until it closes or ctx ends.
func (r *registry) drain(ctx context.Context, w jetstream.KeyWatcher) {
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e != nil {
				r.applyEntry(e)
			}
		case <-ctx.Done():
			return
		}
	}
}

func (r *registry) applyEntry(e jetstream.KeyValueEntry) {
	var v []byte
	if e.Operation() == jetstream.KeyValuePut {
		v = e.Value()
	}
	r.applyLocal(e.Key(), v, e.Revision())
}

// applyLocal updates the cache (and tells onDrain) after a write.
func (r *registry) applyLocal(key string, value []byte, rev uint64) {
	if agent, on, changed := r.cache.apply(key, value, rev, r.log); changed {
		r.onDrain(agent, on)
	}
}

func (r *registry) close() error {
	if r.stopWatch != nil {
		r.stopWatch()
		<-r.watchDone
	}
	r.sweeps.Wait()
	return nil
}

func (r *registry) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), r.timeout)
}

// storeErr names what failed and marks outages ErrStoreUnavailable.
func storeErr(what string, err error) error {
	return engine.Wrap(fmt.Errorf("%s: %w", what, err))
}

func notFound(name string) error { return fmt.Errorf("function %q %w", name, api.ErrNotFound) }

func versionNotFound(name string, v int) error {
	return fmt.Errorf("function %q version %d %w", name, v, api.ErrNotFound)
}

// checkName refuses a name that is not a valid key part before it reaches
// the store.
func checkName(field, name string) error {
	return api.ValidateName(field, name)
}

func newIncarnation() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// sameSpec reports whether a and b deploy the same thing (nil and empty env
// are the same).
func sameSpec(a, b api.FunctionSpec) bool {
	return a.Name == b.Name && a.Image == b.Image && a.MemoryMB == b.MemoryMB &&
		a.Timeout == b.Timeout && maps.Equal(a.Env, b.Env)
}

// readHead reads name's head from the store (nil, 0 when there is none).
func (r *registry) readHead(ctx context.Context, name string) (*fnHead, uint64, error) {
	e, err := r.kv.Get(ctx, headKey(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, storeErr(fmt.Sprintf("read function %q", name), err)
	}
	var h fnHead
	if err := json.Unmarshal(e.Value(), &h); err != nil {
		return nil, 0, fmt.Errorf("decode function %q: %w", name, err)
	}
	r.applyLocal(e.Key(), e.Value(), e.Revision())
	return &h, e.Revision(), nil
}

// nextVersion takes name's next version number.
func (r *registry) nextVersion(ctx context.Context, name string) (int, error) {
	for range casAttempts {
		e, err := r.kv.Get(ctx, seqKey(name))
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			if _, err := r.kv.Create(ctx, seqKey(name), []byte("1")); err == nil {
				return 1, nil
			} else if !errors.Is(err, jetstream.ErrKeyExists) {
				return 0, storeErr(fmt.Sprintf("version sequence of %q", name), err)
			}
		case err != nil:
			return 0, storeErr(fmt.Sprintf("version sequence of %q", name), err)
		default:
			n, err := strconv.Atoi(string(e.Value()))
			if err != nil {
				return 0, fmt.Errorf("version sequence of %q: %q is not a number", name, e.Value())
			}
			_, err = r.kv.Update(ctx, seqKey(name), []byte(strconv.Itoa(n+1)), e.Revision())
			if err == nil {
				return n + 1, nil
			}
			if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				return 0, storeErr(fmt.Sprintf("version sequence of %q", name), err)
			}
		}
	}
	return 0, fmt.Errorf("version sequence of %q: still contended after %d attempts: %w", name, casAttempts, api.ErrConflict)
}

// put stores spec as the function's next version, unless it is identical
// to the latest version, which is returned with created=false. spec must be
// validated already.
func (r *registry) put(spec api.FunctionSpec) (fn *api.Function, created bool, err error) {
	name := spec.Name
	if err := checkName("name", name); err != nil {
		return nil, false, err
	}
	ctx, cancel := r.opCtx()
	defer cancel()
	// mine is the version this deploy wrote; fresh when it was written for
	// a function created from nothing (its incarnation is new).
	var mine *storedVersion
	fresh := false
	for range casAttempts {
		h, rev, err := r.readHead(ctx, name)
		if err != nil {
			return nil, false, err
		}
		if mine != nil && !(h != nil && h.Incarnation == mine.Incarnation || h == nil && fresh) {
			// The function was deleted, or created by another deploy,
			// while this one ran: write the version again, so that it
			// joins the live incarnation (the first one is garbage).
			mine = nil
		}
		if mine == nil {
			if h != nil && sameSpec(h.Latest.FunctionSpec, spec) {
				f := h.Latest
				return &f, false, nil
			}
			inc := ""
			if h != nil {
				inc = h.Incarnation
			}
			fresh = h == nil
			if mine, err = r.writeVersion(ctx, spec, inc); err != nil {
				return nil, false, err
			}
		}
		if h != nil && h.Latest.Version > mine.Version {
			// A concurrent deploy took a later number: this version is
			// kept, that one is the latest.
			f := mine.Function
			return &f, true, nil
		}
		next := fnHead{Incarnation: mine.Incarnation}
		if h != nil {
			next = *h
		}
		next.Latest = mine.Function
		data, err := json.Marshal(next)
		if err != nil {
			return nil, false, err
		}
		var nrev uint64
		if h == nil {
			nrev, err = r.kv.Create(ctx, headKey(name), data)
		} else {
			nrev, err = r.kv.Update(ctx, headKey(name), data, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return nil, false, storeErr(fmt.Sprintf("deploy %q version %d", name, mine.Version), err)
		}
		r.applyLocal(headKey(name), data, nrev)
		f := mine.Function
		return &f, true, nil
	}
	return nil, false, fmt.Errorf("deploy %q: still contended after %d attempts: %w", name, casAttempts, api.ErrConflict)
}

// writeVersion takes the next number and writes the version key. A
// function created from nothing (inc "") gets a new incarnation here.
func (r *registry) writeVersion(ctx context.Context, spec api.FunctionSpec, inc string) (*storedVersion, error) {
	n, err := r.nextVersion(ctx, spec.Name)
	if err != nil {
		return nil, err
	}
	if inc == "" {
		inc = newIncarnation()
	}
	v := &storedVersion{Function: api.Function{FunctionSpec: spec, Version: n, UpdatedAt: r.now().UTC()}, Incarnation: inc}
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	rev, err := r.kv.Create(ctx, versionKey(spec.Name, n), data)
	if err != nil {
		return nil, storeErr(fmt.Sprintf("write %q version %d", spec.Name, n), err)
	}
	r.applyLocal(versionKey(spec.Name, n), data, rev)
	return v, nil
}

// updateHead changes name's head by compare-and-set, retrying on
// conflict; change may refuse with an error, which is returned as is.
func (r *registry) updateHead(name string, change func(h *fnHead) error) (*fnHead, error) {
	if err := checkName("name", name); err != nil {
		return nil, err
	}
	ctx, cancel := r.opCtx()
	defer cancel()
	for range casAttempts {
		h, rev, err := r.readHead(ctx, name)
		if err != nil {
			return nil, err
		}
		if h == nil {
			return nil, notFound(name)
		}
		next := *h
		if err := change(&next); err != nil {
			return nil, err
		}
		data, err := json.Marshal(next)
		if err != nil {
			return nil, err
		}
		nrev, err := r.kv.Update(ctx, headKey(name), data, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return nil, storeErr(fmt.Sprintf("update function %q", name), err)
		}
		r.applyLocal(headKey(name), data, nrev)
		return &next, nil
	}
	return nil, fmt.Errorf("update function %q: still contended after %d attempts: %w", name, casAttempts, api.ErrConflict)
}

// latest returns the function's latest version, from memory.
func (r *registry) latest(name string) (*api.Function, error) {
	r.cache.mu.RLock()
	h := r.cache.heads[name]
	var f api.Function
	if h != nil {
		f = h.Latest
	}
	r.cache.mu.RUnlock()
	if h == nil {
		return nil, notFound(name)
	}
	return &f, nil
}

// version returns one version of a function: from memory, or from the
// store when this scheduler's watcher has not seen it yet.
func (r *registry) version(name string, v int) (*api.Function, error) {
	r.cache.mu.RLock()
	h := r.cache.heads[name]
	sv := r.cache.versions[name][v]
	r.cache.mu.RUnlock()
	if h == nil {
		return nil, notFound(name)
	}
	if v == h.Latest.Version {
		f := h.Latest
		return &f, nil
	}
	if sv == nil {
		if err := checkName("name", name); err != nil {
			return nil, err
		}
		ctx, cancel := r.opCtx()
		defer cancel()
		e, err := r.kv.Get(ctx, versionKey(name, v))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, versionNotFound(name, v)
		}
		if err != nil {
			return nil, storeErr(fmt.Sprintf("read %q version %d", name, v), err)
		}
		sv = &storedVersion{}
		if err := json.Unmarshal(e.Value(), sv); err != nil {
			return nil, fmt.Errorf("decode %q version %d: %w", name, v, err)
		}
		r.applyLocal(e.Key(), e.Value(), e.Revision())
	}
	if sv.Incarnation != h.Incarnation {
		return nil, versionNotFound(name, v) // a deleted function's
	}
	f := sv.Function
	return &f, nil
}

// versions returns every kept version of a function, oldest first.
func (r *registry) versions(name string) ([]api.Function, error) {
	r.cache.mu.RLock()
	defer r.cache.mu.RUnlock()
	h := r.cache.heads[name]
	if h == nil {
		return nil, notFound(name)
	}
	var out []api.Function
	for _, sv := range r.cache.versions[name] {
		if sv.Incarnation == h.Incarnation {
			out = append(out, sv.Function)
		}
	}
	if !slices.ContainsFunc(out, func(f api.Function) bool { return f.Version == h.Latest.Version }) {
		out = append(out, h.Latest)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// list returns the latest version of every function, sorted by name.
func (r *registry) list() ([]api.Function, error) {
	r.cache.mu.RLock()
	out := make([]api.Function, 0, len(r.cache.heads))
	for _, h := range r.cache.heads {
		out = append(out, h.Latest)
	}
	r.cache.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// remove deletes a function in one step, its head key; its route,
// schedule, pool and async settings go with it. The sequence stays; the
// versions are swept in the background.
func (r *registry) remove(name string) error {
	if err := checkName("name", name); err != nil {
		return err
	}
	ctx, cancel := r.opCtx()
	defer cancel()
	for range casAttempts {
		h, rev, err := r.readHead(ctx, name)
		if err != nil {
			return err
		}
		if h == nil {
			return notFound(name)
		}
		err = r.kv.Delete(ctx, headKey(name), jetstream.LastRevision(rev))
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return storeErr(fmt.Sprintf("delete function %q", name), err)
		}
		// The delete's own revision is at least rev+1: the watcher can
		// neither bring back the head it replaced nor miss a later one.
		r.applyLocal(headKey(name), nil, rev+1)
		r.sweeps.Add(1)
		go func() {
			defer r.sweeps.Done()
			r.sweep(name, h)
		}()
		return nil
	}
	return fmt.Errorf("delete function %q: still contended after %d attempts: %w", name, casAttempts, api.ErrConflict)
}

// sweep purges what a deleted incarnation left: its versions and its
// route's claim. Best effort: what stays is invisible (see registry).
func (r *registry) sweep(name string, h *fnHead) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r.cache.mu.RLock()
	var keys []string
	for n, sv := range r.cache.versions[name] {
		if sv.Incarnation == h.Incarnation {
			keys = append(keys, versionKey(name, n))
		}
	}
	var claims []struct {
		path string
		rev  uint64
	}
	for path, c := range r.cache.claims {
		if c.Function == name && c.Incarnation == h.Incarnation {
			claims = append(claims, struct {
				path string
				rev  uint64
			}{path, c.rev})
		}
	}
	r.cache.mu.RUnlock()
	for _, k := range keys {
		if err := r.kv.Purge(ctx, k); err != nil {
			r.log.Warn("sweep a deleted function's version", "key", k, "err", err.Error())
			return
		}
	}
	for _, c := range claims {
		// Only if nobody took the path over meanwhile.
		if err := r.kv.Purge(ctx, claimKey(c.path), jetstream.LastRevision(c.rev)); err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			r.log.Warn("sweep a deleted function's route", "path", c.path, "err", err.Error())
		}
	}
	if len(keys) > 0 {
		r.log.Debug("swept a deleted function", "function", name, "versions", len(keys), "routes", len(claims))
	}
}

// advanceSchedule moves name's schedule from one fire state to the next
// by compare-and-set: false (and no error) when the schedule is no longer
// from — another scheduler fired it first, or it was changed or deleted.
func (r *registry) advanceSchedule(name string, from, to api.Schedule) (bool, error) {
	errMoved := errors.New("schedule moved")
	_, err := r.updateHead(name, func(h *fnHead) error {
		if h.Schedule == nil || !sameSchedule(*h.Schedule, from) {
			return errMoved
		}
		h.Schedule = &to
		return nil
	})
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, errMoved), errors.Is(err, api.ErrNotFound):
		return false, nil
	}
	return false, err
}

func sameSchedule(a, b api.Schedule) bool {
	return a.Function == b.Function && a.Expression == b.Expression && a.CreatedAt.Equal(b.CreatedAt) &&
		a.NextAt.Equal(b.NextAt) && a.LastFiredAt.Equal(b.LastFiredAt) && a.Fired == b.Fired
}

// setDrain records (on) or clears an operator's drain of an agent.
func (r *registry) setDrain(agent string, on bool) error {
	if err := checkName("agent", agent); err != nil {
		return err
	}
	ctx, cancel := r.opCtx()
	defer cancel()
	if !on {
		if err := r.kv.Delete(ctx, drainKey(agent)); err != nil {
			return storeErr("clear drain", err)
		}
		r.cache.mu.Lock()
		rev := r.cache.revs[drainKey(agent)]
		r.cache.mu.Unlock()
		r.applyLocal(drainKey(agent), nil, rev+1)
		return nil
	}
	data := []byte(r.now().UTC().Format(time.RFC3339))
	rev, err := r.kv.Put(ctx, drainKey(agent), data)
	if err != nil {
		return storeErr("record drain", err)
	}
	r.applyLocal(drainKey(agent), data, rev)
	return nil
}
