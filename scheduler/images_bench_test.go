package scheduler

import (
	"bytes"
	"crypto/rand"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/amberfn/amber/api/ociarchive"
)

// bench100MB is an OCI archive of about 100 MB (an incompressible layer).
func bench100MB(b *testing.B) []byte {
	b.Helper()
	dir := b.TempDir()
	data := make([]byte, 100<<20)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(dir, "bootstrap"), data, 0o755); err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := ociarchive.Build(dir, &buf); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

func benchScheduler(b *testing.B) (*Scheduler, *httptest.Server) {
	b.Helper()
	s, err := New(WithDataDir(b.TempDir()), WithToken("t"), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	b.Cleanup(func() { srv.Close(); s.Close() })
	return s, srv
}

func benchDo(b *testing.B, method, url string, body io.Reader) int64 {
	req, _ := http.NewRequest(method, url, body)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	n, _ := io.Copy(io.Discard, resp.Body)
	if resp.StatusCode/100 != 2 {
		b.Fatalf("%s %s: %d", method, url, resp.StatusCode)
	}
	return n
}

// BenchmarkImage100MB: upload of a 100 MB archive (each time to a fresh
// scheduler, so it is stored), and its download through HTTP, from the
// object store (cache emptied first) and from the cache.
//
//	go test -run '^$' -bench Image100MB -benchtime 5x ./scheduler/
func BenchmarkImage100MB(b *testing.B) {
	archive := bench100MB(b)
	b.Run("upload", func(b *testing.B) {
		b.SetBytes(int64(len(archive)))
		for b.Loop() {
			b.StopTimer()
			_, srv := benchScheduler(b)
			b.StartTimer()
			benchDo(b, "POST", srv.URL+"/v1/images", bytes.NewReader(archive))
		}
	})
	s, srv := benchScheduler(b)
	digest, _, err := s.images.put(bytes.NewReader(archive))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("download-objectstore", func(b *testing.B) {
		b.SetBytes(int64(len(archive)))
		for b.Loop() {
			b.StopTimer()
			// The previous download fills the cache after its body is out.
			for _, err := os.Stat(s.images.path(digest)); err != nil; _, err = os.Stat(s.images.path(digest)) {
				time.Sleep(10 * time.Millisecond)
			}
			if err := os.Remove(s.images.path(digest)); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			benchDo(b, "GET", srv.URL+"/v1/images/"+digest, nil)
		}
	})
	b.Run("download-cache", func(b *testing.B) {
		b.SetBytes(int64(len(archive)))
		for b.Loop() {
			benchDo(b, "GET", srv.URL+"/v1/images/"+digest, nil)
		}
	})
}
