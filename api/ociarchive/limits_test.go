package ociarchive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// rawTar packs files (name → size, content zeros) into an uncompressed
// tar; trailing bytes follow the end-of-archive marker.
func rawTar(t *testing.T, files []int64, trailing int) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i, size := range files {
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("f%d", i), Mode: 0o644, Size: size, Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(tw, zeros{}, size); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	buf.Write(make([]byte, trailing))
	return buf.Bytes()
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// lyingHeader is a tar holding only the header of a file of size bytes:
// what a sparse entry or a truncated bomb looks like before its data.
func lyingHeader(t *testing.T, size int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "huge", Mode: 0o644, Size: size, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes() // no data, no end marker
}

// endlessTar is a tar stream of 1 MiB files that never ends; it records
// how many bytes were read from it.
func endlessTar() (io.Reader, *int64) {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		for i := 0; ; i++ {
			if err := tw.WriteHeader(&tar.Header{Name: strconv.Itoa(i), Mode: 0o644, Size: 1 << 20, Typeflag: tar.TypeReg}); err != nil {
				return
			}
			if _, err := io.CopyN(tw, zeros{}, 1<<20); err != nil {
				return
			}
		}
	}()
	var n int64
	return &countingReader{r: pr, n: &n, close: func() { pr.Close() }}, &n
}

type countingReader struct {
	r     io.Reader
	n     *int64
	close func()
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	return n, err
}

func TestUnpackBudget(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name    string
		layers  [][]byte
		limit   int64
		wantErr error
		wantMsg []string
	}{
		{"under the limit", [][]byte{rawTar(t, []int64{mib}, 0)}, 4 * mib, nil, nil},
		{"no limit", [][]byte{rawTar(t, []int64{8 * mib}, 0)}, 0, nil, nil},
		{"one file past the limit", [][]byte{rawTar(t, []int64{5 * mib}, 0)}, 4 * mib, ErrImageTooLarge,
			[]string{"layer sha256:l0", "limit of 4194304 bytes"}},
		{"layers share the limit", [][]byte{rawTar(t, []int64{3 * mib}, 0), rawTar(t, []int64{2 * mib}, 0)}, 4 * mib,
			ErrImageTooLarge, []string{"layer sha256:l1"}},
		{"a header past the limit is refused before its data", [][]byte{lyingHeader(t, 3<<30)}, 4 * mib,
			ErrImageTooLarge, []string{"sha256:l0", "3221225472 bytes counted"}},
		{"bytes after the end marker count", [][]byte{rawTar(t, []int64{1024}, 5*mib)}, 4 * mib,
			ErrImageTooLarge, []string{"sha256:l0"}},
		{"not a tar", [][]byte{bytes.Repeat([]byte("not a tar "), 100)}, 4 * mib, ErrCorrupt,
			[]string{"sha256:l0", "not a tar stream"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := UnpackBudget{Limit: tt.limit}
			var err error
			for i, l := range tt.layers {
				if err = b.Add(fmt.Sprintf("sha256:l%d", i), bytes.NewReader(l)); err != nil {
					break
				}
			}
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("Add = %v, want %v", err, tt.wantErr)
			}
			for _, w := range tt.wantMsg {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if err == nil {
				var total int64
				for _, l := range tt.layers {
					total += int64(len(l))
				}
				if b.Used != total {
					t.Errorf("Used = %d, want %d", b.Used, total)
				}
			}
		})
	}
}

// TestUnpackBudgetStopsAtTheLimit: an endless layer is read only a little
// past the limit, then refused.
func TestUnpackBudgetStopsAtTheLimit(t *testing.T) {
	r, read := endlessTar()
	defer r.(*countingReader).close()
	b := UnpackBudget{Limit: 8 << 20}
	err := b.Add("sha256:endless", r)
	if !errors.Is(err, ErrImageTooLarge) {
		t.Fatalf("Add = %v, want ErrImageTooLarge", err)
	}
	// One more entry is declared than fits, and read up to a buffer's worth.
	if *read > b.Limit+(2<<20) {
		t.Errorf("read %d bytes of the layer for a limit of %d", *read, b.Limit)
	}
	t.Logf("read %d bytes, %v", *read, err)
}

