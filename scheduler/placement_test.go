package scheduler

import (
	"testing"

	"github.com/amberfn/amber/api"
)

// An agent whose heartbeat lists a snapshot of the version gets the
// invocation that finds no idle instance, though another has more memory.
func TestPlacementPrefersSnapshotHolder(t *testing.T) {
	ts := newTestScheduler(t)
	big, small := newFakeAgent(t, "big"), newFakeAgent(t, "small")
	fn := ts.deploy(t, "hello", 128)
	ts.heartbeat(t, agentHB("big", big.srv.URL, 8192))
	hb := agentHB("small", small.srv.URL, 1024)
	hb.Snapshots = []api.SnapshotRef{{Function: "hello", Version: fn.Version}}
	ts.heartbeat(t, hb)
	ts.do(t, "POST", "/v1/functions/hello/invoke", nil)
	if len(small.got()) != 1 || len(big.got()) != 0 {
		t.Fatalf("small (snapshot) got %d, big got %d; want 1 and 0", len(small.got()), len(big.got()))
	}
	hb.Snapshots = []api.SnapshotRef{{Function: "hello", Version: fn.Version + 1}} // another version's
	ts.heartbeat(t, hb)
	ts.do(t, "POST", "/v1/functions/hello/invoke", nil)
	if len(big.got()) != 1 {
		t.Fatalf("without a snapshot of this version, big (more memory) got %d, want 1", len(big.got()))
	}
}
