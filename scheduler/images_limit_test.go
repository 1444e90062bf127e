package scheduler

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/amberfn/amber/api"
)

// archiveWithManifest is an OCI archive whose one manifest is manifest.
func archiveWithManifest(t *testing.T, manifest []byte) []byte {
	t.Helper()
	sum := sha256.Sum256(manifest)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []map[string]any{{
		"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": len(manifest),
	}}})
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", idx},
		{"blobs/sha256/" + hex.EncodeToString(sum[:]), manifest},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(f.data)
	}
	tw.Close()
	return buf.Bytes()
}

// TestUploadRefusesLargeManifest: the server holds every upload to
// api.MaxManifestBytes, the limit amber deploy checks, whoever sends it.
func TestUploadRefusesLargeManifest(t *testing.T) {
	manifest := func(pad int) []byte {
		b, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
			"config":      map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + strings.Repeat("0", 64), "size": 2},
			"annotations": map[string]string{"pad": strings.Repeat("x", pad)}})
		return b
	}
	ts := newTestScheduler(t)
	for _, tc := range []struct {
		name   string
		size   int
		status int
	}{
		{"6 MB", 6 << 20, http.StatusRequestEntityTooLarge},
		{"one byte over", api.MaxManifestBytes + 1 - len(manifest(0)), http.StatusRequestEntityTooLarge},
		// At the limit the manifest passes; this archive has no config
		// blob, which is what is refused then.
		{"at the limit", api.MaxManifestBytes - len(manifest(0)), http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ar := archiveWithManifest(t, manifest(tc.size))
			resp := ts.do(t, "POST", "/v1/images", bytes.NewReader(ar))
			e := errorBody(t, resp, tc.status)
			if tc.status == http.StatusBadRequest {
				if strings.Contains(e.Message, "limit") || !strings.Contains(e.Message, "missing") {
					t.Fatalf("a manifest at the limit was refused for its size, or for no named reason: %s", e.Message)
				}
				return
			}
			if !strings.Contains(e.Message, fmt.Sprintf("%d-byte limit", api.MaxManifestBytes)) || !strings.Contains(e.Message, "manifest") {
				t.Fatalf("refusal does not name the manifest and the limit: %s", e.Message)
			}
		})
	}
}
