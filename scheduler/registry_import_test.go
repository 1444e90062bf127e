package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/amberfn/amber/api"
)

// msgCounter counts log records by message.
type msgCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *msgCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *msgCounter) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[r.Message]++
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "part" {
			c.n[r.Message+"/"+a.Value.String()]++
		}
		return true
	})
	return nil
}
func (c *msgCounter) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *msgCounter) WithGroup(string) slog.Handler      { return c }
func (c *msgCounter) count(msg string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[msg]
}

// writeLegacyRegistry writes dir/amber.db as the bbolt registry had it.
func writeLegacyRegistry(t *testing.T, dir string) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, "amber.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	fn := func(name string, v, mem int) api.Function {
		return api.Function{FunctionSpec: testSpec(name, mem), Version: v, UpdatedAt: at}
	}
	jsonOf := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	put := func(tx *bolt.Tx, bucket string, key, value []byte) {
		b, err := tx.CreateBucketIfNotExists([]byte(bucket))
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Put(key, value); err != nil {
			t.Fatal(err)
		}
	}
	vkey := func(v int) []byte { return append([]byte("v"), u64(uint64(v))...) }
	err = db.Update(func(tx *bolt.Tx) error {
		fns, _ := tx.CreateBucketIfNotExists([]byte("functions"))
		// hello: versions 1 and 2; other: deleted at 2, deployed again as 3.
		for name, versions := range map[string][]api.Function{
			"hello": {fn("hello", 1, 128), fn("hello", 2, 256)},
			"other": {fn("other", 3, 512)},
		} {
			b, err := fns.CreateBucket([]byte(name))
			if err != nil {
				return err
			}
			for _, v := range versions {
				if err := b.Put(vkey(v.Version), jsonOf(v)); err != nil {
					return err
				}
			}
			last := versions[len(versions)-1].Version
			if err := b.Put([]byte("latest"), u64(uint64(last))); err != nil {
				return err
			}
			put(tx, "sequences", []byte(name), u64(uint64(last)))
		}
		put(tx, "pools", []byte("hello"), jsonOf(api.PoolSettings{MinWarm: 2, MaxInstances: 4, KeepAlive: api.Duration(time.Minute)}))
		put(tx, "http_routes", []byte("hello"), jsonOf(Route{Function: "hello", Path: "/hi", Methods: []string{"GET"}, UpdatedAt: at}))
		// A route a delete cut short left behind: not brought along.
		put(tx, "http_routes", []byte("gone"), jsonOf(Route{Function: "gone", Path: "/gone", UpdatedAt: at}))
		put(tx, "schedules", []byte("hello"), jsonOf(api.Schedule{Function: "hello", Expression: "rate(1 hour)", CreatedAt: at,
			NextAt: at.Add(time.Hour), LastFiredAt: at, Fired: 9}))
		put(tx, "async_config", []byte("hello"), jsonOf(api.AsyncConfig{MaxRetries: 5}))
		put(tx, "drains", []byte("agent-1"), []byte(at.Format(time.RFC3339)))
		// What other parts import on their own.
		put(tx, "async_queue", u64(1), []byte(`{}`))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A scheduler started on a data folder of the bbolt registry imports it
// once, with nothing lost; a restart imports nothing again.
func TestImportFromBolt(t *testing.T) {
	dir := t.TempDir()
	writeLegacyRegistry(t, dir)
	logs := &msgCounter{n: map[string]int{}}
	clock := newFakeClock()
	open := func() *Scheduler {
		s, err := New(WithDataDir(dir), WithLogger(slog.New(logs)), WithClock(clock.Now))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	if n := logs.count("imported from bbolt/registry"); n != 1 {
		t.Fatalf("import logged %d times; want once", n)
	}
	fns, _ := s.reg.list()
	if len(fns) != 2 || fns[0].Name != "hello" || fns[0].Version != 2 || fns[0].MemoryMB != 256 || fns[1].Name != "other" || fns[1].Version != 3 {
		t.Fatalf("functions %+v", fns)
	}
	checks := []struct {
		what string
		ok   func() bool
	}{
		{"versions", func() bool {
			vs, _ := s.reg.versions("hello")
			return len(vs) == 2 && vs[0].Version == 1 && vs[0].MemoryMB == 128
		}},
		{"an older version", func() bool { v, err := s.reg.version("hello", 1); return err == nil && v.MemoryMB == 128 }},
		{"pool", func() bool {
			p, _ := s.reg.pool("hello")
			return p.MinWarm == 2 && p.MaxInstances == 4 && p.KeepAlive == api.Duration(time.Minute)
		}},
		{"default pool", func() bool { p, _ := s.reg.pool("other"); return p == api.DefaultPool() }},
		{"route", func() bool {
			rs, _ := s.routes()
			return len(rs) == 1 && rs[0].Function == "hello" && rs[0].Path == "/hi" && rs[0].Methods[0] == "GET"
		}},
		{"schedule and its fire state", func() bool {
			sc, _ := s.schedules()
			return len(sc) == 1 && sc[0].Expression == "rate(1 hour)" && sc[0].Fired == 9 && !sc[0].LastFiredAt.IsZero()
		}},
		{"async settings", func() bool { return s.asyncConfig("hello").MaxRetries == 5 }},
		{"drain", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.drains["agent-1"] }},
		{"the sequence continues", func() bool { f, _, err := s.reg.put(testSpec("hello", 1024)); return err == nil && f.Version == 3 }},
		{"the stale route's path is free", func() bool { _, err := s.putRoute("other", RouteSpec{Path: "/gone"}); return err == nil }},
		{"the route's path is held", func() bool {
			_, err := s.putRoute("other", RouteSpec{Path: "/hi"})
			return errors.Is(err, api.ErrConflict)
		}},
	}
	for _, c := range checks {
		if !c.ok() {
			t.Errorf("after import: %s", c.what)
		}
	}
	// Changed after the import: a second import would undo these.
	if err := s.reg.remove("other"); err != nil {
		t.Fatal(err)
	}
	if err := s.reg.setPool("hello", api.DefaultPool()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open()
	defer s.Close()
	if n := logs.count("imported from bbolt/registry"); n != 1 {
		t.Errorf("imported again on restart (logged %d times)", n)
	}
	if _, err := s.reg.latest("other"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("deleted function back after restart: %v", err)
	}
	if p, _ := s.reg.pool("hello"); p != api.DefaultPool() {
		t.Errorf("pool after restart %+v; want the defaults set after the import", p)
	}
	if f, _ := s.reg.latest("hello"); f == nil || f.Version != 3 {
		t.Errorf("latest after restart %+v; want version 3", f)
	}
	if vs, _ := s.reg.versions("hello"); len(vs) != 3 {
		t.Errorf("versions after restart: %d; want 3", len(vs))
	}
}
