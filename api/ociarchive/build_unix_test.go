//go:build unix

package ociarchive

import (
	"bytes"
	"errors"
	"path/filepath"
	"syscall"
	"testing"
)

func TestBuildRejectsSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "bootstrap", 0o755)
	if err := syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	_, err := Build(dir, &bytes.Buffer{})
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Build with a fifo: %v, want ErrUnsupported", err)
	}
}
