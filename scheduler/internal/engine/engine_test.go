package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/nats-io/nats.go/jetstream"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestSingleNodeKeepsWhatItAcknowledged: a lone embedded node reopened on
// its folder still has every acknowledged write.
func TestSingleNodeKeepsWhatItAcknowledged(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	e, err := Open(ctx, Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if e.Replicas() != 1 {
		t.Fatalf("replicas %d, want 1", e.Replicas())
	}
	kv, err := e.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: "t"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := kv.Put(ctx, fmt.Sprintf("k%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	e.Close()
	e, err = Open(ctx, Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	kv, err = e.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: "t"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil || st.Values() != 50 {
		t.Fatalf("after reopen: %v values, %v", st, err)
	}
	h, err := e.Health(ctx)
	if err != nil || !h.Embedded || h.Streams != 1 {
		t.Fatalf("health %+v %v", h, err)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := t.Context()
	addr := freeAddr(t)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"unreachable", Config{URL: "nats://" + addr, StartTimeout: 3 * time.Second}, "connect to NATS at nats://" + addr},
		{"peers without listen", Config{Dir: t.TempDir(), Peers: []string{addr}}, "cluster listen address"},
		{"bad peer", Config{Dir: t.TempDir(), ClusterListen: freeAddr(t), Peers: []string{"nohost"}}, `cluster peer "nohost"`},
		{"cert without key", Config{URL: "nats://" + addr, Cert: "c.pem"}, "both the certificate and its key"},
		{"missing creds", Config{URL: "nats://" + addr, Credentials: filepath.Join(t.TempDir(), "x.creds")}, "NATS credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := Open(ctx, tc.cfg)
			if err == nil {
				e.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to name %q", err, tc.want)
			}
		})
	}
}

// StartCluster starts n embedded nodes joined as one cluster, each in
// its own folder under dir; for tests.
func startCluster(t *testing.T, n int) ([]*Engine, []Config) {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = freeAddr(t)
	}
	cfgs := make([]Config, n)
	for i := range cfgs {
		var peers []string
		for j, a := range addrs {
			if j != i {
				peers = append(peers, a)
			}
		}
		cfgs[i] = Config{Dir: filepath.Join(t.TempDir(), "nats"), Name: fmt.Sprintf("s%d", i), ClusterListen: addrs[i], Peers: peers}
	}
	engines := make([]*Engine, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range cfgs {
		wg.Go(func() { engines[i], errs[i] = Open(t.Context(), cfgs[i]) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	return engines, cfgs
}

// TestClusterSurvivesOneNode: three embedded nodes keep a bucket with three
// replicas; with one node stopped the other two still write and read, and
// the stopped node comes back with everything.
func TestClusterSurvivesOneNode(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test: skipped in -short")
	}
	ctx := t.Context()
	es, cfgs := startCluster(t, 3)
	defer func() {
		for _, e := range es {
			if e != nil {
				e.Close()
			}
		}
	}()
	if es[0].Replicas() != 3 {
		t.Fatalf("replicas %d, want 3", es[0].Replicas())
	}
	kv, err := es[0].KeyValue(ctx, jetstream.KeyValueConfig{Bucket: "reg"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	es[2].Close()
	es[2] = nil
	// With a node gone, the stream may elect a new leader first: a lookup
	// or a write can time out meanwhile.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var kv1 jetstream.KeyValue
		if kv1, err = es[1].JS.KeyValue(ctx, "reg"); err == nil {
			_, err = kv1.Put(ctx, "b", []byte("2"))
		}
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("write with one node of three down: %v", err)
	}
	es[2], err = Open(ctx, cfgs[2])
	if err != nil {
		t.Fatal(err)
	}
	kv2, err := es[2].JS.KeyValue(ctx, "reg")
	if err != nil {
		t.Fatal(err)
	}
	for {
		v, err := kv2.Get(ctx, "b")
		if err == nil && string(v.Value()) == "2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rejoined node never saw the write: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	h, err := es[0].Health(ctx)
	if err != nil || h.MetaLeader == "" || h.Peers != 2 {
		t.Fatalf("health %+v %v", h, err)
	}
}

func TestWrap(t *testing.T) {
	if !errors.Is(Wrap(context.DeadlineExceeded), api.ErrUnavailable) {
		t.Error("an outage is not api.ErrUnavailable: front ends would not answer 503")
	}
	if !errors.Is(Wrap(context.DeadlineExceeded), ErrUnavailable) {
		t.Fatal("deadline not unavailable")
	}
	if errors.Is(Wrap(errors.New("bad key")), ErrUnavailable) {
		t.Fatal("bad key unavailable")
	}
}
