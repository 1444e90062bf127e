package remote

import (
	"io"
	"strings"

	"github.com/containerd/containerd/archive/compression"
)

// DecompressLayer is an ociarchive.Decompressor for the layer compressions
// the standard library lacks (zstd), through containerd's own
// decompression, so that what the scheduler and the agent count is what
// containerd will unpack.
func DecompressLayer(mediaType string, r io.Reader) (io.ReadCloser, bool, error) {
	if !strings.HasSuffix(mediaType, "+zstd") && !strings.HasSuffix(mediaType, ".zstd") {
		return nil, false, nil
	}
	ds, err := compression.DecompressStream(r)
	if err != nil {
		return nil, true, err
	}
	return ds, true, nil
}
