package scheduler

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/amberfn/amber/api/ociarchive"
)

// tarEntry is one regular file of an archive.
type tarEntry struct {
	name string
	data []byte
}

// editTar rewrites archive's regular files through fn.
func editTar(t *testing.T, archive []byte, fn func([]tarEntry) []tarEntry) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(archive))
	var files []tarEntry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			data, _ := io.ReadAll(tr)
			files = append(files, tarEntry{hdr.Name, data})
		}
	}
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for _, f := range fn(files) {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(f.data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func sha(b []byte) string { s := sha256.Sum256(b); return "sha256:" + hex.EncodeToString(s[:]) }

// bigManifest rewrites a built archive so that its manifest carries an
// annotation of pad bytes, under its new digest, with index.json pointing
// at it: a valid archive with a manifest over ociarchive.MaxManifestBytes.
func bigManifest(t *testing.T, archive []byte, pad int) []byte {
	t.Helper()
	return editTar(t, archive, func(files []tarEntry) []tarEntry {
		var idx map[string]any
		for _, f := range files {
			if f.name == "index.json" {
				json.Unmarshal(f.data, &idx)
			}
		}
		d := idx["manifests"].([]any)[0].(map[string]any)
		old := "blobs/sha256/" + strings.TrimPrefix(d["digest"].(string), "sha256:")
		for i, f := range files {
			if f.name != old {
				continue
			}
			var m map[string]any
			json.Unmarshal(f.data, &m)
			m["annotations"] = map[string]string{"pad": strings.Repeat("x", pad)}
			b, _ := json.Marshal(m)
			d["digest"], d["size"] = sha(b), len(b)
			files[i] = tarEntry{"blobs/sha256/" + strings.TrimPrefix(sha(b), "sha256:"), b}
		}
		for i, f := range files {
			if f.name == "index.json" {
				files[i].data, _ = json.Marshal(idx)
			}
		}
		return files
	})
}

// TestImageUploadLimits: an archive whose layers unpack past the
// scheduler's limit (a gzip bomb), one whose layer blob is longer than
// its descriptor, and one with a 6 MB manifest are refused at upload with
// a message naming the problem, and nothing is stored.
func TestImageUploadLimits(t *testing.T) {
	const limit = 16 << 20
	ts := newTestScheduler(t, WithMaxUnpackedBytes(limit))

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bootstrap"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	zf, err := os.Create(filepath.Join(dir, "zeros"))
	if err != nil {
		t.Fatal(err)
	}
	zf.Truncate(64 << 20) // 64 MiB of zeros, sparse on disk
	zf.Close()
	var bomb bytes.Buffer
	img, err := ociarchive.Build(dir, &bomb)
	if err != nil {
		t.Fatal(err)
	}
	layer := img.Layers[0].Digest
	good := ociTar(t, "limits")
	longer := editTar(t, good, func(files []tarEntry) []tarEntry {
		for i, f := range files {
			if strings.HasPrefix(f.name, "blobs/") && len(f.data) > 2 && f.data[0] == 0x1f && f.data[1] == 0x8b {
				files[i].data = append(f.data, make([]byte, 1<<20)...) // a gzip'd layer
			}
		}
		return files
	})

	tests := []struct {
		name   string
		body   []byte
		status int
		want   []string
	}{
		{"gzip bomb", bomb.Bytes(), http.StatusRequestEntityTooLarge, []string{layer, "16777216"}},
		{"layer longer than its descriptor", longer, http.StatusBadRequest, []string{"descriptor says"}},
		{"6 MB manifest", bigManifest(t, good, 6<<20), http.StatusRequestEntityTooLarge, []string{"over the 4194304-byte limit"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := errorBody(t, ts.do(t, "POST", "/v1/images", bytes.NewReader(tt.body)), tt.status)
			for _, w := range tt.want {
				if !strings.Contains(e.Message, w) {
					t.Errorf("error %q does not say %q", e.Message, w)
				}
			}
			t.Logf("%d-byte archive: %s", len(tt.body), e.Message)
			if ts.images.has(sha(tt.body)) {
				t.Errorf("the refused archive was stored")
			}
		})
	}
	t.Run("good archive", func(t *testing.T) {
		ts.do(t, "POST", "/v1/images", bytes.NewReader(good)).Body.Close()
		if !ts.images.has(sha(good)) {
			t.Error("a good archive was not stored")
		}
	})
}

// has reports whether the object store holds digest (false on an error).
func (st *imageStore) has(digest string) bool {
	ok, _ := st.exists(context.Background(), digest)
	return ok
}
