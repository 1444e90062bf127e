package ociarchive

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"

	"github.com/amberfn/amber/api"
)

// MaxManifestBytes bounds an index, a manifest or an image config: the
// small JSON documents a reader holds in memory whole. Anything larger is
// refused before it is read. It is api.MaxManifestBytes, the one limit
// amber deploy, uploads and registry pulls share.
const MaxManifestBytes int64 = api.MaxManifestBytes

// DefaultMaxUnpackedBytes is the default bound on the bytes an image's
// layers unpack to, all layers together.
const DefaultMaxUnpackedBytes int64 = 4 << 30

// ErrImageTooLarge: an image's layers unpack to more bytes than the limit
// allows, or one of its JSON documents is over MaxManifestBytes.
var ErrImageTooLarge = errors.New("ociarchive: image too large")

// UnpackBudget counts what an image's layers unpack to against Limit, one
// layer at a time, while their uncompressed tar streams are read: a layer
// that passes the limit is stopped there, never read to its end.
//
// What a layer unpacks to is the larger of its uncompressed stream's length
// (trailing bytes after the end-of-archive marker included) and the sum of
// its entries' sizes (a sparse entry counts its full size, as an unpacker
// writes it out).
type UnpackBudget struct {
	Limit int64 // bytes; <= 0 means no limit
	Used  int64 // bytes counted so far, over every layer added
}

// Add reads the uncompressed tar stream r of the layer named digest to its
// end (entry contents are skipped, not examined) and counts it. Past the
// limit it stops and returns an error naming the layer and the limit that
// wraps ErrImageTooLarge; a stream that is not a tar wraps ErrCorrupt.
func (b *UnpackBudget) Add(digest string, r io.Reader) error {
	cr := &countReader{r: r, budget: b}
	layerStart := b.Used
	var entries int64
	tr := tar.NewReader(cr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if errors.Is(err, tar.ErrInsecurePath) {
			// A ../ or absolute name (under GODEBUG=tarinsecurepath=0):
			// the unpacker's business; counted like any other entry.
			err = nil
		}
		if err != nil {
			if cr.over {
				return b.tooLarge(digest)
			}
			return fmt.Errorf("ociarchive: layer %s: not a tar stream (%v): %w", digest, err, ErrCorrupt)
		}
		if hdr.Size > 0 {
			entries += hdr.Size
		}
		// The entries' sizes can pass the limit long before the stream
		// does (a sparse or a lying entry): checked at every header.
		if b.Limit > 0 && layerStart+entries > b.Limit {
			b.Used = layerStart + entries
			return b.tooLarge(digest)
		}
	}
	// What follows the end-of-archive marker is read too (an unpacker
	// hashes it for the diff_id), and counted.
	if _, err := io.Copy(io.Discard, cr); err != nil {
		if cr.over {
			return b.tooLarge(digest)
		}
		return fmt.Errorf("ociarchive: layer %s: %v: %w", digest, err, ErrCorrupt)
	}
	if layerStart+entries > b.Used {
		b.Used = layerStart + entries
	}
	return nil
}

func (b *UnpackBudget) tooLarge(digest string) error {
	return fmt.Errorf("ociarchive: layer %s unpacks past the image's limit of %d bytes (%d bytes counted when it was stopped): %w",
		digest, b.Limit, b.Used, ErrImageTooLarge)
}

// errOverBudget is what countReader returns once the budget is spent.
var errOverBudget = errors.New("over the unpacked-size limit")

// countReader adds every byte read to its budget's Used and fails once
// that passes the limit.
type countReader struct {
	r      io.Reader
	budget *UnpackBudget
	over   bool
}

func (c *countReader) Read(p []byte) (int, error) {
	if c.over {
		return 0, errOverBudget
	}
	n, err := c.r.Read(p)
	c.budget.Used += int64(n)
	if c.budget.Limit > 0 && c.budget.Used > c.budget.Limit {
		c.over = true
		return n, errOverBudget
	}
	return n, err
}
