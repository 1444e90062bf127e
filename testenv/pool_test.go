package testenv_test

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// sleeper deploys the shell example with a handler that sleeps a second
// when the event says "sleep".
func sleeper(t *testing.T, f *fixture, name string) {
	t.Helper()
	stage := filepath.Join(f.dir, "stage-"+name)
	os.RemoveAll(stage)
	if err := copyDir(filepath.Join(f.dir, "stage-shell"), stage); err != nil {
		t.Fatal(err)
	}
	handler := "handler() { case \"$(cat \"$1\")\" in *sleep*) /var/task/busybox sleep 1 ;; esac; printf '{\"ok\":true}'; }\n"
	if err := os.WriteFile(filepath.Join(stage, "handler.sh"), []byte(handler), 0o644); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(f.dir, name+".tar")
	if err := buildArchive(stage, archive); err != nil {
		t.Fatal(err)
	}
	deploy(t, f.cluster.Client(), name, archive)
}

func ptr[T any](v T) *T { return &v }

// instancesOf counts a function's live instances by state.
func instancesOf(t *testing.T, c *api.Client, name string) (idle, busy, total int) {
	t.Helper()
	fs, err := c.Function(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range fs.Instances {
		switch in.State {
		case api.StateIdle:
			idle++
		case api.StateBusy:
			busy++
		}
		if in.State != api.StateGone {
			total++
		}
	}
	return idle, busy, total
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestPoolMinWarmKeepsIdleInstances(t *testing.T) {
	f := cluster(t)
	c := f.cluster.Client()
	sleeper(t, f, "pool-warm")
	st, err := c.SetPool(t.Context(), "pool-warm", api.PoolChange{MinWarm: ptr(2)})
	if err != nil {
		t.Fatal(err)
	}
	shares := 0
	for _, sh := range st.Shares {
		shares += sh.MinWarm
	}
	if st.MinWarm != 2 || shares != 2 {
		t.Fatalf("pool = %+v, want min_warm 2 spread over the agents", st)
	}
	waitFor(t, "two idle instances", func() bool { idle, _, _ := instancesOf(t, c, "pool-warm"); return idle == 2 })
	res, err := c.Invoke(t.Context(), "pool-warm", []byte(`{}`))
	if err != nil || res.StartKind != api.StartWarm {
		t.Fatalf("invoke with a provisioned pool: %v %+v, want a warm start", err, res)
	}
	// Back to zero: the idle instances are retired.
	if _, err := c.SetPool(t.Context(), "pool-warm", api.PoolChange{MinWarm: ptr(0), KeepAlive: ptr(api.Duration(time.Second))}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pool to empty", func() bool { _, _, total := instancesOf(t, c, "pool-warm"); return total == 0 })
}

func TestPoolMaxInstancesBurst(t *testing.T) {
	f := cluster(t)
	c := f.cluster.Client()
	sleeper(t, f, "pool-cap")
	if _, err := c.SetPool(t.Context(), "pool-cap", api.PoolChange{MaxInstances: ptr(4)}); err != nil {
		t.Fatal(err)
	}
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		instances = map[string]bool{}
		failures  []string
		stop      = make(chan struct{})
		maxSeen   int
	)
	go func() { // watch the instance count while the burst runs
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			_, _, total := instancesOf(t, c, "pool-cap")
			mu.Lock()
			maxSeen = max(maxSeen, total)
			mu.Unlock()
		}
	}()
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := c.Invoke(t.Context(), "pool-cap", []byte(`"sleep"`))
			mu.Lock()
			defer mu.Unlock()
			if err != nil || res.FunctionError != "" {
				failures = append(failures, err.Error())
				return
			}
			instances[res.Instance] = true
		}()
	}
	wg.Wait()
	close(stop)
	if len(failures) > 0 {
		t.Errorf("%d of 10 invocations failed: %v", len(failures), failures)
	}
	if len(instances) > 4 || maxSeen > 4 {
		t.Errorf("max_instances 4: results came from %d instances, %d seen at once", len(instances), maxSeen)
	}
	t.Logf("10 invocations served by %d instances (at most %d seen at once)", len(instances), maxSeen)
}

func TestPoolShrinkWhileBusyDropsNothing(t *testing.T) {
	f := cluster(t)
	c := f.cluster.Client()
	sleeper(t, f, "pool-shrink")
	if _, err := c.SetPool(t.Context(), "pool-shrink", api.PoolChange{MinWarm: ptr(3)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "three idle instances", func() bool { idle, _, _ := instancesOf(t, c, "pool-shrink"); return idle == 3 })
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := c.Invoke(t.Context(), "pool-shrink", []byte(`"sleep"`))
			if err == nil && res.FunctionError != "" {
				err = &api.FunctionError{ErrorMessage: string(res.Payload)}
			}
			errs <- err
		}()
	}
	waitFor(t, "the invocations to be busy", func() bool { _, busy, _ := instancesOf(t, c, "pool-shrink"); return busy >= 2 })
	if _, err := c.SetPool(t.Context(), "pool-shrink", api.PoolChange{MinWarm: ptr(0), KeepAlive: ptr(api.Duration(time.Second))}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("an invocation in flight while the pool shrank failed: %v", err)
		}
	}
	// Keep-alive expiry then retires the extras.
	waitFor(t, "keep-alive to retire the instances", func() bool { _, _, total := instancesOf(t, c, "pool-shrink"); return total == 0 })
}

// poolOff is a pool change back to nothing warm, retired quickly.
func poolOff() api.PoolChange {
	return api.PoolChange{MinWarm: ptr(0), KeepAlive: ptr(api.Duration(time.Second))}
}
