package testenv_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	ggcr "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/platforms"

	"github.com/amberfn/amber/agent"
	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/remote"
)

// testRegistry is an in-process OCI registry on loopback
// (go-containerregistry's pkg/registry) behind a handler that can demand
// credentials (basic, or the bearer-token flow), corrupt a blob, or
// vanish in the middle of one.
type testRegistry struct {
	srv  *httptest.Server
	Host string // 127.0.0.1:port

	mu      sync.Mutex
	user    string // credentials required when set
	pass    string
	bearer  bool              // the token flow instead of basic auth
	corrupt map[string]bool   // blob digests served with flipped bytes
	dieOn   string            // blob digest: serve half, then the registry is gone
	gone    bool              // every connection is closed at once
	tokens  map[string]string // issued tokens → user
	// override answers requests for these URL paths instead of the
	// registry (a blob served longer than it is, a huge manifest).
	override map[string]http.HandlerFunc
}

func newTestRegistry(t testing.TB) *testRegistry {
	t.Helper()
	r := &testRegistry{corrupt: map[string]bool{}, tokens: map[string]string{}, override: map[string]http.HandlerFunc{}}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { r.serve(inner, w, req) }))
	t.Cleanup(func() {
		r.mu.Lock()
		r.gone = true
		r.mu.Unlock()
		r.srv.CloseClientConnections()
		r.srv.Close()
	})
	r.Host = strings.TrimPrefix(r.srv.URL, "http://")
	return r
}

// hangUp closes the client's connection without an answer.
func hangUp(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

func (r *testRegistry) requireAuth(user, pass string, bearer bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.user, r.pass, r.bearer = user, pass, bearer
}

func (r *testRegistry) serve(inner http.Handler, w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	gone, user, pass, bearer, dieOn := r.gone, r.user, r.pass, r.bearer, r.dieOn
	r.mu.Unlock()
	if gone {
		hangUp(w)
		return
	}
	if req.URL.Path == "/token" {
		r.serveToken(w, req)
		return
	}
	if user != "" && !r.authorized(req, user, pass, bearer) {
		if bearer {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="amber-test",scope="repository:fn:pull"`, r.Host))
		} else {
			w.Header().Set("WWW-Authenticate", `Basic realm="amber-test"`)
		}
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
		return
	}
	blob := ""
	if i := strings.Index(req.URL.Path, "/blobs/"); i >= 0 && req.Method == http.MethodGet {
		blob = req.URL.Path[i+len("/blobs/"):]
	}
	r.mu.Lock()
	corrupt := blob != "" && r.corrupt[blob]
	override := r.override[req.URL.Path]
	r.mu.Unlock()
	switch {
	case override != nil:
		override(w, req)
	case blob != "" && blob == dieOn:
		rec := httptest.NewRecorder()
		inner.ServeHTTP(rec, req)
		body := rec.Body.Bytes()
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Header().Set("Docker-Content-Digest", blob)
		w.WriteHeader(http.StatusOK)
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		// The registry goes away: this connection, new ones, everything.
		r.mu.Lock()
		r.gone = true
		r.mu.Unlock()
		r.srv.Listener.Close()
		hangUp(w)
	case corrupt:
		rec := httptest.NewRecorder()
		inner.ServeHTTP(rec, req)
		body := bytes.Clone(rec.Body.Bytes())
		for i := len(body) / 3; i < len(body)/3+64 && i < len(body); i++ {
			body[i] ^= 0xff
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(body)
	default:
		inner.ServeHTTP(w, req)
	}
}

func (r *testRegistry) authorized(req *http.Request, user, pass string, bearer bool) bool {
	h := req.Header.Get("Authorization")
	if bearer {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		r.mu.Lock()
		defer r.mu.Unlock()
		return ok && r.tokens[tok] == user
	}
	u, p, ok := req.BasicAuth()
	return ok && u == user && p == pass
}

// serveToken is a token service: GET with basic auth, or the OAuth2
// password grant (POST form) containerd tries first.
func (r *testRegistry) serveToken(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	user, pass := r.user, r.pass
	r.mu.Unlock()
	var u, p string
	var ok bool
	if req.Method == http.MethodPost {
		req.ParseForm()
		u, p, ok = req.PostForm.Get("username"), req.PostForm.Get("password"), req.PostForm.Get("grant_type") == "password"
	} else {
		u, p, ok = req.BasicAuth()
	}
	if !ok || u != user || p != pass {
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`, http.StatusUnauthorized)
		return
	}
	tok := fmt.Sprintf("tok-%d", time.Now().UnixNano())
	r.mu.Lock()
	r.tokens[tok] = user
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"token": tok, "access_token": tok, "expires_in": 300})
}

