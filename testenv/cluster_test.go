package testenv_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/ops"
	"github.com/amberfn/amber/snapshots"
	"github.com/amberfn/amber/testenv"
)

// fixture is one cluster shared by the integration tests in this package:
// starting containerd and building images once keeps the suite quick.
type fixture struct {
	cluster *testenv.Cluster
	images  map[string]string // example name → archive path
	dir     string
}

var (
	fixOnce sync.Once
	fix     *fixture
	fixErr  error
)

func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == snapshots.TrialChildCommand {
		// The process TestDoctorLocalCluster's trial snapshot dumps.
		if err := snapshots.TrialChild(os.Args[2]); err != nil {
			os.Exit(3)
		}
		os.Exit(0)
	}
	code := m.Run()
	if fix != nil {
		fix.cluster.Stop()
		os.RemoveAll(fix.dir)
	}
	os.Exit(code)
}

func cluster(t *testing.T) *fixture { return clusterB(t) }

func clusterB(t testing.TB) *fixture {
	t.Helper()
	testenv.Require(t, testenv.CheckContainerd())
	fixOnce.Do(func() {
		dir, err := os.MkdirTemp("", "amber-it-")
		if err != nil {
			fixErr = err
			return
		}
		ctx := context.Background()
		f := &fixture{dir: dir, images: map[string]string{}}
		initBin, err := testenv.BuildInit(ctx, dir)
		if err != nil {
			fixErr = err
			return
		}
		for _, name := range []string{"hello", "shell"} {
			if f.images[name], err = testenv.BuildExample(ctx, name, dir); err != nil {
				fixErr = err
				return
			}
		}
		f.cluster, fixErr = testenv.StartCluster(ctx, testenv.ClusterConfig{Dir: filepath.Join(dir, "cluster"), Agents: 2, InitBin: initBin})
		fix = f
	})
	if fixErr != nil {
		t.Fatalf("bring up the cluster: %v", fixErr)
	}
	return fix
}

func deploy(t testing.TB, c *api.Client, name, archive string, mutate ...func(*api.FunctionSpec)) *api.Function {
	t.Helper()
	ctx := t.Context()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	digest, err := c.UploadImage(ctx, f)
	if err != nil {
		t.Fatalf("upload %s: %v", archive, err)
	}
	spec := api.FunctionSpec{Name: name, Image: digest, MemoryMB: 128, Timeout: api.Duration(5 * time.Second)}
	for _, m := range mutate {
		m(&spec)
	}
	fn, err := c.Deploy(ctx, spec)
	if err != nil {
		t.Fatalf("deploy %s: %v", name, err)
	}
	return fn
}

