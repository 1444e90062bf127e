package scheduler

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// TestClient drives api.Client against the real scheduler handler.
func TestClient(t *testing.T) {
	ctx := context.Background()
	ts := newTestScheduler(t, WithToken("tok"))
	c := api.NewClient(ts.srv.URL+"/", api.WithToken("tok"), api.WithHTTPClient(ts.srv.Client()))

	t.Run("wrong token", func(t *testing.T) {
		bad := api.NewClient(ts.srv.URL, api.WithToken("nope"))
		_, err := bad.Functions(ctx)
		if !errors.Is(err, api.ErrUnauthorized) || !strings.Contains(err.Error(), "bearer token") {
			t.Fatalf("err %v", err)
		}
	})

	archive := ociTar(t, "client")
	digest, err := c.UploadImage(ctx, bytes.NewReader(archive))
	if err != nil {
		t.Fatalf("UploadImage: %v", err)
	}
	t.Run("upload not an image", func(t *testing.T) {
		_, err := c.UploadImage(ctx, strings.NewReader("hello"))
		var se *api.StatusError
		if !errors.Is(err, api.ErrInvalid) || !errors.As(err, &se) || se.Field != "image" ||
			!strings.Contains(err.Error(), "not an OCI image archive") {
			t.Fatalf("err %v (%+v)", err, se)
		}
	})
	t.Run("fetch image", func(t *testing.T) {
		rc, err := c.FetchImage(ctx, digest)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, _ := io.ReadAll(rc)
		if !bytes.Equal(b, archive) {
			t.Errorf("fetched %d bytes, want %d", len(b), len(archive))
		}
		if _, err := c.FetchImage(ctx, "sha256:"+strings.Repeat("d", 64)); !errors.Is(err, api.ErrNotFound) {
			t.Errorf("missing image: %v", err)
		}
		if _, err := c.FetchImage(ctx, "../../amber.db"); !errors.Is(err, api.ErrInvalid) {
			t.Errorf("bad digest: %v", err)
		}
	})

	fn, err := c.Deploy(ctx, api.FunctionSpec{Name: "echo", Image: digest})
	if err != nil || fn.Version != 1 || fn.MemoryMB != 128 {
		t.Fatalf("Deploy: %+v, %v", fn, err)
	}
	t.Run("deploy errors", func(t *testing.T) {
		_, err := c.Deploy(ctx, api.FunctionSpec{Name: "echo", Image: digest, MemoryMB: 1})
		if !errors.Is(err, api.ErrInvalid) || !strings.HasPrefix(err.Error(), "memory: 1 MB") {
			t.Errorf("bad memory: %v", err)
		}
		_, err = c.Deploy(ctx, api.FunctionSpec{Name: "echo", Image: "sha256:" + strings.Repeat("e", 64)})
		var se *api.StatusError
		if !errors.As(err, &se) || se.Field != "image" || se.Status != 400 {
			t.Errorf("missing image: %v", err)
		}
	})
	if _, err := c.Deploy(ctx, api.FunctionSpec{Name: "echo", Image: digest, MemoryMB: 256}); err != nil {
		t.Fatal(err)
	}

	v1, err := c.FunctionVersion(ctx, "echo", 1)
	if err != nil || v1.MemoryMB != 128 {
		t.Errorf("FunctionVersion: %+v, %v", v1, err)
	}
	if vs, err := c.FunctionVersions(ctx, "echo"); err != nil || len(vs) != 2 {
		t.Errorf("FunctionVersions: %+v, %v", vs, err)
	}
	if _, err := c.Function(ctx, "nope"); !errors.Is(err, api.ErrNotFound) || err.Error() != `function "nope" not found` {
		t.Errorf("Function(nope): %v", err)
	}

	// Invoke with no agent: 503 as ErrUnavailable.
	if _, err := c.Invoke(ctx, "echo", nil); !errors.Is(err, api.ErrUnavailable) || !strings.Contains(err.Error(), "no ready agent") {
		t.Errorf("invoke without agents: %v", err)
	}

	ag := newFakeAgent(t, "n1")
	if _, err := c.Heartbeat(ctx, api.Heartbeat{Name: "n1", URL: ag.srv.URL, CapacityMB: 1024,
		Instances: []api.Instance{{ID: "i1", Function: "echo", Version: 2, State: api.StateIdle}}}); err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	if _, err := c.Heartbeat(ctx, api.Heartbeat{Name: "N1"}); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("bad heartbeat: %v", err)
	}
	agents, err := c.Agents(ctx)
	if err != nil || len(agents) != 1 || agents[0].State != api.AgentReady {
		t.Fatalf("Agents: %+v, %v", agents, err)
	}

	res, err := c.Invoke(ctx, "echo", []byte(`"hi"`))
	if err != nil {
		t.Fatalf("Invoke: %v", err)
	}
	if string(res.Payload) != `"hi"` || res.Version != 2 || res.Agent != "n1" || res.StartKind != api.StartWarm || res.RequestID == "" {
		t.Errorf("Invoke result %+v", res)
	}

	// A function error is a result, not a Go error.
	ag.setReply(func(w http.ResponseWriter, r *http.Request, _ []byte) {
		res := api.InvokeResult{RequestID: r.Header.Get(api.HeaderRequestID), Function: "echo", Version: 2,
			Agent: "n1", StartKind: api.StartCold, Duration: 3 * time.Second, FunctionError: "Unhandled"}
		res.WriteHeaders(w.Header())
		w.Write([]byte(`{"errorMessage":"Task timed out after 3.00 seconds","errorType":"TimeoutError"}`))
	})
	res, err = c.Invoke(ctx, "echo", nil)
	if err != nil || res.FunctionError != "Unhandled" || !strings.Contains(string(res.Payload), "timed out") {
		t.Errorf("function error: %+v, %v", res, err)
	}
	// An agent failure is a Go error naming the agent.
	ag.setReply(func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		api.WriteError(w, errors.New("containerd is gone"))
	})
	if _, err := c.Invoke(ctx, "echo", nil); !errors.Is(err, api.ErrUnavailable) || !strings.Contains(err.Error(), "agent n1") {
		t.Errorf("agent failure: %v", err)
	}

	fns, err := c.Functions(ctx)
	if err != nil || len(fns) != 1 || fns[0].Version != 2 || len(fns[0].Instances) != 1 || fns[0].Stats.Invocations != 3 {
		t.Errorf("Functions: %+v, %v", fns, err)
	}
	st, err := c.State(ctx)
	if err != nil || len(st.Agents) != 1 || len(st.Functions) != 1 {
		t.Errorf("State: %+v, %v", st, err)
	}

	if err := c.DeleteFunction(ctx, "echo"); err != nil {
		t.Fatalf("DeleteFunction: %v", err)
	}
	if err := c.DeleteFunction(ctx, "echo"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
	if fns, err := c.Functions(ctx); err != nil || len(fns) != 0 || fns == nil {
		t.Errorf("Functions after delete: %#v, %v", fns, err)
	}
}
