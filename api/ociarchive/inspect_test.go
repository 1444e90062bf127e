package ociarchive

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// built returns an archive built from a fresh function dir.
func built(t *testing.T) ([]byte, *Image) {
	t.Helper()
	var buf bytes.Buffer
	img, err := Build(fnDir(t), &buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), img
}

func inspectBytes(b []byte) (*Image, error) { return Inspect(bytes.NewReader(b), int64(len(b))) }

func TestInspectErrors(t *testing.T) {
	good, img := built(t)
	layer := blobPath(mustLayerDigest(t, good))
	config := blobPath(img.ConfigDigest)
	junk := make([]byte, 4096)
	rand.Read(junk)

	tests := []struct {
		name    string
		archive []byte
		wantErr error
		wantMsg string
	}{
		{"empty input", nil, ErrNotArchive, "empty tar"},
		{"random bytes", junk, ErrNotArchive, "not a tar archive"},
		{"plain text", []byte(strings.Repeat("hello world\n", 100)), ErrNotArchive, "not a tar archive"},
		{
			"tar without index.json",
			mutate(t, good, func(name string, b []byte) ([]byte, bool) { return b, name != "index.json" }),
			ErrNotArchive, "no index.json",
		},
		{
			"unrelated tar",
			writeTar(t, []tarFile{{name: "hello.txt", data: []byte("hi")}}),
			ErrNotArchive, "no index.json",
		},
		{"truncated inside the first file", good[:600], ErrCorrupt, "truncated"},
		{"truncated in the middle", good[:len(good)/2], ErrCorrupt, "truncated"},
		{"truncated near the end", good[:len(good)-1500], ErrCorrupt, "truncated"},
		{"end-of-archive marker cut off", good[:len(good)-1024], ErrCorrupt, "no end-of-archive marker"},
		{
			"layer with a wrong hash",
			mutate(t, good, func(name string, b []byte) ([]byte, bool) {
				if name == layer {
					b = bytes.Clone(b)
					b[len(b)/2] ^= 0xff
				}
				return b, true
			}),
			ErrCorrupt, "content hashes to",
		},
		{
			"config with a wrong hash",
			mutate(t, good, func(name string, b []byte) ([]byte, bool) {
				if name == config {
					b = bytes.Replace(b, []byte("amd64"), []byte("arm64"), 1)
				}
				return b, true
			}),
			ErrCorrupt, "content hashes to",
		},
		{
			"layer missing",
			mutate(t, good, func(name string, b []byte) ([]byte, bool) { return b, name != layer }),
			ErrCorrupt, "is missing",
		},
		{
			"layer of the wrong size",
			mutate(t, good, func(name string, b []byte) ([]byte, bool) {
				if name == layer {
					b = append(bytes.Clone(b), 0)
				}
				return b, true
			}),
			ErrCorrupt, "descriptor says",
		},
		{
			"index.json not JSON",
			mutate(t, good, func(name string, b []byte) ([]byte, bool) {
				if name == "index.json" {
					b = []byte("{not json")
				}
				return b, true
			}),
			ErrCorrupt, "index.json",
		},
		{
			"unknown layout version",
			mutate(t, good, func(name string, b []byte) ([]byte, bool) {
				if name == "oci-layout" {
					b = []byte(`{"imageLayoutVersion":"9.9.9"}`)
				}
				return b, true
			}),
			ErrUnsupported, "9.9.9",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := inspectBytes(tt.archive)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Inspect error = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not say %q", err, tt.wantMsg)
			}
		})
	}
}

func mustLayerDigest(t *testing.T, archive []byte) string {
	t.Helper()
	for _, f := range readTar(t, archive) {
		if strings.HasPrefix(f.name, "blobs/sha256/") && len(f.data) > 2 && f.data[0] == 0x1f && f.data[1] == 0x8b {
			return "sha256:" + strings.TrimPrefix(f.name, "blobs/sha256/")
		}
	}
	t.Fatal("no gzip layer in archive")
	return ""
}

