package scheduler

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/amberfn/amber/api"
)

// Before JetStream the registry lived in bbolt, in DATA/amber.db (which
// also holds the async queue and dead letters, imported by their own part):
//
//	functions/<name>/latest          uint64 BE: the latest version
//	functions/<name>/v<uint64 BE>    JSON api.Function
//	sequences/<name>                 uint64 BE: the last version ever assigned
//	pools/<name>                     JSON api.PoolSettings
//	drains/<agent>                   RFC 3339 time
//	http_routes/<name>               JSON Route
//	schedules/<name>                 JSON api.Schedule
//	async_config/<name>              JSON api.AsyncConfig
//
// A scheduler imports its data folder's amber.db once, and records that in
// the bucket (import.<id of the folder>); amber.db itself is left as it
// is. Each data folder is imported once, so several schedulers upgraded
// into one cluster each bring their own; a function already in the bucket
// is kept as it is (the first import wins) and the skip is logged.
var (
	bucketFunctions = []byte("functions")
	bucketSequences = []byte("sequences")
	bucketPools     = []byte("pools")
	bucketDrains    = []byte("drains")
	bucketRoutes    = []byte("http_routes")
	bucketSchedules = []byte("schedules")
	keyLatest       = []byte("latest")
)

// boltFile is the bbolt database of a data folder.
func boltFile(dataDir string) string { return filepath.Join(dataDir, "amber.db") }

func u64(n uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return b[:]
}

// importMarkKey names the import of one data folder.
func importMarkKey(dataDir string) string {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		abs = dataDir
	}
	host, _ := os.Hostname()
	sum := sha256.Sum256([]byte(host + "\x00" + abs))
	return "import." + hex.EncodeToString(sum[:8])
}

// importMark is what the marker key records.
type importMark struct {
	At        time.Time `json:"at"`
	Host      string    `json:"host"`
	Dir       string    `json:"dir"`
	Functions int       `json:"functions"`
	Versions  int       `json:"versions"`
	Pools     int       `json:"pools"`
	Routes    int       `json:"routes"`
	Schedules int       `json:"schedules"`
	Async     int       `json:"async"`
	Drains    int       `json:"drains"`
	Skipped   []string  `json:"skipped,omitempty"`
}

// legacyFunction is one function as amber.db had it.
type legacyFunction struct {
	name     string
	versions []api.Function // oldest first
	latest   int
	seq      uint64
	pool     *api.PoolSettings
	route    *Route
	schedule *api.Schedule
	async    *api.AsyncConfig
}

// importBolt copies dataDir's amber.db into the bucket, once.
func (r *registry) importBolt(ctx context.Context, dataDir string) error {
	mark := importMarkKey(dataDir)
	if _, err := r.kv.Get(ctx, mark); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return storeErr("read the import mark", err)
	}
	path := boltFile(dataDir)
	host, _ := os.Hostname()
	m := importMark{At: r.now().UTC(), Host: host, Dir: dataDir}
	if _, err := os.Stat(path); err == nil {
		fns, drains, err := readLegacy(path)
		if err != nil {
			return err
		}
		for _, f := range fns {
			imported, err := r.importFunction(ctx, f)
			if err != nil {
				return fmt.Errorf("function %q: %w", f.name, err)
			}
			if !imported {
				m.Skipped = append(m.Skipped, f.name)
				r.log.Warn("not imported from bbolt: a function of that name is in the store already", "function", f.name, "file", path)
				continue
			}
			m.Functions++
			m.Versions += len(f.versions)
			for _, set := range []struct {
				n  *int
				ok bool
			}{{&m.Pools, f.pool != nil}, {&m.Routes, f.route != nil}, {&m.Schedules, f.schedule != nil}, {&m.Async, f.async != nil}} {
				if set.ok {
					*set.n++
				}
			}
		}
		for agent, at := range drains {
			if err := checkName("agent", agent); err != nil {
				r.log.Warn("drain not imported", "agent", agent, "err", err.Error())
				continue
			}
			if _, err := r.kv.Put(ctx, drainKey(agent), []byte(at)); err != nil {
				return storeErr("import drain of "+agent, err)
			}
			m.Drains++
		}
		r.log.Info("imported from bbolt", "part", "registry", "file", path, "functions", m.Functions, "versions", m.Versions,
			"pools", m.Pools, "routes", m.Routes, "schedules", m.Schedules, "async_settings", m.Async,
			"drains", m.Drains, "skipped", len(m.Skipped))
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if _, err := r.kv.Put(ctx, mark, data); err != nil {
		return storeErr("record the import", err)
	}
	return nil
}