// push writes img to the registry as repo:tag (with the registry's
// current credentials) and returns its manifest digest.
func (r *testRegistry) push(t testing.TB, repo, tag string, img v1.Image) string {
	t.Helper()
	ref, err := name.ParseReference(r.Host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	auth := authn.Anonymous
	if r.user != "" {
		auth = &authn.Basic{Username: r.user, Password: r.pass}
	}
	r.mu.Unlock()
	if err := ggcr.Write(ref, img, ggcr.WithAuth(auth)); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// tarFile is one entry of a test layer.
type tarFile struct {
	name, link string
	mode       int64
	data       []byte
	dir        bool
}

func layerOf(t testing.TB, files []tarFile) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, Mode: f.mode, ModTime: time.Unix(0, 0)}
		switch {
		case f.dir:
			hdr.Typeflag = tar.TypeDir
		case f.link != "":
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, f.link
		default:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// lambdaEntrypoint is the base images' /lambda-entrypoint.sh, reduced to
// what matters here: under Lambda (AWS_LAMBDA_RUNTIME_API set) it execs
// the runtime's bootstrap with the handler as argument.
const lambdaEntrypoint = `#!/bin/sh
if [ -z "${AWS_LAMBDA_RUNTIME_API}" ]; then
  echo "not under Lambda: AWS_LAMBDA_RUNTIME_API is not set" >&2
  exit 1
fi
exec /var/runtime/bootstrap "$@"
`

// lambdaImage is laid out like AWS's Lambda base images, built from the
// static busybox: /lambda-entrypoint.sh execs /var/runtime/bootstrap
// (examples/shell's Runtime API loop), the handler app.handler lives in
// /var/task/app.sh, ENTRYPOINT ["/lambda-entrypoint.sh"], CMD
// ["app.handler"], WORKDIR /var/task. answer is part of every response;
// pad adds that many random bytes in a layer of their own.
func lambdaImage(t testing.TB, answer string, pad int, arch string) v1.Image {
	t.Helper()
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("needs the static busybox at /bin/busybox: %v", err)
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bootstrap, err := os.ReadFile(filepath.Join(root, "examples", "shell", "bootstrap"))
	if err != nil {
		t.Fatal(err)
	}
	bootstrap = []byte("#!/bin/sh" + string(bootstrap[bytes.IndexByte(bootstrap, '\n'):]))
	app := fmt.Sprintf(`handler() {
	printf '{"answer":"%s","handler":"%%s","task_root":"%%s","pwd":"%%s","event":%%s}' "$_HANDLER" "$LAMBDA_TASK_ROOT" "$(pwd)" "$(cat "$1")"
}
`, answer)
	base := layerOf(t, []tarFile{
		{name: "bin/", dir: true, mode: 0o755},
		{name: "bin/busybox", mode: 0o755, data: busybox},
		{name: "bin/sh", link: "busybox", mode: 0o777},
		{name: "var/", dir: true, mode: 0o755},
		{name: "var/runtime/", dir: true, mode: 0o755},
		{name: "var/runtime/bootstrap", mode: 0o755, data: bootstrap},
		{name: "lambda-entrypoint.sh", mode: 0o755, data: []byte(lambdaEntrypoint)},
	})
	task := layerOf(t, []tarFile{
		{name: "var/task/", dir: true, mode: 0o755},
		{name: "var/task/app.sh", mode: 0o644, data: []byte(app)},
	})
	layers := []v1.Layer{base, task}
	if pad > 0 {
		b := make([]byte, pad)
		rand.Read(b)
		layers = append(layers, layerOf(t, []tarFile{{name: "var/task/pad.bin", mode: 0o644, data: b}}))
	}
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Config.Entrypoint = []string{"/lambda-entrypoint.sh"}
	cf.Config.Cmd = []string{"app.handler"}
	cf.Config.WorkingDir = "/var/task"
	cf.Config.Env = []string{
		"PATH=/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
		"LANG=en_US.UTF-8",
		"TZ=:/etc/localtime",
		"LAMBDA_TASK_ROOT=/var/task",
		"LAMBDA_RUNTIME_DIR=/var/runtime",
		"BUSYBOX=/bin/busybox",
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found")
		}
		dir = parent
	}
}

// dockerConfig points the scheduler and agents (in this process) at a
// docker-style config with user:pass for host.
func dockerConfig(t *testing.T, host, user, pass string) {
	t.Helper()
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(remote.EnvConfig, filepath.Join(dir, "config.json"))
}

type lambdaAnswer struct {
	Answer   string          `json:"answer"`
	Handler  string          `json:"handler"`
	TaskRoot string          `json:"task_root"`
	Pwd      string          `json:"pwd"`
	Event    json.RawMessage `json:"event"`
}

// invokeLambda invokes name and decodes the answer; it fails the test
// on any error, and bounds the wait: nothing may hang.
func invokeLambda(t *testing.T, c *api.Client, name string) (lambdaAnswer, *api.InvokeResult) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	res, err := c.Invoke(ctx, name, []byte(`{"n":1}`))
	if err != nil {
		t.Fatalf("invoke %s: %v", name, err)
	}
	if res.FunctionError != "" {
		t.Fatalf("invoke %s: function error %s", name, res.Payload)
	}
	var out lambdaAnswer
	if err := json.Unmarshal(res.Payload, &out); err != nil {
		t.Fatalf("invoke %s: answer %q: %v", name, res.Payload, err)
	}
	return out, res
}

