package scheduler

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// Two schedulers on one JetStream: an image uploaded through a can be
// deployed through b, and an agent's download through b (the agent's own
// client, with the join token) gives the same bytes — first streamed from
// the object store into b's cache, then from the cache.
func TestSharedImages(t *testing.T) {
	a := newTestScheduler(t, WithToken("api"), WithJoinToken("join"))
	b := newTestScheduler(t, WithToken("api"), WithJoinToken("join"), WithNATS(NATSConfig{URL: a.eng.ClientURL(), Replicas: 1}))
	archive := ociTar(t, "shared")
	digest := decode[api.ImageUpload](t, a.do(t, "POST", "/v1/images", bytes.NewReader(archive)), http.StatusCreated).Digest
	if digest != sha(archive) {
		t.Fatalf("upload digest %s, want %s", digest, sha(archive))
	}
	if _, err := os.Stat(b.images.path(digest)); err == nil {
		t.Fatal("b has the archive in its cache before anyone asked it")
	}
	fn := decode[api.Function](t, b.do(t, "PUT", "/v1/functions/hello", strings.NewReader(`{"image":"`+digest+`"}`)), http.StatusCreated)
	if fn.Image != digest {
		t.Fatalf("deployed image %s", fn.Image)
	}
	errorBody(t, b.do(t, "PUT", "/v1/functions/other", strings.NewReader(`{"image":"sha256:`+strings.Repeat("e", 64)+`"}`)), http.StatusBadRequest)

	agent := api.NewClient(b.srv.URL, api.WithToken("join"))
	for _, from := range []string{"object store", "cache"} {
		t.Run(from, func(t *testing.T) {
			rc, err := agent.FetchImage(context.Background(), digest)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			if sha(got) != digest || !bytes.Equal(got, archive) {
				t.Fatalf("downloaded %d bytes hashing to %s; want %d bytes, %s", len(got), sha(got), len(archive), digest)
			}
			// The handler keeps the cached copy once the body is out.
			waitFor(t, "b caches the archive", func() bool {
				c, err := os.ReadFile(b.images.path(digest))
				return err == nil && bytes.Equal(c, archive)
			})
		})
	}
	resp := b.do(t, "HEAD", "/v1/images/"+digest, nil)
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(archive)) {
		t.Errorf("HEAD: %d, Content-Length %d", resp.StatusCode, resp.ContentLength)
	}
}