// importFunction writes one function's versions, sequence and head; false
// when the bucket has a function of that name already. Run again after a
// crash part-way, it writes the same keys again.
func (r *registry) importFunction(ctx context.Context, f legacyFunction) (bool, error) {
	if err := checkName("name", f.name); err != nil {
		return false, err
	}
	if _, err := r.kv.Get(ctx, headKey(f.name)); err == nil {
		return false, nil
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, storeErr("read head", err)
	}
	inc := newIncarnation()
	var head *fnHead
	for _, v := range f.versions {
		data, err := json.Marshal(storedVersion{Function: v, Incarnation: inc})
		if err != nil {
			return false, err
		}
		if _, err := r.kv.Put(ctx, versionKey(f.name, v.Version), data); err != nil {
			return false, storeErr(fmt.Sprintf("version %d", v.Version), err)
		}
		if v.Version == f.latest {
			head = &fnHead{Incarnation: inc, Latest: v, Pool: f.pool, Route: f.route, Schedule: f.schedule, Async: f.async}
		}
	}
	if head == nil {
		return false, fmt.Errorf("latest version %d is missing", f.latest)
	}
	// The sequence: the highest of what was assigned, what is kept, and
	// what the bucket has already.
	seq := max(f.seq, uint64(f.versions[len(f.versions)-1].Version))
	if e, err := r.kv.Get(ctx, seqKey(f.name)); err == nil {
		if n, err := strconv.ParseUint(string(e.Value()), 10, 64); err == nil {
			seq = max(seq, n)
		}
	}
	if _, err := r.kv.Put(ctx, seqKey(f.name), []byte(strconv.FormatUint(seq, 10))); err != nil {
		return false, storeErr("sequence", err)
	}
	if f.route != nil {
		data, _ := json.Marshal(routeClaim{Function: f.name, Incarnation: inc})
		if _, err := r.kv.Put(ctx, claimKey(f.route.Path), data); err != nil {
			return false, storeErr("route", err)
		}
	}
	data, err := json.Marshal(head)
	if err != nil {
		return false, err
	}
	if _, err := r.kv.Create(ctx, headKey(f.name), data); errors.Is(err, jetstream.ErrKeyExists) {
		return false, nil
	} else if err != nil {
		return false, storeErr("head", err)
	}
	return true, nil
}

// readLegacy reads the registry's buckets of an amber.db (read-only).
// Settings of functions no longer there (left by a delete cut short) are
// not brought along.
func readLegacy(path string) ([]legacyFunction, map[string]string, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	var fns []legacyFunction
	drains := map[string]string{}
	err = db.View(func(tx *bolt.Tx) error {
		get := func(bucket, key []byte) []byte {
			if b := tx.Bucket(bucket); b != nil {
				return b.Get(key)
			}
			return nil
		}
		if b := tx.Bucket(bucketDrains); b != nil {
			if err := b.ForEach(func(k, v []byte) error { drains[string(k)] = string(v); return nil }); err != nil {
				return err
			}
		}
		fb := tx.Bucket(bucketFunctions)
		if fb == nil {
			return nil
		}
		return fb.ForEachBucket(func(k []byte) error {
			b := fb.Bucket(k)
			f := legacyFunction{name: string(k)}
			lv := b.Get(keyLatest)
			if len(lv) != 8 {
				return nil // a function bucket without a latest version: nothing deployed
			}
			f.latest = int(binary.BigEndian.Uint64(lv))
			err := b.ForEach(func(vk, v []byte) error {
				if len(vk) != 9 || vk[0] != 'v' {
					return nil
				}
				var fn api.Function
				if err := json.Unmarshal(v, &fn); err != nil {
					return fmt.Errorf("function %q version %d: %w", k, binary.BigEndian.Uint64(vk[1:]), err)
				}
				f.versions = append(f.versions, fn)
				return nil
			})
			if err != nil {
				return err
			}
			if len(f.versions) == 0 {
				return nil
			}
			sort.Slice(f.versions, func(i, j int) bool { return f.versions[i].Version < f.versions[j].Version })
			if s := get(bucketSequences, k); len(s) == 8 {
				f.seq = binary.BigEndian.Uint64(s)
			}
			decode := func(bucket []byte, into any) (bool, error) {
				v := get(bucket, k)
				if v == nil {
					return false, nil
				}
				if err := json.Unmarshal(v, into); err != nil {
					return false, fmt.Errorf("%s of function %q: %w", bucket, k, err)
				}
				return true, nil
			}
			pool, rt, sc, ac := api.DefaultPool(), Route{}, api.Schedule{}, api.AsyncConfig{}
			if ok, err := decode(bucketPools, &pool); err != nil {
				return err
			} else if ok {
				f.pool = &pool
			}
			if ok, err := decode(bucketRoutes, &rt); err != nil {
				return err
			} else if ok {
				f.route = &rt
			}
			if ok, err := decode(bucketSchedules, &sc); err != nil {
				return err
			} else if ok {
				f.schedule = &sc
			}
			if ok, err := decode(bucketAsyncConfig, &ac); err != nil {
				return err
			} else if ok {
				f.async = &ac
			}
			fns = append(fns, f)
			return nil
		})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	return fns, drains, nil
}