// imageWithLayers is an archive of one image whose layers are the given
// uncompressed tars, gzip'd.
func imageWithLayers(t *testing.T, raws ...[]byte) ([]byte, []string) {
	t.Helper()
	var b layoutBuilder
	var layers []descriptor
	var diffIDs, digests []string
	for _, raw := range raws {
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		zw.Write(raw)
		zw.Close()
		d := b.blob(MediaTypeLayerGzip, gz.Bytes())
		layers = append(layers, d)
		digests = append(digests, d.Digest)
		diffIDs = append(diffIDs, digestOf(raw))
	}
	cfg := b.json(MediaTypeConfig, imageConfigFile{Architecture: "amd64", OS: "linux",
		RootFS: rootFS{Type: "layers", DiffIDs: diffIDs}})
	m := b.json(MediaTypeManifest, manifest{SchemaVersion: 2, MediaType: MediaTypeManifest, Config: cfg, Layers: layers})
	return b.archive(t, index{SchemaVersion: 2, Manifests: []descriptor{m}}, ""), digests
}

// TestInspectGzipBomb: layers that unpack past WithMaxUnpackedBytes are
// refused naming the layer and the limit; under it, or without it, the
// image passes with its unpacked size.
func TestInspectGzipBomb(t *testing.T) {
	const mib = 1 << 20
	oneFile, oneDigests := imageWithLayers(t, rawTar(t, []int64{64 * mib}, 0))
	many := make([]int64, 64)
	for i := range many {
		many[i] = mib
	}
	manyFiles, manyDigests := imageWithLayers(t, rawTar(t, []int64{mib}, 0), rawTar(t, many, 0))
	t.Logf("64 MiB of zeros: archives of %d and %d bytes", len(oneFile), len(manyFiles))
	tests := []struct {
		name    string
		archive []byte
		limit   int64
		wantErr bool
		layer   string
	}{
		{"one 64 MiB file, limit 16 MiB", oneFile, 16 * mib, true, oneDigests[0]},
		{"64 files of 1 MiB in the second layer, limit 16 MiB", manyFiles, 16 * mib, true, manyDigests[1]},
		{"limit above the image", manyFiles, 80 * mib, false, ""},
		{"no limit", oneFile, 0, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, err := Inspect(bytes.NewReader(tt.archive), int64(len(tt.archive)), WithMaxUnpackedBytes(tt.limit))
			if !tt.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				if img.UnpackedSize < 64*mib {
					t.Errorf("UnpackedSize = %d, want at least 64 MiB", img.UnpackedSize)
				}
				return
			}
			if !errors.Is(err, ErrImageTooLarge) {
				t.Fatalf("Inspect = %v, want ErrImageTooLarge", err)
			}
			for _, w := range []string{tt.layer, strconv.FormatInt(tt.limit, 10)} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}

// virtualArchive is a tar whose large files are never in memory: their
// content is generated on read.
type virtualArchive struct {
	parts []vpart
	size  int64
}

type vpart struct {
	off  int64
	data []byte // nil: n bytes of fill
	n    int64
	fill byte
}

func (v *virtualArchive) add(p vpart) {
	if p.data != nil {
		p.n = int64(len(p.data))
	}
	p.off = v.size
	v.parts = append(v.parts, p)
	v.size += p.n
}

// file adds a tar entry; data nil means n bytes of fill.
func (v *virtualArchive) file(t *testing.T, name string, data []byte, n int64, fill byte) {
	t.Helper()
	if data != nil {
		n = int64(len(data))
	}
	var hdr bytes.Buffer
	if err := tar.NewWriter(&hdr).WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: n, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	v.add(vpart{data: hdr.Bytes()})
	v.add(vpart{data: data, n: n, fill: fill})
	if pad := (512 - n%512) % 512; pad > 0 {
		v.add(vpart{n: pad})
	}
}

func (v *virtualArchive) end() { v.add(vpart{n: 1024}) }

func (v *virtualArchive) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for _, part := range v.parts {
		if len(p) == 0 {
			break
		}
		if off >= part.off+part.n || off+int64(len(p)) <= part.off {
			continue
		}
		start := off - part.off
		k := min(int64(len(p)), part.n-start)
		if part.data != nil {
			copy(p[:k], part.data[start:start+k])
		} else {
			for i := range p[:k] {
				p[i] = part.fill
			}
		}
		p, off, n = p[k:], off+k, n+int(k)
	}
	if len(p) > 0 {
		return n, io.EOF
	}
	return n, nil
}

