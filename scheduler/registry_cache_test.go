package scheduler

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/scheduler/internal/engine"
)

// The cache in front of latest and pool never serves what a write replaced.
func TestRegistryCacheFollowsWrites(t *testing.T) {
	r := openTestRegistry(t)
	spec := api.FunctionSpec{Name: "f", Image: "hello.tar", MemoryMB: 128, Timeout: api.Duration(3 * time.Second)}
	steps := []struct {
		name  string
		write func() error
		check func() error
	}{
		{"first version", func() error { _, _, err := r.put(spec); return err }, func() error {
			return wantLatest(r, 1, 128)
		}},
		{"second version", func() error { spec.MemoryMB = 256; _, _, err := r.put(spec); return err }, func() error {
			return wantLatest(r, 2, 256)
		}},
		{"pool change", func() error { return r.setPool("f", api.PoolSettings{MinWarm: 3}) }, func() error {
			p, err := r.pool("f")
			if err != nil || p.MinWarm != 3 {
				return errors.New("pool not updated")
			}
			return nil
		}},
		{"removed", func() error { return r.remove("f") }, func() error {
			if _, err := r.latest("f"); !errors.Is(err, api.ErrNotFound) {
				return errors.New("removed function still served: " + errString(err))
			}
			if p, _ := r.pool("f"); p.MinWarm != 0 {
				return errors.New("removed function's pool still served")
			}
			return nil
		}},
	}
	for _, st := range steps {
		// Fill the cache, write, read again.
		_, _ = r.latest("f")
		_, _ = r.pool("f")
		if err := st.write(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		for range 2 {
			if err := st.check(); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
		}
	}
}

// openTestRegistry opens a registry on its own embedded node.
func openTestRegistry(t *testing.T) *registry {
	t.Helper()
	ctx := context.Background()
	eng, err := engine.Open(ctx, engine.Config{Dir: filepath.Join(t.TempDir(), "nats")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	r, err := openRegistry(ctx, eng, "", time.Now, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.close() })
	return r
}

func wantLatest(r *registry, version, memory int) error {
	f, err := r.latest("f")
	if err != nil {
		return err
	}
	if f.Version != version || f.MemoryMB != memory {
		return errors.New("stale latest version")
	}
	f.MemoryMB = 1 // a caller's change does not reach the cache
	return nil
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}