// invokeFails invokes name and wants a platform error (5xx) whose
// message names want, within a bounded time.
func invokeFails(t *testing.T, c *api.Client, name string, want ...string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	start := time.Now()
	res, err := c.Invoke(ctx, name, []byte(`{}`))
	if err == nil {
		t.Fatalf("invoke %s: want an error, got %s start: %s", name, res.StartKind, res.Payload)
	}
	if ctx.Err() != nil {
		t.Fatalf("invoke %s: hung for %s: %v", name, time.Since(start), err)
	}
	if !errors.Is(err, api.ErrUnavailable) && !strings.Contains(err.Error(), "500") {
		t.Errorf("invoke %s: %v, want a platform (5xx) error", name, err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("invoke %s: error %q does not name %q", name, err, w)
		}
	}
	return err
}

func deployRef(t *testing.T, c *api.Client, fname, ref string) (*api.Function, error) {
	t.Helper()
	return c.Deploy(t.Context(), api.FunctionSpec{Name: fname, Image: ref, MemoryMB: 128, Timeout: api.Duration(10 * time.Second)})
}

func mustDeployRef(t *testing.T, c *api.Client, fname, ref string) *api.Function {
	t.Helper()
	fn, err := deployRef(t, c, fname, ref)
	if err != nil {
		t.Fatalf("deploy %s from %s: %v", fname, ref, err)
	}
	return fn
}

// refusedDeploy wants a deploy refused with a 400 on "image" whose
// message names want, and the function still at version keep.
func refusedDeploy(t *testing.T, c *api.Client, fname, ref string, keep int, want ...string) {
	t.Helper()
	_, err := deployRef(t, c, fname, ref)
	var se *api.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusBadRequest || se.Field != "image" {
		t.Fatalf("deploy %s from %s: %v, want a 400 naming field image", fname, ref, err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("deploy %s: error %q does not name %q", fname, err, w)
		}
	}
	if keep > 0 {
		fs, err := c.Function(t.Context(), fname)
		if err != nil {
			t.Fatal(err)
		}
		if fs.Version != keep {
			t.Errorf("after a refused deploy %s is at version %d, want %d", fname, fs.Version, keep)
		}
	}
}

