package ociarchive

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/amberfn/amber/api"
)

// sixMB pads a document past api.MaxManifestBytes, as in the report of a
// 6 MB manifest that amber deploy refused and the server took.
var sixMB = strings.Repeat("x", 6<<20)

func TestDocumentLimit(t *testing.T) {
	tests := []struct {
		name    string
		make    func(t *testing.T) []byte
		inspect bool // Inspect refuses it as too large as well
	}{
		{"6 MB manifest", func(t *testing.T) []byte {
			var b layoutBuilder
			good := b.image(t, "linux", "amd64", "x", MediaTypeManifest, MediaTypeLayerGzip)
			var m map[string]any
			decodeJSONBlob(t, b.files, good.Digest, &m)
			m["annotations"] = map[string]string{"pad": sixMB}
			big := b.json(MediaTypeManifest, m)
			return b.archive(t, index{SchemaVersion: 2, Manifests: []descriptor{big}}, "")
		}, true},
		{"6 MB image config", func(t *testing.T) []byte {
			var b layoutBuilder
			cfg := b.json(MediaTypeConfig, imageConfigFile{Architecture: "amd64", OS: "linux", Config: ImageConfig{Env: []string{"PAD=" + sixMB}}})
			m := b.json(MediaTypeManifest, manifest{SchemaVersion: 2, MediaType: MediaTypeManifest, Config: cfg})
			return b.archive(t, index{SchemaVersion: 2, Manifests: []descriptor{m}}, "")
		}, true},
		{"6 MB index.json", func(t *testing.T) []byte {
			var b layoutBuilder
			m := b.image(t, "linux", "amd64", "x", MediaTypeManifest, MediaTypeLayerGzip)
			m.Annotations = map[string]string{"pad": sixMB}
			return b.archive(t, index{SchemaVersion: 2, Manifests: []descriptor{m}}, "")
		}, true},
		{"6 MB nested index", func(t *testing.T) []byte {
			var b layoutBuilder
			m := b.image(t, "linux", "amd64", "x", MediaTypeManifest, MediaTypeLayerGzip)
			m.Annotations = map[string]string{"pad": sixMB}
			inner := b.json(MediaTypeIndex, index{SchemaVersion: 2, MediaType: MediaTypeIndex, Manifests: []descriptor{m}})
			return b.archive(t, index{SchemaVersion: 2, Manifests: []descriptor{inner}}, "")
		}, true},
		{"a missing manifest declared at 6 MB", func(t *testing.T) []byte {
			var b layoutBuilder
			d := descriptor{MediaType: MediaTypeManifest, Digest: digestOf([]byte("absent")), Size: 6 << 20}
			return b.archive(t, index{SchemaVersion: 2, Manifests: []descriptor{d}}, "")
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ar := tc.make(t)
			err := CheckDocuments(bytes.NewReader(ar), int64(len(ar)))
			if !errors.Is(err, ErrTooLarge) || !errors.Is(err, api.ErrTooLarge) || !strings.Contains(err.Error(), "4194304-byte limit") {
				t.Errorf("CheckDocuments: %v, want ErrTooLarge naming the limit", err)
			}
			if !tc.inspect {
				return
			}
			if _, err := inspectBytes(ar); !errors.Is(err, ErrTooLarge) {
				t.Errorf("Inspect: %v, want ErrTooLarge", err)
			}
		})
	}
	t.Run("a built image passes", func(t *testing.T) {
		ar, _ := built(t)
		if err := CheckDocuments(bytes.NewReader(ar), int64(len(ar))); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("an index without manifests passes", func(t *testing.T) {
		var b layoutBuilder
		ar := b.archive(t, index{SchemaVersion: 2}, "")
		if err := CheckDocuments(bytes.NewReader(ar), int64(len(ar))); err != nil {
			t.Fatal(err)
		}
	})
}

func decodeJSONBlob(t *testing.T, files []tarFile, digest string, v any) {
	t.Helper()
	for _, f := range files {
		if f.name == blobPath(digest) {
			if err := json.Unmarshal(f.data, v); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no blob %s", digest)
}
