package scheduler

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/amberfn/amber/api"
)

// The registry keeps every deployed version of every function in bbolt:
//
//	functions/<name>/latest          uint64 BE: the latest version
//	functions/<name>/v<uint64 BE>    JSON api.Function
//	sequences/<name>                 uint64 BE: the last version ever assigned
//
// The sequence outlives a delete, so a function deleted and deployed again
// continues at the next number: an agent never sees two different specs
// under one name and version.
var (
	bucketFunctions = []byte("functions")
	bucketSequences = []byte("sequences")
	// bucketDrains holds the agents an operator drained: name → RFC 3339
	// time. Drains outlive a scheduler restart and the agent's own restarts.
	bucketDrains = []byte("drains")
	keyLatest    = []byte("latest")
)

type registry struct {
	db  *bolt.DB
	now func() time.Time

	// cache holds decoded latest versions and pool settings, read on
	// every invocation; put, remove and setPool invalidate it.
	cache registryCache
}

// registryCache is a read-through cache of what every invocation reads.
// gen counts invalidations: a value read from bbolt is cached only if no
// write committed while it was being read.
type registryCache struct {
	mu     sync.RWMutex
	gen    uint64
	latest map[string]*api.Function
	pools  map[string]api.PoolSettings
}

func (c *registryCache) getLatest(name string) (*api.Function, uint64, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	f, ok := c.latest[name]
	return f, c.gen, ok
}

func (c *registryCache) getPool(name string) (api.PoolSettings, uint64, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	p, ok := c.pools[name]
	return p, c.gen, ok
}

func (c *registryCache) store(gen uint64, fill func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if c.latest == nil {
		c.latest, c.pools = map[string]*api.Function{}, map[string]api.PoolSettings{}
	}
	fill()
}

// invalidate forgets name; called after a write to it committed.
func (c *registryCache) invalidate(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.latest, name)
	delete(c.pools, name)
}

func openRegistry(path string, now func() time.Time) (*registry, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketFunctions, bucketSequences, bucketPools, bucketDrains} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	return &registry{db: db, now: now}, nil
}

func (r *registry) close() error { return r.db.Close() }

func u64(n uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return b[:]
}

func versionKey(v int) []byte { return append([]byte("v"), u64(uint64(v))...) }

func notFound(name string) error { return fmt.Errorf("function %q %w", name, api.ErrNotFound) }

func versionNotFound(name string, v int) error {
	return fmt.Errorf("function %q version %d %w", name, v, api.ErrNotFound)
}

// sameSpec reports whether a and b deploy the same thing (nil and empty env
// are the same).
func sameSpec(a, b api.FunctionSpec) bool {
	return a.Name == b.Name && a.Image == b.Image && a.MemoryMB == b.MemoryMB &&
		a.Timeout == b.Timeout && maps.Equal(a.Env, b.Env)
}

