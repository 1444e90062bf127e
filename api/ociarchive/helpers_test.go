package ociarchive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// tarFile is one entry of an outer archive, as tests see it.
type tarFile struct {
	name string
	data []byte
	dir  bool
}

// readTar returns the entries of a tar in order.
func readTar(t *testing.T, b []byte) []tarFile {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var out []tarFile
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("read tar: %v", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read tar: %v", err)
		}
		out = append(out, tarFile{name: h.Name, data: data, dir: h.Typeflag == tar.TypeDir})
	}
}

// writeTar packs entries into a tar.
func writeTar(t *testing.T, files []tarFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg}
		if f.dir {
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil && !f.dir {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// mutate rewrites an archive: fn gets each file and returns its new content,
// or keep=false to drop it.
func mutate(t *testing.T, archive []byte, fn func(name string, data []byte) (out []byte, keep bool)) []byte {
	t.Helper()
	var files []tarFile
	for _, f := range readTar(t, archive) {
		if f.dir {
			files = append(files, f)
			continue
		}
		data, keep := fn(f.name, f.data)
		if keep {
			files = append(files, tarFile{name: f.name, data: data})
		}
	}
	return writeTar(t, files)
}

// layoutBuilder assembles OCI layouts by hand, for Inspect tests.
type layoutBuilder struct {
	files []tarFile
}

func (b *layoutBuilder) blob(mediaType string, data []byte) descriptor {
	d := descriptor{MediaType: mediaType, Digest: digestOf(data), Size: int64(len(data))}
	b.files = append(b.files, tarFile{name: blobPath(d.Digest), data: data})
	return d
}

func (b *layoutBuilder) json(mediaType string, v any) descriptor {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b.blob(mediaType, data)
}

// image adds a one-layer image for os/arch whose layer holds one file, and
// returns its manifest descriptor (with platform set).
func (b *layoutBuilder) image(t *testing.T, os, arch, content string, manifestType, layerType string) descriptor {
	t.Helper()
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	tw.WriteHeader(&tar.Header{Name: "file", Mode: 0o644, Size: int64(len(content))})
	tw.Write([]byte(content))
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw.Bytes())
	zw.Close()
	layer := b.blob(layerType, gz.Bytes())
	cfg := b.json(MediaTypeConfig, imageConfigFile{
		Architecture: arch, OS: os,
		Config: ImageConfig{Entrypoint: []string{"/" + arch}},
		RootFS: rootFS{Type: "layers", DiffIDs: []string{digestOf(raw.Bytes())}},
	})
	m := b.json(manifestType, manifest{SchemaVersion: 2, MediaType: manifestType, Config: cfg, Layers: []descriptor{layer}})
	m.Platform = &platform{OS: os, Architecture: arch}
	return m
}

func (b *layoutBuilder) archive(t *testing.T, idx index, prefix string) []byte {
	t.Helper()
	idxJSON, _ := json.Marshal(idx)
	files := []tarFile{
		{name: prefix + "oci-layout", data: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{name: prefix + "index.json", data: idxJSON},
	}
	for _, f := range b.files {
		files = append(files, tarFile{name: prefix + f.name, data: f.data})
	}
	return writeTar(t, files)
}

// fnDir makes a function directory: bootstrap, a library in a
// subdirectory, a data file and a symlink.
func fnDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	write := func(name, data string, mode os.FileMode) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // beat the umask
			t.Fatal(err)
		}
	}
	write("bootstrap", "#!/bin/sh\necho hi\n", 0o755)
	write("lib/helper.sh", "echo helper\n", 0o750)
	write("lib/deep/data.json", `{"a":1}`, 0o600)
	write("config.txt", "x=1\n", 0o644)
	if err := os.Symlink("lib/helper.sh", filepath.Join(dir, "helper")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "lib"), 0o750); err != nil {
		t.Fatal(err)
	}
	return dir
}

// layerOf returns the headers of the single layer of an archive built by
// Build, in order, and the layer's uncompressed bytes per file name.
func layerOf(t *testing.T, archive []byte) ([]*tar.Header, map[string]string) {
	t.Helper()
	blobs := map[string][]byte{}
	for _, f := range readTar(t, archive) {
		blobs[f.name] = f.data
	}
	var idx index
	if err := json.Unmarshal(blobs["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	var m manifest
	if err := json.Unmarshal(blobs[blobPath(idx.Manifests[0].Digest)], &m); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blobs[blobPath(m.Layers[0].Digest)]))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var hdrs []*tar.Header
	content := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hdrs, content
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		content[h.Name] = string(b)
		hdrs = append(hdrs, h)
	}
}