// TestRegistryLambdaImage: an image laid out like AWS's base images,
// pushed to a registry, deployed by tag, runs unchanged; deployed by
// digest, it runs the same digest.
func TestRegistryLambdaImage(t *testing.T) {
	f := cluster(t)
	c := f.cluster.Client()
	reg := newTestRegistry(t)
	dgst := reg.push(t, "lambda/app", "v1", lambdaImage(t, "by-tag", 0, "amd64"))

	ref := reg.Host + "/lambda/app:v1"
	res, err := c.ResolveImage(t.Context(), ref)
	if err != nil {
		t.Fatalf("resolve %s: %v", ref, err)
	}
	if res.Digest != dgst || res.Image != reg.Host+"/lambda/app@"+dgst || res.Platform != "linux/amd64" || res.Layers != 2 || res.Size < 1<<20 {
		t.Errorf("resolve = %+v, want digest %s, 2 layers, over 1 MB", res, dgst)
	}
	fn := mustDeployRef(t, c, "reg-lambda", ref)
	if fn.Image != reg.Host+"/lambda/app@"+dgst || fn.ImageRef != ref {
		t.Errorf("deployed image %q ref %q, want pinned %s@%s and ref %s", fn.Image, fn.ImageRef, reg.Host+"/lambda/app", dgst, ref)
	}
	out, first := invokeLambda(t, c, "reg-lambda")
	if out.Answer != "by-tag" || out.Handler != "app.handler" || out.TaskRoot != "/var/task" || out.Pwd != "/var/task" || string(out.Event) != `{"n":1}` {
		t.Errorf("answer = %+v", out)
	}
	if first.StartKind != api.StartCold {
		t.Errorf("first start %s, want cold", first.StartKind)
	}
	if _, next := invokeLambda(t, c, "reg-lambda"); next.StartKind != api.StartWarm {
		t.Errorf("second start %s, want warm", next.StartKind)
	}

	// By digest: the same image, shared (no second pull), its own function.
	byDigest := reg.Host + "/lambda/app@" + dgst
	fn2 := mustDeployRef(t, c, "reg-lambda-digest", byDigest)
	if fn2.Image != byDigest {
		t.Errorf("deployed by digest: image %q, want %q", fn2.Image, byDigest)
	}
	if out, _ := invokeLambda(t, c, "reg-lambda-digest"); out.Answer != "by-tag" {
		t.Errorf("by digest: answer %+v", out)
	}

	// Bad references are refused, naming the field.
	for _, bad := range []string{"UPPER/case:tag", reg.Host + "/lambda/app@sha256:1234", "http://" + ref, reg.Host + "/lambda/app:no-such-tag"} {
		refusedDeploy(t, c, "reg-lambda", bad, fn.Version)
	}
	if out, _ := invokeLambda(t, c, "reg-lambda"); out.Answer != "by-tag" {
		t.Errorf("after refused deploys: answer %+v", out)
	}
}

