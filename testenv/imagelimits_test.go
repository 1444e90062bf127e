package testenv_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/amberfn/amber/agent"
	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/scheduler"
	"github.com/amberfn/amber/testenv"
)

// archiveOf writes img as an OCI image archive (the layout, tarred) and
// returns its path.
func archiveOf(t *testing.T, img v1.Image) string {
	t.Helper()
	dir := t.TempDir()
	lp, err := layout.Write(filepath.Join(dir, "layout"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "image.tar")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	root := filepath.Join(dir, "layout")
	err = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		hdr.Name = rel
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// zeroLayer is a layer of n files of size bytes of zeros, generated as it
// is read: a gzip bomb of modest size (or another compression's, with
// tarball.WithCompression).
func zeroLayer(t *testing.T, n int, size int64, opts ...tarball.LayerOption) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		go func() {
			tw := tar.NewWriter(pw)
			for i := range n {
				if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("var/task/zeros-%d", i), Mode: 0o644, Size: size,
					Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
					pw.CloseWithError(err)
					return
				}
				if _, err := io.CopyN(tw, zeroReader{}, size); err != nil {
					pw.CloseWithError(err)
					return
				}
			}
			pw.CloseWithError(tw.Close())
		}()
		return pr, nil
	}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func withLayers(t *testing.T, img v1.Image, layers ...v1.Layer) v1.Image {
	t.Helper()
	out, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func layerDigest(t *testing.T, l v1.Layer) string {
	t.Helper()
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// escapeImage is lambdaImage plus a layer whose entries try to land
// outside the image's root, at unique names under target (a host folder):
// a ../ path, an absolute path, and files written through symlinks to
// target (absolute and relative). Its handler answers with what it finds
// under target inside its own root.
func escapeImage(t *testing.T, target string) v1.Image {
	up := strings.Repeat("../", 40)
	rel := strings.TrimPrefix(target, "/")
	escape := layerOf(t, []tarFile{
		{name: up + rel + "/dotdot", mode: 0o644, data: []byte("dotdot")},
		{name: target + "/absolute", mode: 0o644, data: []byte("absolute")},
		{name: "esc-abs", link: target, mode: 0o777},
		{name: "esc-abs/through-abs-link", mode: 0o644, data: []byte("through an absolute symlink")},
		{name: "esc-rel", link: up + rel, mode: 0o777},
		{name: "esc-rel/through-rel-link", mode: 0o644, data: []byte("through a relative symlink")},
	})
	handler := layerOf(t, []tarFile{{name: "var/task/app.sh", mode: 0o644, data: []byte(fmt.Sprintf(`handler() {
	printf '{"answer":"%%s"}' "$($BUSYBOX find %s 2>&1 | $BUSYBOX sort | $BUSYBOX tr '\n' ' ')"
}
`, target))}})
	return withLayers(t, lambdaImage(t, "escape", 0, "amd64"), escape, handler)
}

// TestImageLayerEscapes: layers with ../ and absolute entries, and files
// written through symlinks pointing out of the root, deployed from a
// registry and as an uploaded archive, run; everything they hold stays
// inside containerd's snapshot and nothing appears on the host.
func TestImageLayerEscapes(t *testing.T) {
	f := cluster(t)
	c := f.cluster.Client()
	want := []string{"dotdot", "absolute", "through-abs-link", "through-rel-link"}
	check := func(t *testing.T, fname, target string) {
		t.Helper()
		out, _ := invokeLambda(t, c, fname)
		t.Logf("inside the instance, under %s: %s", target, out.Answer)
		for _, w := range want {
			if !strings.Contains(out.Answer, filepath.Join(target, w)) {
				t.Errorf("%s not found inside the image's root (%q)", w, out.Answer)
			}
		}
		ents, err := os.ReadDir(target)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			t.Errorf("on the host: %s/%s was written by the image's layer", target, e.Name())
		}
		for _, w := range want {
			if _, err := os.Lstat(filepath.Join(target, w)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("on the host: %s: %v, want not there", filepath.Join(target, w), err)
			}
		}
	}
	// Not under /tmp: the instance mounts its own tmpfs there, and the
	// folders a layer makes under it would change that mount's owner.
	hostDir := func(t *testing.T) string {
		d, err := os.MkdirTemp("/var/tmp", "amber-escape-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		return d
	}
	t.Run("registry", func(t *testing.T) {
		target := hostDir(t)
		reg := newTestRegistry(t)
		reg.push(t, "escape", "v1", escapeImage(t, target))
		mustDeployRef(t, c, "escape-reg", reg.Host+"/escape:v1")
		check(t, "escape-reg", target)
	})
	t.Run("archive", func(t *testing.T) {
		target := hostDir(t)
		deploy(t, c, "escape-archive", archiveOf(t, escapeImage(t, target)))
		check(t, "escape-archive", target)
	})
}

// limitsCluster is a cluster of its own (one agent) whose scheduler
// refuses uploads unpacking past 32 MiB and whose agent refuses images
// unpacking past 8 MiB.
func limitsCluster(t *testing.T) *testenv.Cluster {
	t.Helper()
	testenv.Require(t, testenv.CheckContainerd())
	dir := t.TempDir()
	ctx := t.Context()
	initBin, err := testenv.BuildInit(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := testenv.StartCluster(context.WithoutCancel(ctx), testenv.ClusterConfig{
		Dir: filepath.Join(dir, "cluster"), Agents: 1, InitBin: initBin,
		SchedulerOptions:  []scheduler.Option{scheduler.WithMaxUnpackedBytes(schedulerLimit)},
		ContainerdOptions: []agent.ContainerdOption{agent.WithMaxUnpackedBytes(agentLimit)},
	})
	if err != nil {
		t.Fatalf("bring up the cluster: %v", err)
	}
	t.Cleanup(cl.Stop)
	return cl
}

const (
	schedulerLimit = 32 << 20
	agentLimit     = 8 << 20
	hugeDocument   = 300 << 20
)

// serveHuge answers HEAD and GET with size bytes of spaces, generated as
// they are written, as mediaType.
func serveHuge(size int64, mediaType, dgst string) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", mediaType)
		w.Header().Set("Content-Length", fmt.Sprint(size))
		if dgst != "" {
			w.Header().Set("Docker-Content-Digest", dgst)
		}
		w.WriteHeader(http.StatusOK)
		if req.Method == http.MethodGet {
			_, _ = io.CopyN(w, spaces{}, size)
		}
	}
}

type spaces struct{}

func (spaces) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	return len(p), nil
}