func TestInspectForeignLayouts(t *testing.T) {
	tests := []struct {
		name     string
		make     func(t *testing.T) []byte
		wantArch string // Entrypoint of the chosen image is "/" + arch
		wantRef  string
		wantErr  error
		wantMsg  string
	}{
		{
			name: "multi-platform index picks linux/amd64",
			make: func(t *testing.T) []byte {
				var b layoutBuilder
				arm := b.image(t, "linux", "arm64", "arm", MediaTypeManifest, MediaTypeLayerGzip)
				amd := b.image(t, "linux", "amd64", "amd", MediaTypeManifest, MediaTypeLayerGzip)
				amd.Annotations = map[string]string{AnnotationRefName: "1.2"}
				return b.archive(t, index{SchemaVersion: 2, MediaType: MediaTypeIndex, Manifests: []descriptor{arm, amd}}, "")
			},
			wantArch: "amd64",
			wantRef:  "1.2",
		},
		{
			name: "nested index as buildx writes it, ./ names",
			make: func(t *testing.T) []byte {
				var b layoutBuilder
				arm := b.image(t, "linux", "arm64", "arm", MediaTypeManifest, MediaTypeLayerGzip)
				amd := b.image(t, "linux", "amd64", "amd", MediaTypeManifest, MediaTypeLayerGzip)
				inner := b.json(MediaTypeIndex, index{SchemaVersion: 2, MediaType: MediaTypeIndex, Manifests: []descriptor{arm, amd}})
				inner.Annotations = map[string]string{AnnotationRefName: "nested"}
				return b.archive(t, index{SchemaVersion: 2, Manifests: []descriptor{inner}}, "./")
			},
			wantArch: "amd64",
			wantRef:  "nested",
		},
		{
			name: "docker media types",
			make: func(t *testing.T) []byte {
				var b layoutBuilder
				m := b.image(t, "linux", "amd64", "docker", dockerManifest, dockerLayerGzip)
				return b.archive(t, index{SchemaVersion: 2, Manifests: []descriptor{m}}, "")
			},
			wantArch: "amd64",
		},
		{
			name: "only arm64",
			make: func(t *testing.T) []byte {
				var b layoutBuilder
				arm := b.image(t, "linux", "arm64", "arm", MediaTypeManifest, MediaTypeLayerGzip)
				return b.archive(t, index{SchemaVersion: 2, Manifests: []descriptor{arm}}, "")
			},
			wantErr: ErrUnsupported,
			wantMsg: "found [linux/arm64]",
		},
		{
			name: "no platform in index, arm64 config",
			make: func(t *testing.T) []byte {
				var b layoutBuilder
				arm := b.image(t, "linux", "arm64", "arm", MediaTypeManifest, MediaTypeLayerGzip)
				arm.Platform = nil
				return b.archive(t, index{SchemaVersion: 2, Manifests: []descriptor{arm}}, "")
			},
			wantErr: ErrUnsupported,
		},
		{
			name: "diff_id does not match the layer",
			make: func(t *testing.T) []byte {
				var b layoutBuilder
				good := b.image(t, "linux", "amd64", "one", MediaTypeManifest, MediaTypeLayerGzip)
				// A second image whose config names the first image's
				// diff_id but whose manifest carries another layer.
				var other layoutBuilder
				o := other.image(t, "linux", "amd64", "two", MediaTypeManifest, MediaTypeLayerGzip)
				var m manifest
				var cfgFromGood imageConfigFile
				decodeBlobs(t, b.files, good, &m, &cfgFromGood)
				var mo manifest
				var cfgOther imageConfigFile
				decodeBlobs(t, other.files, o, &mo, &cfgOther)
				cfgOther.RootFS.DiffIDs = cfgFromGood.RootFS.DiffIDs
				var c layoutBuilder
				c.files = other.files
				cd := c.json(MediaTypeConfig, cfgOther)
				bad := c.json(MediaTypeManifest, manifest{SchemaVersion: 2, MediaType: MediaTypeManifest, Config: cd, Layers: mo.Layers})
				return c.archive(t, index{SchemaVersion: 2, Manifests: []descriptor{bad}}, "")
			},
			wantErr: ErrCorrupt,
			wantMsg: "config diff_id is",
		},
		{
			name: "sha512 digest",
			make: func(t *testing.T) []byte {
				var b layoutBuilder
				m := b.image(t, "linux", "amd64", "x", MediaTypeManifest, MediaTypeLayerGzip)
				m.Digest = "sha512:" + strings.Repeat("ab", 64)
				return b.archive(t, index{SchemaVersion: 2, Manifests: []descriptor{m}}, "")
			},
			wantErr: ErrUnsupported,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, err := inspectBytes(tt.make(t))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Inspect error = %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("error %q does not say %q", err, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Inspect: %v", err)
			}
			if img.Architecture != tt.wantArch || img.Config.Entrypoint[0] != "/"+tt.wantArch {
				t.Errorf("picked %s (entrypoint %v), want %s", img.Architecture, img.Config.Entrypoint, tt.wantArch)
			}
			if img.RefName != tt.wantRef {
				t.Errorf("RefName = %q, want %q", img.RefName, tt.wantRef)
			}
		})
	}
}

// decodeBlobs decodes the manifest md and its config from a builder's files.
func decodeBlobs(t *testing.T, files []tarFile, md descriptor, m *manifest, c *imageConfigFile) {
	t.Helper()
	a := &archive{files: map[string]span{}}
	var all []byte
	for _, f := range files {
		a.files[f.name] = span{off: int64(len(all)), size: int64(len(f.data))}
		all = append(all, f.data...)
	}
	a.r = bytes.NewReader(all)
	if err := a.blobJSON(md, m); err != nil {
		t.Fatal(err)
	}
	if err := a.blobJSON(m.Config, c); err != nil {
		t.Fatal(err)
	}
}

func TestInspectFile(t *testing.T) {
	good, img := built(t)
	p := filepath.Join(t.TempDir(), "fn.tar")
	if err := os.WriteFile(p, good, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := InspectFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if got.ManifestDigest != img.ManifestDigest {
		t.Errorf("InspectFile digest %s, want %s", got.ManifestDigest, img.ManifestDigest)
	}
	if _, err := InspectFile(p + ".missing"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("InspectFile of a missing file: %v", err)
	}
}