// A download from the object store sends Content-Length and the bytes,
// and HEAD sends the length alone, both before anything is cached.
func TestImageStreamedFromObjectStore(t *testing.T) {
	ts := newTestScheduler(t)
	archive := ociTar(t, "stream")
	digest, _, err := ts.images.put(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(ts.images.path(digest)); err != nil { // empty the cache
		t.Fatal(err)
	}
	for _, method := range []string{"HEAD", "GET"} {
		resp := ts.do(t, method, "/v1/images/"+digest, nil)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || resp.ContentLength != int64(len(archive)) || resp.Header.Get("ETag") != `"`+digest+`"` {
			t.Fatalf("%s: %d, Content-Length %d, ETag %s", method, resp.StatusCode, resp.ContentLength, resp.Header.Get("ETag"))
		}
		if method == "GET" && !bytes.Equal(body, archive) {
			t.Fatalf("GET: %d bytes, not the archive", len(body))
		}
	}
}

// A data folder of the old layout (DATA/images/sha256/<hex>.tar): its
// archives go into the object store at the first start, logged, and stay
// as the cache; a file whose content is not its name is set aside as
// *.corrupt and not imported; stray files are left alone. The second start
// imports nothing again.
func TestImageImport(t *testing.T) {
	dir := t.TempDir()
	shaDir := filepath.Join(dir, "images", "sha256")
	if err := os.MkdirAll(shaDir, 0o700); err != nil {
		t.Fatal(err)
	}
	good := map[string][]byte{}
	for _, tag := range []string{"one", "two"} {
		ar := ociTar(t, tag)
		good[sha(ar)] = ar
		if err := os.WriteFile(filepath.Join(shaDir, strings.TrimPrefix(sha(ar), "sha256:")+".tar"), ar, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	liar := filepath.Join(shaDir, strings.Repeat("ab", 32)+".tar")
	stray := filepath.Join(shaDir, "notes.txt")
	for f, data := range map[string]string{liar: "not what the name says", stray: "x"} {
		if err := os.WriteFile(f, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	open := func(logs *syncBuffer) *Scheduler {
		t.Helper()
		s, err := New(WithDataDir(dir), WithLogger(slog.New(slog.NewTextHandler(io.MultiWriter(logs, tWriter{t}), nil))))
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		return s
	}
	var logs syncBuffer
	s := open(&logs)
	nuids := map[string]string{}
	for digest, ar := range good {
		oi, err := s.images.info(context.Background(), digest)
		if err != nil || oi == nil || oi.Size != uint64(len(ar)) {
			t.Fatalf("%s after the import: %+v, %v", digest, oi, err)
		}
		nuids[digest] = oi.NUID
		if !strings.Contains(logs.String(), `msg="imported image into the object store" digest=`+digest) {
			t.Errorf("the import of %s is not logged", digest)
		}
		if _, err := os.Stat(s.images.path(digest)); err != nil {
			t.Errorf("the cached file of %s: %v", digest, err)
		}
	}
	if s.images.has("sha256:" + strings.Repeat("ab", 32)) {
		t.Error("the corrupt archive was imported")
	}
	if _, err := os.Stat(liar + ".corrupt"); err != nil {
		t.Errorf("the corrupt archive was not set aside: %v", err)
	}
	if _, err := os.Stat(stray); err != nil {
		t.Errorf("the stray file: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	var logs2 syncBuffer
	s = open(&logs2)
	defer s.Close()
	for digest := range good {
		oi, err := s.images.info(context.Background(), digest)
		if err != nil || oi == nil || oi.NUID != nuids[digest] {
			t.Errorf("%s after the second start: %+v, %v; want the first import's object %s", digest, oi, err, nuids[digest])
		}
	}
	if strings.Contains(logs2.String(), "imported image") {
		t.Errorf("the second start imported again:\n%s", logs2.String())
	}
}

// When JetStream cannot take an upload (its node is gone), the upload
// answers 503 naming the cause and nothing is cached; a deploy of an
// archive and a download of one not in the cache answer 503 too.
func TestImageStoreUnavailable(t *testing.T) {
	a, b := newSchedulerPair(t)
	cached, _, err := b.images.put(bytes.NewReader(ociTar(t, "before")))
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := a.images.put(bytes.NewReader(ociTar(t, "elsewhere")))
	if err != nil {
		t.Fatal(err)
	}
	b.images.timeout = 200 * time.Millisecond // sooner than the default 5s
	if err := a.Close(); err != nil {         // stops the node b uses
		t.Fatal(err)
	}
	archive := ociTar(t, "during")
	e := errorBody(t, b.do(t, "POST", "/v1/images", bytes.NewReader(archive)), http.StatusServiceUnavailable)
	t.Logf("upload: 503 %s", e.Message)
	if !strings.Contains(e.Message, "control plane store unavailable") || !strings.Contains(e.Message, sha(archive)) {
		t.Errorf("503 message %q does not name the cause", e.Message)
	}
	if _, err := os.Stat(b.images.path(sha(archive))); err == nil {
		t.Error("an archive the store refused is in the cache")
	}
	e = errorBody(t, b.do(t, "PUT", "/v1/functions/f", strings.NewReader(`{"image":"`+cached+`"}`)), http.StatusServiceUnavailable)
	t.Logf("deploy: 503 %s", e.Message)
	e = errorBody(t, b.do(t, "GET", "/v1/images/"+other, nil), http.StatusServiceUnavailable)
	t.Logf("download: 503 %s", e.Message)
	// What b has cached still reaches its agents.
	resp := b.do(t, "GET", "/v1/images/"+cached, nil)
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || sha(got) != cached {
		t.Errorf("cached download: %d, %d bytes", resp.StatusCode, len(got))
	}
}