func TestHelloColdThenWarm(t *testing.T) {
	f := cluster(t)
	c := f.cluster.Client()
	deploy(t, c, "hello", f.images["hello"])
	ctx := t.Context()

	first, err := c.Invoke(ctx, "hello", []byte(`{"name":"amber"}`))
	if err != nil {
		t.Fatalf("invoke: %v", err)
	}
	if first.FunctionError != "" {
		t.Fatalf("function error: %s", first.Payload)
	}
	var out struct {
		Message   string `json:"message"`
		Function  string `json:"function"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(first.Payload, &out); err != nil {
		t.Fatalf("result %q: %v", first.Payload, err)
	}
	if out.Message != "hello, amber" || out.Function != "hello" || out.RequestID != first.RequestID {
		t.Errorf("result = %+v, request id %s", out, first.RequestID)
	}
	if first.StartKind != api.StartCold || first.InitDuration <= 0 || first.BilledMs < 1 {
		t.Errorf("first start = %s init %s billed %d ms, want cold with init time", first.StartKind, first.InitDuration, first.BilledMs)
	}
	// The next invocations find the warm instance, on the same agent.
	for i := 0; i < 3; i++ {
		next, err := c.Invoke(ctx, "hello", []byte(`{}`))
		if err != nil {
			t.Fatalf("invoke %d: %v", i, err)
		}
		if next.StartKind != api.StartWarm || next.Agent != first.Agent || next.Instance != first.Instance {
			t.Errorf("invoke %d: %s start on %s/%s, want warm on %s/%s", i, next.StartKind, next.Agent, next.Instance, first.Agent, first.Instance)
		}
	}
	fs, err := c.Function(ctx, "hello")
	if err != nil {
		t.Fatal(err)
	}
	if fs.Stats.Invocations < 4 {
		t.Errorf("stats = %+v, want at least 4 invocations", fs.Stats)
	}
}

func TestShellRuntime(t *testing.T) {
	f := cluster(t)
	c := f.cluster.Client()
	deploy(t, c, "shell", f.images["shell"])
	res, err := c.Invoke(t.Context(), "shell", []byte(`{"x":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if res.FunctionError != "" || !strings.Contains(string(res.Payload), `"shell": "busybox"`) || !strings.Contains(string(res.Payload), `{"x":1}`) {
		t.Errorf("shell result %q (error %q)", res.Payload, res.FunctionError)
	}
}

func TestFunctionErrorIsNotAPlatformError(t *testing.T) {
	f := cluster(t)
	c := f.cluster.Client()
	deploy(t, c, "hello", f.images["hello"])
	res, err := c.Invoke(t.Context(), "hello", []byte(`{"fail":true}`))
	if err != nil {
		t.Fatal(err)
	}
	var fe api.FunctionError
	if res.FunctionError == "" || json.Unmarshal(res.Payload, &fe) != nil || fe.ErrorMessage == "" {
		t.Fatalf("want a function error, got %q %q", res.FunctionError, res.Payload)
	}
}

func TestInitFailureShowsLastOutput(t *testing.T) {
	f := cluster(t)
	c := f.cluster.Client()
	stage := filepath.Join(f.dir, "stage-broken")
	os.RemoveAll(stage)
	if err := copyDir(filepath.Join(f.dir, "stage-shell"), stage); err != nil {
		t.Fatal(err)
	}
	script := "#!/var/task/busybox sh\necho 'loading config'\necho 'fatal: DB_URL is not set' >&2\nexit 3\n"
	if err := os.WriteFile(filepath.Join(stage, "bootstrap"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(f.dir, "broken.tar")
	if err := buildArchive(stage, archive); err != nil {
		t.Fatal(err)
	}
	deploy(t, c, "broken", archive)
	res, err := c.Invoke(t.Context(), "broken", nil)
	if err != nil {
		t.Fatal(err)
	}
	var fe api.FunctionError
	if err := json.Unmarshal(res.Payload, &fe); err != nil || res.FunctionError == "" {
		t.Fatalf("want an init error, got %q %q", res.FunctionError, res.Payload)
	}
	if fe.ErrorType != "Runtime.ExitError" || !strings.Contains(fe.ErrorMessage, "exit status 3") || !strings.Contains(fe.ErrorMessage, "DB_URL is not set") {
		t.Errorf("init error = %+v", fe)
	}
}

func TestTimeoutKillsAndReplaces(t *testing.T) {
	f := cluster(t)
	c := f.cluster.Client()
	stage := filepath.Join(f.dir, "stage-sleepy")
	os.RemoveAll(stage)
	if err := copyDir(filepath.Join(f.dir, "stage-shell"), stage); err != nil {
		t.Fatal(err)
	}
	handler := "handler() { /var/task/busybox sleep 30; }\n"
	if err := os.WriteFile(filepath.Join(stage, "handler.sh"), []byte(handler), 0o755); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(f.dir, "sleepy.tar")
	if err := buildArchive(stage, archive); err != nil {
		t.Fatal(err)
	}
	deploy(t, c, "sleepy", archive, func(s *api.FunctionSpec) { s.Timeout = api.Duration(time.Second) })
	res, err := c.Invoke(t.Context(), "sleepy", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(res.Payload), "Task timed out after 1.00 seconds") {
		t.Errorf("timeout result %q", res.Payload)
	}
	// The killed instance is not reused: the next call starts a new one
	// (cold, or restored from the snapshot taken after the first start).
	res2, err := c.Invoke(t.Context(), "sleepy", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res2.StartKind == api.StartWarm || res2.Instance == res.Instance {
		t.Errorf("after a timeout: %s start on %s, want a new instance", res2.StartKind, res2.Instance)
	}
}

func TestBadInput(t *testing.T) {
	f := cluster(t)
	c := f.cluster.Client()
	ctx := t.Context()
	good := deploy(t, c, "keep", f.images["shell"])
	cases := []struct {
		name  string
		spec  api.FunctionSpec
		field string
	}{
		{"bad name", api.FunctionSpec{Name: "Bad_Name", Image: good.Image, MemoryMB: 128, Timeout: api.Duration(time.Second)}, "name"},
		{"memory too small", api.FunctionSpec{Name: "keep", Image: good.Image, MemoryMB: 64, Timeout: api.Duration(time.Second)}, "memory"},
		{"memory too large", api.FunctionSpec{Name: "keep", Image: good.Image, MemoryMB: 20000, Timeout: api.Duration(time.Second)}, "memory"},
		{"timeout too long", api.FunctionSpec{Name: "keep", Image: good.Image, MemoryMB: 128, Timeout: api.Duration(901 * time.Second)}, "timeout"},
		{"unknown image", api.FunctionSpec{Name: "keep", Image: "sha256:" + strings.Repeat("a", 64), MemoryMB: 128, Timeout: api.Duration(time.Second)}, "image"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Deploy(ctx, tc.spec)
			if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("deploy: %v, want an invalid-input error naming %q", err, tc.field)
			}
		})
	}
	fs, err := c.Function(ctx, "keep")
	if err != nil || fs.Version != good.Version || fs.Image != good.Image {
		t.Errorf("after bad deploys: %+v, %v; want version %d intact", fs, err, good.Version)
	}
	if _, err := c.Invoke(ctx, "nope", nil); !errors.Is(err, api.ErrNotFound) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("invoke unknown: %v, want a not-found error naming it", err)
	}
	if _, err := c.UploadImage(ctx, strings.NewReader("not a tar")); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("upload garbage: %v, want invalid", err)
	}
}

func TestLogsCarryStartEndReport(t *testing.T) {
	f := cluster(t)
	c := f.cluster.Client()
	deploy(t, c, "logged", f.images["shell"])
	res, err := c.Invoke(t.Context(), "logged", []byte(`{"log":1}`))
	if err != nil || res.FunctionError != "" {
		t.Fatalf("invoke: %v %s", err, res.Payload)
	}
	recs, err := c.Logs(t.Context(), "logged", time.Time{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, r := range recs {
		if r.RequestID == res.RequestID {
			texts = append(texts, r.Text)
		}
	}
	joined := strings.Join(texts, "\n")
	for _, want := range []string{"START RequestId: " + res.RequestID, "END RequestId: " + res.RequestID,
		"REPORT RequestId: " + res.RequestID, "Billed Duration:", "Memory Size: 128 MB", "Init Duration:"} {
		if !strings.Contains(joined, want) {
			t.Errorf("logs for %s lack %q:\n%s", res.RequestID, want, joined)
		}
	}
	if _, err := c.Logs(t.Context(), "no-such-fn", time.Time{}, 10); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("logs of unknown function: %v", err)
	}
}

// TestDoctorLocalCluster: amber doctor --data DIR checks the cluster
// `amber up` runs there (its containerd, agents and snapshot stores), and
// on a machine .ci/install-deps prepared it finds nothing to fail.
func TestDoctorLocalCluster(t *testing.T) {
	f := cluster(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	checks := ops.Doctor(t.Context(), ops.DoctorConfig{Local: f.cluster.Dir,
		Trial: snapshots.TrialConfig{Dir: filepath.Join(t.TempDir(), "trial"), Child: []string{exe, snapshots.TrialChildCommand}}})
	seen := map[string]ops.Check{}
	for _, c := range checks {
		t.Log(c)
		seen[c.Name] = c
		if c.Failed() && (c.Name != "snapshots" || testenv.CRIUExpected()) {
			t.Errorf("doctor: %s", c)
		}
	}
	for _, name := range []string{"containerd", "agents", "store", "clock"} {
		if c, ok := seen[name]; !ok || !c.OK {
			t.Errorf("doctor --data: check %s = %+v, want ok", name, c)
		}
	}
	if c := seen["containerd"]; !strings.Contains(c.Info, f.cluster.Containerd.Address) {
		t.Errorf("containerd check %q does not name the cluster's socket %s", c.Info, f.cluster.Containerd.Address)
	}
}
