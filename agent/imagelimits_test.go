package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/api/ociarchive"
)

// archives is an ImageSource serving archives from memory.
type archives map[string][]byte

func (a archives) FetchImage(_ context.Context, digest string) (io.ReadCloser, error) {
	b, ok := a[digest]
	if !ok {
		return nil, api.ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func digestOf(b []byte) string { s := sha256.Sum256(b); return "sha256:" + hex.EncodeToString(s[:]) }

// buildArchive is ociarchive.Build of a bootstrap and a sparse file of
// zeros bytes.
func buildArchive(t *testing.T, zeros int64) []byte {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bootstrap"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if zeros > 0 {
		f, err := os.Create(filepath.Join(dir, "zeros"))
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(zeros)
		f.Close()
	}
	var buf bytes.Buffer
	if _, err := ociarchive.Build(dir, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestSpoolArchive: an archive from the scheduler is spooled, its digest
// checked and its layers counted before containerd sees it; a refused one
// leaves nothing in the spool folder.
func TestSpoolArchive(t *testing.T) {
	const limit = 8 << 20
	good := buildArchive(t, 1<<20)
	bomb := buildArchive(t, 32<<20)
	src := archives{digestOf(good): good, digestOf(bomb): bomb, "sha256:" + strings.Repeat("0", 64): good}
	c := &Containerd{stateDir: t.TempDir(), images: src, maxUnpacked: limit, log: slog.New(slog.DiscardHandler)}
	tests := []struct {
		name    string
		digest  string
		wantErr error
		want    []string
	}{
		{"within the limit", digestOf(good), nil, nil},
		{"past the limit", digestOf(bomb), ociarchive.ErrImageTooLarge, []string{digestOf(bomb), "8388608"}},
		{"wrong digest", "sha256:" + strings.Repeat("0", 64), api.ErrInvalid, []string{"archive digest is " + digestOf(good)}},
		{"not there", "sha256:" + strings.Repeat("1", 64), api.ErrNotFound, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, img, err := c.spoolArchive(t.Context(), tt.digest)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				defer os.Remove(f.Name())
				defer f.Close()
				if img.UnpackedSize < 1<<20 {
					t.Errorf("UnpackedSize %d, want at least 1 MiB", img.UnpackedSize)
				}
				if b, _ := io.ReadAll(f); !bytes.Equal(b, good) {
					t.Errorf("spooled file is not the archive")
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("spoolArchive = %v, want %v", err, tt.wantErr)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			if ents, _ := os.ReadDir(c.spoolDir()); len(ents) != 0 {
				t.Errorf("spool folder holds %d files after a refusal", len(ents))
			}
		})
	}
}
