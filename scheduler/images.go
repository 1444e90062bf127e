package scheduler

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/api/ociarchive"
)

// imageStore keeps OCI image archives as DIR/sha256/<hex>.tar, named by the
// sha256 of the whole tar. Uploads stream to DIR/tmp and are renamed into
// place once hashed and checked, so a reader never sees a partial archive.
type imageStore struct {
	dir      string
	maxBytes int64
}

func openImageStore(dir string, maxBytes int64) (*imageStore, error) {
	for _, d := range []string{filepath.Join(dir, "sha256"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	// Leftovers of uploads interrupted by a crash.
	if ents, err := os.ReadDir(filepath.Join(dir, "tmp")); err == nil {
		for _, e := range ents {
			_ = os.Remove(filepath.Join(dir, "tmp", e.Name()))
		}
	}
	return &imageStore{dir: dir, maxBytes: maxBytes}, nil
}

// path returns where the archive with digest lives; digest must be valid.
func (st *imageStore) path(digest string) string {
	return filepath.Join(st.dir, "sha256", strings.TrimPrefix(digest, "sha256:")+".tar")
}

// has reports whether the store holds digest.
func (st *imageStore) has(digest string) bool {
	if api.ValidateDigest("image", digest) != nil {
		return false
	}
	fi, err := os.Stat(st.path(digest))
	return err == nil && fi.Mode().IsRegular()
}

// open opens the archive with digest.
func (st *imageStore) open(digest string) (*os.File, error) {
	if err := api.ValidateDigest("digest", digest); err != nil {
		return nil, err
	}
	f, err := os.Open(st.path(digest))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("image %s %w", digest, api.ErrNotFound)
	}
	return f, err
}

// errTooBig is returned by the limited reader when an upload passes the cap.
type errTooBig struct{ max int64 }

func (e errTooBig) Error() string { return fmt.Sprintf("image archive is over %d bytes", e.max) }
func (e errTooBig) Unwrap() error { return api.ErrTooLarge }

// capReader fails with errTooBig once more than max bytes were read.
type capReader struct {
	r   io.Reader
	n   int64
	max int64
}

func (c *capReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.max {
		return n, errTooBig{c.max}
	}
	return n, err
}

// put streams an archive from r into the store and returns its digest and
// size. It is safe to call concurrently, also for the same archive.
func (st *imageStore) put(r io.Reader) (digest string, size int64, err error) {
	tmp, err := os.CreateTemp(filepath.Join(st.dir, "tmp"), "upload-*.tar")
	if err != nil {
		return "", 0, err
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	size, err = io.Copy(io.MultiWriter(tmp, h), &capReader{r: r, max: st.maxBytes})
	if err != nil {
		if errors.Is(err, api.ErrTooLarge) {
			return "", 0, err
		}
		return "", 0, fmt.Errorf("receive image archive: %w", err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return "", 0, err
	}
	if err := checkOCIArchive(tmp); err != nil {
		return "", 0, err
	}
	// The limit amber deploy checks: an archive from any other client
	// is held to it here.
	if err := ociarchive.CheckDocuments(tmp, size); err != nil {
		if errors.Is(err, api.ErrTooLarge) {
			return "", 0, fmt.Errorf("image archive: %w", err)
		}
		return "", 0, api.Invalid("image", "not an OCI image archive: %v", err)
	}
	if err := tmp.Sync(); err != nil {
		return "", 0, err
	}
	if err := tmp.Close(); err != nil {
		return "", 0, err
	}
	digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	if err := os.Rename(tmp.Name(), st.path(digest)); err != nil {
		return "", 0, err
	}
	tmp = nil
	return digest, size, nil
}

// checkOCIArchive checks that r is a tar holding the OCI image layout's
// index.json and oci-layout at its root.
func checkOCIArchive(r io.Reader) error {
	bad := func(format string, args ...any) error {
		return api.Invalid("image", "not an OCI image archive: "+format, args...)
	}
	tr := tar.NewReader(r)
	var index, layout bool
	entries := 0
	for !index || !layout {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return bad("%v", err)
		}
		entries++
		name := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		switch name {
		case "index.json":
			index = true
		case "oci-layout":
			layout = true
		}
	}
	switch {
	case entries == 0:
		return bad("empty tar")
	case !index:
		return bad("no index.json at the root")
	case !layout:
		return bad("no oci-layout at the root")
	}
	return nil
}