// TestRegistryTagMoved: a function keeps the digest it was deployed with
// when the tag moves; deploying the tag again takes the new digest.
func TestRegistryTagMoved(t *testing.T) {
	f := cluster(t)
	c := f.cluster.Client()
	reg := newTestRegistry(t)
	d1 := reg.push(t, "moving", "latest", lambdaImage(t, "one", 0, "amd64"))
	fn := mustDeployRef(t, c, "reg-moved", reg.Host+"/moving") // ":latest" implied
	if out, _ := invokeLambda(t, c, "reg-moved"); out.Answer != "one" {
		t.Fatalf("answer %+v, want one", out)
	}
	d2 := reg.push(t, "moving", "latest", lambdaImage(t, "two", 0, "amd64"))
	if d1 == d2 {
		t.Fatal("the two images have one digest")
	}
	// A new version (new env) of the same spec still runs d1, cold.
	spec := fn.FunctionSpec
	spec.Env = map[string]string{"ROUND": "2"}
	fn2, err := c.Deploy(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if fn2.Image != fn.Image || !strings.HasSuffix(fn2.Image, d1) {
		t.Errorf("after the tag moved: image %s, want %s", fn2.Image, fn.Image)
	}
	if out, res := invokeLambda(t, c, "reg-moved"); out.Answer != "one" || res.StartKind != api.StartCold {
		t.Errorf("after the tag moved: answer %+v (%s start), want one, cold", out, res.StartKind)
	}
	// Deploying the tag again resolves it again.
	fn3 := mustDeployRef(t, c, "reg-moved", reg.Host+"/moving:latest")
	if !strings.HasSuffix(fn3.Image, d2) || fn3.Version == fn2.Version {
		t.Errorf("redeploy of the tag: version %d image %s, want a new version on %s", fn3.Version, fn3.Image, d2)
	}
	if out, _ := invokeLambda(t, c, "reg-moved"); out.Answer != "two" {
		t.Errorf("after redeploy: answer %+v, want two", out)
	}
}

// TestRegistryCredentials: a private registry, with basic auth and with
// the bearer-token flow; right credentials pull, wrong ones are refused at
// deploy (the earlier version serving) and fail a pull with a clear error.
func TestRegistryCredentials(t *testing.T) {
	f := cluster(t)
	c := f.cluster.Client()
	for _, bearer := range []bool{false, true} {
		t.Run(map[bool]string{false: "basic", true: "bearer"}[bearer], func(t *testing.T) {
			reg := newTestRegistry(t)
			reg.requireAuth("amber", "s3cret", bearer)
			fname := "reg-private-" + map[bool]string{false: "basic", true: "bearer"}[bearer]
			ref1 := reg.Host + "/fn:v1"
			reg.push(t, "fn", "v1", lambdaImage(t, "private-1", 0, "amd64"))
			reg.push(t, "fn", "v2", lambdaImage(t, "private-2", 0, "amd64"))
			reg.push(t, "fn", "v3", lambdaImage(t, "private-3", 0, "amd64"))

			// No credentials at all, then wrong ones: refused.
			dockerConfig(t, "example.com", "amber", "s3cret")
			refusedDeploy(t, c, fname, ref1, 0, ref1)
			dockerConfig(t, reg.Host, "amber", "wrong")
			refusedDeploy(t, c, fname, ref1, 0, ref1)

			dockerConfig(t, reg.Host, "amber", "s3cret")
			fn := mustDeployRef(t, c, fname, ref1)
			if out, _ := invokeLambda(t, c, fname); out.Answer != "private-1" {
				t.Errorf("answer %+v", out)
			}

			// Wrong credentials at deploy: refused, v1 keeps serving.
			dockerConfig(t, reg.Host, "amber", "wrong")
			refusedDeploy(t, c, fname, reg.Host+"/fn:v2", fn.Version, reg.Host+"/fn:v2")
			if out, _ := invokeLambda(t, c, fname); out.Answer != "private-1" {
				t.Errorf("after a refused deploy: answer %+v", out)
			}

			// Credentials revoked after deploy: the image was pulled at
			// deploy, so the function still starts.
			dockerConfig(t, reg.Host, "amber", "s3cret")
			mustDeployRef(t, c, fname, reg.Host+"/fn:v3")
			dockerConfig(t, reg.Host, "amber", "wrong")
			if out, _ := invokeLambda(t, c, fname); out.Answer != "private-3" {
				t.Errorf("after the credentials were revoked: answer %+v", out)
			}
			dockerConfig(t, reg.Host, "amber", "s3cret")
		})
	}
}

// TestRegistryWrongPlatform: an image for arm64 only, as a plain
// manifest and in an index, is refused at deploy naming the reference.
func TestRegistryWrongPlatform(t *testing.T) {
	f := cluster(t)
	c := f.cluster.Client()
	reg := newTestRegistry(t)
	reg.push(t, "good", "v1", lambdaImage(t, "amd64", 0, "amd64"))
	fn := mustDeployRef(t, c, "reg-platform", reg.Host+"/good:v1")
	if out, _ := invokeLambda(t, c, "reg-platform"); out.Answer != "amd64" {
		t.Fatalf("answer %+v", out)
	}

	arm := lambdaImage(t, "arm64", 0, "arm64")
	reg.push(t, "arm", "v1", arm)
	refusedDeploy(t, c, "reg-platform", reg.Host+"/arm:v1", fn.Version, reg.Host+"/arm:v1", "linux/arm64", "not linux/amd64")

	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: arm,
		Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	ref, _ := name.ParseReference(reg.Host+"/arm:index", name.Insecure)
	if err := ggcr.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	refusedDeploy(t, c, "reg-platform", reg.Host+"/arm:index", fn.Version, reg.Host+"/arm:index", "no manifest for linux/amd64", "linux/arm64")

	if out, _ := invokeLambda(t, c, "reg-platform"); out.Answer != "amd64" {
		t.Errorf("after refused deploys: answer %+v", out)
	}
}

// TestRegistryPullFailures: a corrupt layer and a registry that vanishes
// in the middle of a layer fail the deploy's pre-pull with a clear error
// naming the reference, without a hang, and leave the earlier version and
// other functions serving.
func TestRegistryPullFailures(t *testing.T) {
	f := cluster(t)
	c := f.cluster.Client()

	good := newTestRegistry(t)
	good.push(t, "fn", "v1", lambdaImage(t, "steady", 0, "amd64"))
	mustDeployRef(t, c, "reg-steady", good.Host+"/fn:v1")
	if out, _ := invokeLambda(t, c, "reg-steady"); out.Answer != "steady" {
		t.Fatalf("answer %+v", out)
	}

	t.Run("corrupt layer", func(t *testing.T) {
		reg := newTestRegistry(t)
		reg.push(t, "fn", "v1", lambdaImage(t, "before", 0, "amd64"))
		fn := mustDeployRef(t, c, "reg-corrupt", reg.Host+"/fn:v1")
		img := lambdaImage(t, "corrupt", 256<<10, "amd64")
		reg.push(t, "fn", "v2", img)
		layers, _ := img.Layers()
		ld, _ := layers[len(layers)-1].Digest()
		reg.mu.Lock()
		reg.corrupt[ld.String()] = true
		reg.mu.Unlock()
		// The pre-pull at deploy fails: refused naming the reference,
		// v1 keeps serving.
		refusedDeploy(t, c, "reg-corrupt", reg.Host+"/fn:v2", fn.Version, reg.Host+"/fn:v2")
		if out, _ := invokeLambda(t, c, "reg-corrupt"); out.Answer != "before" {
			t.Errorf("after the refused deploy: answer %+v, want before", out)
		}
		// Fixed at the registry: the deploy pulls again, with progress.
		reg.mu.Lock()
		delete(reg.corrupt, ld.String())
		reg.mu.Unlock()
		var lines []api.DeployProgress
		fn2, err := c.DeployWithProgress(t.Context(), api.FunctionSpec{Name: "reg-corrupt", Image: reg.Host + "/fn:v2",
			MemoryMB: 128, Timeout: api.Duration(10 * time.Second)}, func(p api.DeployProgress) { lines = append(lines, p) })
		if err != nil {
			t.Fatalf("deploy after the fix: %v", err)
		}
		if fn2.Version == fn.Version || len(lines) == 0 {
			t.Errorf("deploy after the fix: version %d (was %d), %d progress lines", fn2.Version, fn.Version, len(lines))
		}
		t.Logf("progress: %+v", lines)
		if out, _ := invokeLambda(t, c, "reg-corrupt"); out.Answer != "corrupt" {
			t.Errorf("after the fix: answer %+v", out)
		}
	})

	t.Run("registry gone mid-pull", func(t *testing.T) {
		reg := newTestRegistry(t)
		reg.push(t, "fn", "v1", lambdaImage(t, "steady-vanish", 0, "amd64"))
		fn := mustDeployRef(t, c, "reg-vanish", reg.Host+"/fn:v1")
		img := lambdaImage(t, "vanish", 4<<20, "amd64")
		reg.push(t, "fn", "v2", img)
		layers, _ := img.Layers()
		ld, _ := layers[len(layers)-1].Digest()
		reg.mu.Lock()
		reg.dieOn = ld.String()
		reg.mu.Unlock()
		// The registry dies during the pre-pull: refused, v1 stays.
		refusedDeploy(t, c, "reg-vanish", reg.Host+"/fn:v2", fn.Version, reg.Host+"/fn:v2")
		// Still gone: refused again (connection refused at resolve).
		refusedDeploy(t, c, "reg-vanish", reg.Host+"/fn:v2", fn.Version, reg.Host+"/fn:v2")
		if out, _ := invokeLambda(t, c, "reg-vanish"); out.Answer != "steady-vanish" {
			t.Errorf("after the refused deploys: answer %+v", out)
		}
	})

	if out, _ := invokeLambda(t, c, "reg-steady"); out.Answer != "steady" {
		t.Errorf("other function after the failures: answer %+v", out)
	}
}

func benchRegistryPull(b *testing.B) {
	f := clusterB(b)
	c := f.cluster.Client()
	ctx := b.Context()
	reg := newTestRegistry(b)
	const pad = 50 << 20
	cli, err := containerd.New(f.cluster.Containerd.Address, containerd.WithDefaultNamespace("bench-pull"))
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	rounds := benchRounds(b, 3)
	var pulls, firsts, firstInits, presents, presentInits []time.Duration
	var size int64
	for i := 0; i < rounds; i++ {
		// Pull and unpack alone, with the agent's options, in a namespace
		// of its own; deleted after.
		dgst := reg.push(b, "big", fmt.Sprintf("pull-%d", i), lambdaImage(b, "big", pad, "amd64"))
		ref := reg.Host + "/big@" + dgst
		t0 := time.Now()
		img, err := cli.Pull(ctx, ref,
			containerd.WithResolver(remote.NewResolver(nil, nil)),
			containerd.WithPlatformMatcher(platforms.OnlyStrict(remote.Platform)),
			containerd.WithPullUnpack, containerd.WithPullSnapshotter("overlayfs"))
		if err != nil {
			b.Fatalf("pull %s: %v", ref, err)
		}
		pulls = append(pulls, time.Since(t0))
		size, _ = img.Size(ctx)
		if err := cli.ImageService().Delete(ctx, ref, images.SynchronousDelete()); err != nil {
			b.Fatal(err)
		}

		// Deploy a fresh image by tag (the deploy resolves it and has the
		// home agent pull it), then its first invocation: timed together.
		tag := fmt.Sprintf("fn-%d", i)
		reg.push(b, "big", tag, lambdaImage(b, "big", pad, "amd64"))
		t0 = time.Now()
		fn, err := c.Deploy(ctx, api.FunctionSpec{Name: "bench-pull", Image: reg.Host + "/big:" + tag,
			MemoryMB: 128, Timeout: api.Duration(30 * time.Second)})
		if err != nil {
			b.Fatal(err)
		}
		res, err := c.Invoke(ctx, "bench-pull", []byte(`{}`))
		if err != nil || res.FunctionError != "" || res.StartKind != api.StartCold {
			b.Fatalf("first invoke: %v %+v", err, res)
		}
		firsts = append(firsts, time.Since(t0))
		firstInits = append(firstInits, res.InitDuration)

		// A new version of the same image: a cold start, image present.
		spec := fn.FunctionSpec
		spec.Env = map[string]string{"ROUND": fmt.Sprint(i)}
		if _, err := c.Deploy(ctx, spec); err != nil {
			b.Fatal(err)
		}
		t0 = time.Now()
		res, err = c.Invoke(ctx, "bench-pull", []byte(`{}`))
		if err != nil || res.FunctionError != "" || res.StartKind != api.StartCold {
			b.Fatalf("cold invoke: %v %+v", err, res)
		}
		presents = append(presents, time.Since(t0))
		presentInits = append(presentInits, res.InitDuration)
	}
	pull, first, present := percentile(pulls, 50), percentile(firsts, 50), percentile(presents, 50)
	b.ReportMetric(ms(pull), "pull-unpack-p50-ms")
	b.ReportMetric(ms(first), "deploy+first-invoke-p50-ms")
	b.ReportMetric(ms(present), "cold-present-p50-ms")
	b.ReportMetric(float64(first)/float64(present), "deploy+first/cold-present")
	b.Logf("%d rounds, image %.1f MB: pull+unpack p50 %.0f ms (%.0f MB/s); deploy by reference (resolve, pre-pull) + first invoke p50 %.0f ms (init %.0f ms); "+
		"cold start with the image present p50 %.0f ms (init %.0f ms); ratio %.1f",
		rounds, float64(size)/(1<<20), ms(pull), float64(size)/(1<<20)/pull.Seconds(), ms(first), ms(percentile(firstInits, 50)),
		ms(present), ms(percentile(presentInits, 50)), float64(first)/float64(present))
}

func TestAgentListsItsImages(t *testing.T) {
	f := cluster(t)
	c := f.cluster.Client()
	deploy(t, c, "img-list", f.images["shell"])
	res, err := c.Invoke(t.Context(), "img-list", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	agents, err := c.Agents(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range agents {
		if a.Name != res.Agent {
			continue
		}
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, a.URL+"/v1/images", nil)
		req.Header.Set("Authorization", "Bearer "+f.cluster.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var imgs []agent.ImageInfo
		if err := json.NewDecoder(resp.Body).Decode(&imgs); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/images: %s %v", resp.Status, err)
		}
		for _, im := range imgs {
			if im.Size > 0 && im.Name != "" {
				return
			}
		}
		t.Errorf("agent %s lists no image with a name and size: %+v", a.Name, imgs)
	}
}
