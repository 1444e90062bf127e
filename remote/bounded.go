package remote

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/containerd/containerd/remotes"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrBlobTooLong marks a registry blob longer than its descriptor says.
var ErrBlobTooLong = errors.New("blob longer than its descriptor")

// boundedResolver hands out fetchers whose blobs end where their
// descriptors say: a registry that sends more is cut off there, so a pull
// never writes more than the manifest promised.
type boundedResolver struct{ remotes.Resolver }

func (r boundedResolver) Fetcher(ctx context.Context, ref string) (remotes.Fetcher, error) {
	f, err := r.Resolver.Fetcher(ctx, ref)
	if err != nil {
		return nil, err
	}
	return boundedFetcher{f}, nil
}

type boundedFetcher struct{ remotes.Fetcher }

func (f boundedFetcher) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	rc, err := f.Fetcher.Fetch(ctx, desc)
	if err != nil {
		return nil, err
	}
	return &boundedBlob{rc: rc, desc: desc, left: desc.Size}, nil
}

// boundedBlob reads desc.Size bytes of rc and fails if there is more.
type boundedBlob struct {
	rc   io.ReadCloser
	desc ocispec.Descriptor
	left int64
}

func (b *boundedBlob) Read(p []byte) (int, error) {
	if b.left <= 0 {
		var one [1]byte
		n, err := io.ReadFull(b.rc, one[:])
		if n > 0 {
			return 0, fmt.Errorf("blob %s (%s): the registry sent more than the %d bytes its descriptor says: %w",
				b.desc.Digest, b.desc.MediaType, b.desc.Size, ErrBlobTooLong)
		}
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if err == io.EOF && b.left > 0 {
		return n, err // short: content.Copy reports it
	}
	if err == io.EOF {
		err = nil // checked for more on the next read
	}
	return n, err
}

func (b *boundedBlob) Close() error { return b.rc.Close() }