// put stores spec as the function's next version, unless it is identical
// to the latest version, which is returned with created=false. spec must be
// validated already.
func (r *registry) put(spec api.FunctionSpec) (fn *api.Function, created bool, err error) {
	defer r.cache.invalidate(spec.Name)
	err = r.db.Update(func(tx *bolt.Tx) error {
		fb, err := tx.Bucket(bucketFunctions).CreateBucketIfNotExists([]byte(spec.Name))
		if err != nil {
			return err
		}
		if lv := fb.Get(keyLatest); lv != nil {
			var cur api.Function
			if err := json.Unmarshal(fb.Get(versionKey(int(binary.BigEndian.Uint64(lv)))), &cur); err != nil {
				return fmt.Errorf("decode latest version of %q: %w", spec.Name, err)
			}
			if sameSpec(cur.FunctionSpec, spec) {
				fn = &cur
				return nil
			}
		}
		seq := tx.Bucket(bucketSequences)
		var next uint64 = 1
		if b := seq.Get([]byte(spec.Name)); b != nil {
			next = binary.BigEndian.Uint64(b) + 1
		}
		f := api.Function{FunctionSpec: spec, Version: int(next), UpdatedAt: r.now().UTC()}
		data, err := json.Marshal(f)
		if err != nil {
			return err
		}
		if err := fb.Put(versionKey(f.Version), data); err != nil {
			return err
		}
		if err := fb.Put(keyLatest, u64(next)); err != nil {
			return err
		}
		if err := seq.Put([]byte(spec.Name), u64(next)); err != nil {
			return err
		}
		fn, created = &f, true
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return fn, created, nil
}

func readVersion(fb *bolt.Bucket, name string, v int) (*api.Function, error) {
	data := fb.Get(versionKey(v))
	if data == nil {
		return nil, versionNotFound(name, v)
	}
	var f api.Function
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("decode %q version %d: %w", name, v, err)
	}
	return &f, nil
}

func readLatest(fb *bolt.Bucket, name string) (*api.Function, error) {
	lv := fb.Get(keyLatest)
	if lv == nil {
		return nil, notFound(name)
	}
	return readVersion(fb, name, int(binary.BigEndian.Uint64(lv)))
}

// latest returns the function's latest version.
func (r *registry) latest(name string) (*api.Function, error) {
	f, gen, ok := r.cache.getLatest(name)
	if ok {
		c := *f
		return &c, nil
	}
	err := r.db.View(func(tx *bolt.Tx) error {
		fb := tx.Bucket(bucketFunctions).Bucket([]byte(name))
		if fb == nil {
			return notFound(name)
		}
		var err error
		f, err = readLatest(fb, name)
		return err
	})
	if err != nil {
		return nil, err
	}
	c := *f
	r.cache.store(gen, func() { r.cache.latest[name] = &c })
	return f, nil
}

// version returns one version of a function.
func (r *registry) version(name string, v int) (*api.Function, error) {
	var f *api.Function
	err := r.db.View(func(tx *bolt.Tx) error {
		fb := tx.Bucket(bucketFunctions).Bucket([]byte(name))
		if fb == nil {
			return notFound(name)
		}
		var err error
		f, err = readVersion(fb, name, v)
		return err
	})
	return f, err
}

// versions returns every kept version of a function, oldest first.
func (r *registry) versions(name string) ([]api.Function, error) {
	var out []api.Function
	err := r.db.View(func(tx *bolt.Tx) error {
		fb := tx.Bucket(bucketFunctions).Bucket([]byte(name))
		if fb == nil {
			return notFound(name)
		}
		return fb.ForEach(func(k, v []byte) error {
			if len(k) != 9 || k[0] != 'v' {
				return nil
			}
			var f api.Function
			if err := json.Unmarshal(v, &f); err != nil {
				return fmt.Errorf("decode %q %x: %w", name, k, err)
			}
			out = append(out, f)
			return nil
		})
	})
	return out, err
}

// list returns the latest version of every function, sorted by name.
func (r *registry) list() ([]api.Function, error) {
	var out []api.Function
	err := r.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFunctions).ForEachBucket(func(k []byte) error {
			f, err := readLatest(tx.Bucket(bucketFunctions).Bucket(k), string(k))
			if errors.Is(err, api.ErrNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			out = append(out, *f)
			return nil
		})
	})
	return out, err
}

// remove deletes a function and all its versions (its sequence stays).
func (r *registry) remove(name string) error {
	defer r.cache.invalidate(name)
	return r.db.Update(func(tx *bolt.Tx) error {
		fns := tx.Bucket(bucketFunctions)
		if fns.Bucket([]byte(name)) == nil {
			return notFound(name)
		}
		if pools := tx.Bucket(bucketPools); pools != nil {
			if err := pools.Delete([]byte(name)); err != nil {
				return err
			}
		}
		return fns.DeleteBucket([]byte(name))
	})
}

// setDrain records (on) or clears an operator's drain of an agent.
func (r *registry) setDrain(agent string, on bool) error {
	return r.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDrains)
		if !on {
			return b.Delete([]byte(agent))
		}
		return b.Put([]byte(agent), []byte(r.now().UTC().Format(time.RFC3339)))
	})
}

// drains lists the agents an operator drained.
func (r *registry) drains() (map[string]bool, error) {
	out := map[string]bool{}
	err := r.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDrains).ForEach(func(k, _ []byte) error {
			out[string(k)] = true
			return nil
		})
	})
	return out, err
}
