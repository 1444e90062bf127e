package remote

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

type fakeFetcher struct{ body string }

func (f fakeFetcher) Fetch(context.Context, ocispec.Descriptor) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader(f.body)), nil
}

func TestBoundedFetcher(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		size    int64
		want    string
		wantErr error
	}{
		{"exact", "hello", 5, "hello", nil},
		{"one byte more", "hello!", 5, "hello", ErrBlobTooLong},
		{"much more", strings.Repeat("x", 1<<20), 10, strings.Repeat("x", 10), ErrBlobTooLong},
		{"shorter", "hel", 5, "hel", nil}, // content.Copy reports a short blob
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString(tt.body), Size: tt.size}
			rc, err := boundedFetcher{fakeFetcher{tt.body}}.Fetch(t.Context(), desc)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if string(got) != tt.want {
				t.Errorf("read %d bytes, want %d", len(got), len(tt.want))
			}
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("ReadAll error %v, want %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), desc.Digest.String()) {
				t.Errorf("error %q does not name the blob", err)
			}
		})
	}
}
