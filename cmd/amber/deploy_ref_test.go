package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestIsImageRef(t *testing.T) {
	dir := t.TempDir()
	archive := filepath.Join(dir, "fn.tar")
	os.WriteFile(archive, []byte("x"), 0o600)
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{archive, false},               // an existing file is an archive
		{"missing.tar", false},         // so is anything ending in .tar
		{"127.0.0.1:5000/fn:v1", true}, // a registry reference
		{"busybox", true},              // docker.io/library/busybox:latest
		{"Not A Reference", false},     // neither: the archive path reports the error
		{"127.0.0.1:5000/fn@sha256:00", false},
	} {
		if got := isImageRef(tc.in); got != tc.want {
			t.Errorf("isImageRef(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
