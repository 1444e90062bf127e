package testenv_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/amberfn/amber/scheduler"
	"github.com/amberfn/amber/testenv"
)

// TestHAProxyFrontDoor: the front door the control-plane tests put before
// several schedulers moves clients to a live backend when one dies.
func TestHAProxyFrontDoor(t *testing.T) {
	var backs []*httptest.Server
	var addrs []string
	for _, name := range []string{"one", "two"} {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }))
		t.Cleanup(s.Close)
		backs = append(backs, s)
		addrs = append(addrs, strings.TrimPrefix(s.URL, "http://"))
	}
	h := testenv.StartHAProxy(t, addrs)
	get := func() (string, error) {
		resp, err := http.Get(h.URL() + "/x")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	seen := map[string]int{}
	for range 10 {
		b, err := get()
		if err != nil {
			t.Fatal(err)
		}
		seen[b]++
	}
	if seen["one"] == 0 || seen["two"] == 0 {
		t.Fatalf("round robin over two backends: %v", seen)
	}
	backs[0].Close()
	for i := range 20 {
		b, err := get()
		if err != nil || b != "two" {
			t.Fatalf("call %d with one backend down: %q %v", i, b, err)
		}
	}
}

// TestSchedulerOnExternalNATS: a scheduler pointed at a NATS cluster the
// operator runs (Debian's nats-server, three nodes) keeps its state there
// with three replicas.
func TestSchedulerOnExternalNATS(t *testing.T) {
	c := testenv.StartNATSCluster(t, 3)
	s, err := scheduler.New(scheduler.WithDataDir(t.TempDir()), scheduler.WithNATS(scheduler.NATSConfig{URL: c.URL(), StartTimeout: 30 * time.Second}))
	if err != nil {
		t.Fatalf("scheduler on %s: %v", c.URL(), err)
	}
	defer s.Close()
}