// allocatedDuring is how many bytes the process allocated while fn ran
// (the whole in-process cluster's, so a bound, not an exact figure).
func allocatedDuring(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestImageLimits: a gzip bomb is refused by the scheduler at upload and
// by an agent before it unpacks, a registry blob longer than its
// descriptor and a manifest or config of hundreds of MB are refused at
// deploy, each with an error naming the image, the layer or document and
// the limit, without the memory the documents would take; the previous
// version keeps serving throughout.
func TestImageLimits(t *testing.T) {
	cl := limitsCluster(t)
	c := cl.Client()
	base := lambdaImage(t, "v1", 0, "amd64")
	fn := deploy(t, c, "lim", archiveOf(t, base))
	serving := func(t *testing.T) {
		t.Helper()
		if out, _ := invokeLambda(t, c, "lim"); out.Answer != "v1" {
			t.Errorf("previous version: answer %+v, want v1", out)
		}
		got, err := c.Function(t.Context(), "lim")
		if err != nil {
			t.Fatal(err)
		}
		if got.Version != fn.Version {
			t.Errorf("lim is at version %d, want %d", got.Version, fn.Version)
		}
	}
	serving(t)

	t.Run("archive past the scheduler's limit", func(t *testing.T) {
		bomb := zeroLayer(t, 48, 1<<20)
		f, err := os.Open(archiveOf(t, withLayers(t, base, bomb)))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fi, _ := f.Stat()
		_, err = c.UploadImage(t.Context(), f)
		var se *api.StatusError
		if !errors.As(err, &se) || se.Status != http.StatusRequestEntityTooLarge {
			t.Fatalf("upload of a %d-byte archive unpacking to 48 MiB: %v, want 413", fi.Size(), err)
		}
		for _, w := range []string{layerDigest(t, bomb), fmt.Sprint(schedulerLimit)} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not name %q", err, w)
			}
		}
		t.Logf("archive of %d bytes: %v", fi.Size(), err)
		serving(t)
	})

	t.Run("archive past the agent's limit", func(t *testing.T) {
		bomb := zeroLayer(t, 12, 1<<20)
		deployed := deploy(t, c, "lim-agent", archiveOf(t, withLayers(t, base, bomb)))
		err := invokeFails(t, c, "lim-agent", deployed.Image, layerDigest(t, bomb), fmt.Sprint(agentLimit))
		t.Logf("invoke: %v", err)
		serving(t)
	})

	t.Run("zstd archives", func(t *testing.T) {
		zstd := []tarball.LayerOption{tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd)}
		big := zeroLayer(t, 48, 1<<20, zstd...)
		f, err := os.Open(archiveOf(t, withLayers(t, base, big)))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		_, err = c.UploadImage(t.Context(), f)
		var se *api.StatusError
		if !errors.As(err, &se) || se.Status != http.StatusRequestEntityTooLarge || !strings.Contains(err.Error(), layerDigest(t, big)) {
			t.Errorf("upload of a zstd layer unpacking to 48 MiB: %v, want 413 naming the layer", err)
		}
		small := zeroLayer(t, 12, 1<<20, zstd...)
		deployed := deploy(t, c, "lim-zstd", archiveOf(t, withLayers(t, base, small)))
		err = invokeFails(t, c, "lim-zstd", deployed.Image, layerDigest(t, small), fmt.Sprint(agentLimit))
		t.Logf("invoke: %v", err)
		serving(t)
	})

	reg := newTestRegistry(t)
	ref := reg.Host + "/fn"
	var refused []string // registry images an agent refused
	t.Run("registry image past the agent's limit", func(t *testing.T) {
		bomb := zeroLayer(t, 12, 1<<20)
		refused = append(refused, reg.push(t, "fn", "bomb", withLayers(t, base, bomb)))
		refusedDeploy(t, c, "lim", ref+":bomb", fn.Version, layerDigest(t, bomb), fmt.Sprint(agentLimit))
		serving(t)
	})

	t.Run("registry blob longer than its descriptor", func(t *testing.T) {
		extra := layerOf(t, []tarFile{{name: "var/task/extra.txt", mode: 0o644, data: []byte("extra")}})
		img := withLayers(t, base, extra)
		refused = append(refused, reg.push(t, "fn", "long", img))
		d := layerDigest(t, extra)
		reg.mu.Lock()
		reg.override["/v2/fn/blobs/"+d] = func(w http.ResponseWriter, req *http.Request) {
			rc, _ := extra.Compressed()
			body, _ := io.ReadAll(rc)
			body = append(body, make([]byte, 4<<20)...)
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			w.WriteHeader(http.StatusOK)
			if req.Method == http.MethodGet {
				w.Write(body)
			}
		}
		reg.mu.Unlock()
		refusedDeploy(t, c, "lim", ref+":long", fn.Version, d, "more than")
		serving(t)
	})

	t.Run("registry manifest of 300 MB", func(t *testing.T) {
		reg.mu.Lock()
		reg.override["/v2/fn/manifests/huge"] = serveHuge(hugeDocument, "application/vnd.oci.image.manifest.v1+json", "")
		reg.mu.Unlock()
		var err error
		alloc := allocatedDuring(func() { _, err = deployRef(t, c, "lim", ref+":huge") })
		t.Logf("%v; %d MB allocated", err, alloc>>20)
		refusedDeploy(t, c, "lim", ref+":huge", fn.Version, fmt.Sprint(hugeDocument))
		if alloc > 64<<20 {
			t.Errorf("a refused %d-byte manifest cost %d bytes of allocations", hugeDocument, alloc)
		}
		serving(t)
	})

	t.Run("registry config of 300 MB", func(t *testing.T) {
		cfgDigest := "sha256:" + strings.Repeat("c0", 32)
		layers, _ := base.Layers()
		var ld []map[string]any
		for _, l := range layers {
			d, _ := l.Digest()
			sz, _ := l.Size()
			mt, _ := l.MediaType()
			ld = append(ld, map[string]any{"mediaType": mt, "digest": d.String(), "size": sz})
		}
		m, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
			"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfgDigest, "size": hugeDocument},
			"layers": ld})
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+reg.Host+"/v2/fn/manifests/bigconfig", bytes.NewReader(m))
		req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("put manifest: %s", resp.Status)
		}
		reg.mu.Lock()
		reg.override["/v2/fn/blobs/"+cfgDigest] = serveHuge(hugeDocument, "application/octet-stream", cfgDigest)
		reg.mu.Unlock()
		var derr error
		alloc := allocatedDuring(func() { _, derr = deployRef(t, c, "lim", ref+":bigconfig") })
		t.Logf("%v; %d MB allocated", derr, alloc>>20)
		refusedDeploy(t, c, "lim", ref+":bigconfig", fn.Version, cfgDigest, "limit")
		if alloc > 64<<20 {
			t.Errorf("a refused %d-byte config cost %d bytes of allocations", hugeDocument, alloc)
		}
		serving(t)
	})

	t.Run("nothing refused is kept", func(t *testing.T) {
		agents, err := c.Agents(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range agents {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, a.URL+"/v1/images", nil)
			req.Header.Set("Authorization", "Bearer "+cl.Token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var imgs []agent.ImageInfo
			err = json.NewDecoder(resp.Body).Decode(&imgs)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			for _, im := range imgs {
				for _, r := range refused {
					if strings.HasSuffix(im.Name, "@"+r) {
						t.Errorf("agent %s keeps the refused image %s", a.Name, im.Name)
					}
				}
				t.Logf("agent %s holds %s (%d bytes)", a.Name, im.Name, im.Size)
			}
		}
	})
}
