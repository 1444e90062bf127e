package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/archive/compression"
	"github.com/containerd/containerd/images"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/api/ociarchive"
	"github.com/amberfn/amber/remote"
)

// Image limits. Before containerd unpacks an image, the agent reads its
// layers' uncompressed tar streams and counts what they unpack to
// (ociarchive.UnpackBudget), stopping at the limit: an image past it is
// refused, naming the image, the layer and the limit, before anything is
// written to a snapshot. Archives from the scheduler are spooled to the
// agent's state folder and verified (ociarchive.Inspect: every blob the
// size and digest its descriptor gives, manifests and configs within
// ociarchive.MaxManifestBytes) before containerd reads them; registry
// blobs are bounded by their descriptors as they are fetched
// (remote.NewResolver).

// ContainerdOption configures NewContainerd.
type ContainerdOption func(*Containerd)

// WithMaxUnpackedBytes bounds what one image's layers unpack to, all
// together (default ociarchive.DefaultMaxUnpackedBytes, 4 GiB).
func WithMaxUnpackedBytes(n int64) ContainerdOption {
	return func(c *Containerd) { c.maxUnpacked = n }
}

// spoolDir holds archives being fetched from the scheduler.
func (c *Containerd) spoolDir() string { return filepath.Join(c.stateDir, "images-tmp") }

// spoolArchive copies the archive with digest dgst from the scheduler to
// a file in the spool folder, checks its digest and verifies it within
// the agent's limits. The caller closes and removes the file.
func (c *Containerd) spoolArchive(ctx context.Context, dgst string) (*os.File, *ociarchive.Image, error) {
	rc, err := c.images.FetchImage(ctx, dgst)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch image %s: %w", dgst, err)
	}
	defer rc.Close()
	if err := os.MkdirAll(c.spoolDir(), 0o700); err != nil {
		return nil, nil, err
	}
	f, err := os.CreateTemp(c.spoolDir(), "archive-*.tar")
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (*os.File, *ociarchive.Image, error) {
		f.Close()
		os.Remove(f.Name())
		return nil, nil, err
	}
	h := sha256.New()
	size, err := io.Copy(io.MultiWriter(f, h), rc)
	if err != nil {
		return fail(fmt.Errorf("fetch image %s: %w", dgst, err))
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != dgst {
		return fail(fmt.Errorf("image %s: archive digest is %s: %w", dgst, got, api.ErrInvalid))
	}
	img, err := ociarchive.Inspect(f, size, ociarchive.WithMaxUnpackedBytes(c.maxUnpacked),
		ociarchive.WithDecompressor(remote.DecompressLayer))
	if err != nil {
		return fail(fmt.Errorf("image %s refused: %w", dgst, err))
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fail(err)
	}
	return f, img, nil
}

// checkUnpacked counts what img's layers unpack to from containerd's
// content store, after the counted bytes already in budget; layers in
// skip were counted before. name is the image as errors name it.
func (c *Containerd) checkUnpacked(ctx context.Context, name string, img containerd.Image, budget *ociarchive.UnpackBudget, skip map[string]bool) error {
	cs := c.client.ContentStore()
	m, err := images.Manifest(ctx, cs, img.Target(), img.Platform())
	if err != nil {
		return fmt.Errorf("image %s: manifest: %w", name, err)
	}
	for _, l := range m.Layers {
		if skip[l.Digest.String()] {
			continue
		}
		if err := countLayer(l.Digest.String(), func() (io.ReadCloser, error) {
			ra, err := cs.ReaderAt(ctx, l)
			if err != nil {
				return nil, err
			}
			return struct {
				io.Reader
				io.Closer
			}{io.NewSectionReader(ra, 0, ra.Size()), ra}, nil
		}, budget); err != nil {
			return fmt.Errorf("image %s refused: %w", name, err)
		}
	}
	return nil
}

// countLayer adds the layer open returns, decompressed, to budget.
func countLayer(digest string, open func() (io.ReadCloser, error), budget *ociarchive.UnpackBudget) error {
	rc, err := open()
	if err != nil {
		return fmt.Errorf("layer %s: %w", digest, err)
	}
	defer rc.Close()
	ds, err := compression.DecompressStream(rc)
	if err != nil {
		return fmt.Errorf("layer %s: %w", digest, err)
	}
	defer ds.Close()
	return budget.Add(digest, ds)
}

// unpack checks that img (named name) unpacks within the limit and then
// unpacks it. An image refused here is deleted from containerd, so the
// next launch fetches and checks it again rather than unpacking it
// unchecked.
func (c *Containerd) unpack(ctx context.Context, name string, img containerd.Image, budget *ociarchive.UnpackBudget, skip map[string]bool) error {
	if budget == nil {
		budget = &ociarchive.UnpackBudget{Limit: c.maxUnpacked}
	}
	if err := c.checkUnpacked(ctx, name, img, budget, skip); err != nil {
		if derr := c.client.ImageService().Delete(ctx, img.Name()); derr != nil {
			c.log.Warn("delete refused image", "image", name, "err", derr)
		}
		c.log.Warn("image refused", "image", name, "limit", c.maxUnpacked, "err", err.Error())
		return err
	}
	if err := img.Unpack(ctx, snapshotter); err != nil {
		return fmt.Errorf("unpack image %s: %w", name, err)
	}
	return nil
}
