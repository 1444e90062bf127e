package scheduler_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/api/ociarchive"
	"github.com/amberfn/amber/scheduler"
	"github.com/amberfn/amber/testenv"
)

// TestImagesOnExternalNATS: on a cluster of Debian's nats-server (2.9,
// three replicas, the default 1 MiB max_payload) an image uploaded through
// one scheduler downloads through another, byte for byte.
func TestImagesOnExternalNATS(t *testing.T) {
	c := testenv.StartNATSCluster(t, 3)
	start := func() *httptest.Server {
		s, err := scheduler.New(scheduler.WithDataDir(t.TempDir()), scheduler.WithToken("api"), scheduler.WithNATS(scheduler.NATSConfig{URL: c.URL(), StartTimeout: 30 * time.Second}))
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(s.Handler())
		t.Cleanup(func() { srv.Close(); s.Close() })
		return srv
	}
	a, b := start(), start()
	dir := t.TempDir()
	big := make([]byte, 5<<20) // incompressible: several chunks
	rand.Read(big)
	if err := os.WriteFile(filepath.Join(dir, "bootstrap"), big, 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := ociarchive.Build(dir, &buf); err != nil {
		t.Fatal(err)
	}
	ar := buf.Bytes()
	sum := sha256.Sum256(ar)
	want := "sha256:" + hex.EncodeToString(sum[:])
	d, err := api.NewClient(a.URL, api.WithToken("api")).UploadImage(context.Background(), bytes.NewReader(ar))
	if err != nil || d != want {
		t.Fatalf("upload %s %v", d, err)
	}
	// A stream read from a follower can be cut short while the cluster
	// settles (seen once in CI): the body then stops before its
	// Content-Length, and agents pull again, as this does.
	var got []byte
	for attempt := 1; ; attempt++ {
		rc, err := api.NewClient(b.URL, api.WithToken("api")).FetchImage(context.Background(), d)
		if err != nil {
			t.Fatal(err)
		}
		got, err = io.ReadAll(rc)
		rc.Close()
		if err == nil || attempt == 3 {
			if err != nil || !bytes.Equal(got, ar) {
				t.Fatalf("download %d bytes, %v", len(got), err)
			}
			break
		}
		t.Logf("download attempt %d cut short after %d bytes: %v", attempt, len(got), err)
	}
}