// TestInspectHugeDocuments: an index.json, a manifest or a config of
// hundreds of MB is refused by its size, before it is read: the error
// names the document and the limit, and Inspect allocates next to nothing.
func TestInspectHugeDocuments(t *testing.T) {
	const huge = 300 << 20
	fakeDigest := "sha256:" + strings.Repeat("ab", 32)
	layout := []byte(`{"imageLayoutVersion":"1.0.0"}`)
	tests := []struct {
		name  string
		build func(t *testing.T, v *virtualArchive)
		names string
	}{
		{"index.json", func(t *testing.T, v *virtualArchive) {
			v.file(t, "oci-layout", layout, 0, 0)
			v.file(t, "index.json", nil, huge, ' ')
		}, "index.json"},
		{"manifest", func(t *testing.T, v *virtualArchive) {
			idx := fmt.Sprintf(`{"schemaVersion":2,"manifests":[{"mediaType":%q,"digest":%q,"size":%d}]}`, MediaTypeManifest, fakeDigest, huge)
			v.file(t, "oci-layout", layout, 0, 0)
			v.file(t, "index.json", []byte(idx), 0, 0)
			v.file(t, blobPath(fakeDigest), nil, huge, ' ')
		}, fakeDigest},
		{"config", func(t *testing.T, v *virtualArchive) {
			m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"digest":%q,"size":%d},"layers":[]}`,
				MediaTypeManifest, MediaTypeConfig, fakeDigest, huge)
			md := digestOf([]byte(m))
			idx := fmt.Sprintf(`{"schemaVersion":2,"manifests":[{"mediaType":%q,"digest":%q,"size":%d}]}`, MediaTypeManifest, md, len(m))
			v.file(t, "oci-layout", layout, 0, 0)
			v.file(t, "index.json", []byte(idx), 0, 0)
			v.file(t, blobPath(md), []byte(m), 0, 0)
			v.file(t, blobPath(fakeDigest), nil, huge, ' ')
		}, fakeDigest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v virtualArchive
			tt.build(t, &v)
			v.end()
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err := Inspect(&v, v.size)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrImageTooLarge) {
				t.Fatalf("Inspect = %v, want ErrImageTooLarge", err)
			}
			for _, w := range []string{tt.names, "over the 4194304-byte limit"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			allocated := after.TotalAlloc - before.TotalAlloc
			t.Logf("archive of %d bytes: %v; %d bytes allocated", v.size, err, allocated)
			if allocated > 8<<20 {
				t.Errorf("Inspect allocated %d bytes for a %d-byte document", allocated, huge)
			}
		})
	}
}

// TestInspectWithDecompressor: a layer in a compression the package does
// not read is counted and its diff_id checked through the caller's
// decompressor; without one it is left uncounted.
func TestInspectWithDecompressor(t *testing.T) {
	const mediaType = "application/vnd.test.layer.v1.tar+identity"
	raw := rawTar(t, []int64{4 << 20}, 0)
	var b layoutBuilder
	layer := b.blob(mediaType, raw)
	cfg := b.json(MediaTypeConfig, imageConfigFile{Architecture: "amd64", OS: "linux",
		RootFS: rootFS{Type: "layers", DiffIDs: []string{digestOf(raw)}}})
	m := b.json(MediaTypeManifest, manifest{SchemaVersion: 2, MediaType: MediaTypeManifest, Config: cfg, Layers: []descriptor{layer}})
	archive := b.archive(t, index{SchemaVersion: 2, Manifests: []descriptor{m}}, "")
	identity := func(mt string, r io.Reader) (io.ReadCloser, bool, error) {
		if mt != mediaType {
			return nil, false, nil
		}
		return io.NopCloser(r), true, nil
	}
	tests := []struct {
		name     string
		opts     []InspectOption
		unpacked int64
		wantErr  error
	}{
		{"no decompressor: not counted", []InspectOption{WithMaxUnpackedBytes(1 << 20)}, -1, nil},
		{"counted", []InspectOption{WithDecompressor(identity)}, int64(len(raw)), nil},
		{"counted past the limit", []InspectOption{WithDecompressor(identity), WithMaxUnpackedBytes(1 << 20)}, 0, ErrImageTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, err := Inspect(bytes.NewReader(archive), int64(len(archive)), tt.opts...)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("Inspect = %v, want %v", err, tt.wantErr)
			}
			if err == nil && img.Layers[0].Unpacked != tt.unpacked {
				t.Errorf("Unpacked = %d, want %d", img.Layers[0].Unpacked, tt.unpacked)
			}
		})
	}
}
