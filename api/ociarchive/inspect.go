package ociarchive

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// Inspect reads the OCI image archive of size bytes in r and returns its
// image: the single manifest of index.json, or, for an index (also nested,
// as buildx writes), the first manifest for linux/amd64. It verifies that the
// manifest, the config and every layer it references exist in the archive
// with the size and sha256 their descriptors give, and that each layer's
// uncompressed sha256 matches the config's rootfs diff_ids (for gzip'd and
// plain tar layers). Inspect reads r at random offsets and never holds a
// layer in memory.
//
// Errors wrap ErrNotArchive (not a tar, or no index.json), ErrCorrupt
// (truncated, missing blob, digest or size mismatch, malformed JSON) or
// ErrUnsupported (no linux/amd64 image, unknown media type or digest
// algorithm).
func Inspect(r io.ReaderAt, size int64) (*Image, error) {
	a, err := scan(r, size)
	if err != nil {
		return nil, err
	}
	return a.image()
}

// InspectFile is Inspect on the archive at path.
func InspectFile(path string) (*Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("ociarchive: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("ociarchive: %w", err)
	}
	return Inspect(f, st.Size())
}

// span is where a regular file's content lies in the archive.
type span struct{ off, size int64 }

type archive struct {
	r     io.ReaderAt
	files map[string]span
}

// scan reads the tar's headers once and records where each regular file's
// content is.
func scan(r io.ReaderAt, size int64) (*archive, error) {
	sr := io.NewSectionReader(r, 0, size)
	tr := tar.NewReader(sr)
	a := &archive{r: r, files: map[string]span{}}
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			if n == 0 {
				return nil, fmt.Errorf("ociarchive: empty tar: %w", ErrNotArchive)
			}
			// archive/tar takes a stream cut at a block boundary, or
			// inside a file's padding, for a complete archive. A complete
			// one ends with two zero blocks, the last thing read.
			if !endsWithTrailer(r, sr) {
				return nil, fmt.Errorf("ociarchive: tar truncated after %d entries (no end-of-archive marker): %w", n, ErrCorrupt)
			}
			break
		}
		if err != nil {
			if n == 0 {
				return nil, fmt.Errorf("ociarchive: not a tar archive (%v): %w", err, ErrNotArchive)
			}
			return nil, fmt.Errorf("ociarchive: tar truncated or damaged after %d entries (%v): %w", n, err, ErrCorrupt)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		// archive/tar reads no further than the header, so the section
		// reader's position is where the content starts.
		off, err := sr.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, fmt.Errorf("ociarchive: %w", err)
		}
		a.files[strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")] = span{off: off, size: hdr.Size}
	}
	if _, ok := a.files["index.json"]; !ok {
		return nil, fmt.Errorf("ociarchive: no index.json in the tar: %w", ErrNotArchive)
	}
	return a, nil
}

// endsWithTrailer reports whether the 1024 bytes before sr's position are
// zero, the end-of-archive marker tar.Reader has just read.
func endsWithTrailer(r io.ReaderAt, sr *io.SectionReader) bool {
	pos, err := sr.Seek(0, io.SeekCurrent)
	if err != nil || pos < 1024 {
		return false
	}
	var blk [1024]byte
	if _, err := r.ReadAt(blk[:], pos-1024); err != nil {
		return false
	}
	return blk == [1024]byte{}
}

func (a *archive) image() (*Image, error) {
	if s, ok := a.files["oci-layout"]; ok {
		var l layout
		if err := a.readJSON("oci-layout", s, &l); err != nil {
			return nil, err
		}
		if l.ImageLayoutVersion != imageLayoutVersion {
			return nil, fmt.Errorf("ociarchive: oci-layout version %q: %w", l.ImageLayoutVersion, ErrUnsupported)
		}
	}
	var idx index
	if err := a.readJSON("index.json", a.files["index.json"], &idx); err != nil {
		return nil, err
	}
	md, refName, err := a.pick(idx, "", 0)
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := a.blobJSON(md, &m); err != nil {
		return nil, err
	}
	if m.SchemaVersion != 2 || (m.MediaType != "" && m.MediaType != MediaTypeManifest && m.MediaType != dockerManifest) {
		return nil, fmt.Errorf("ociarchive: manifest %s: schemaVersion %d, mediaType %q: %w", md.Digest, m.SchemaVersion, m.MediaType, ErrUnsupported)
	}
	var c imageConfigFile
	if err := a.blobJSON(m.Config, &c); err != nil {
		return nil, err
	}
	if c.OS != wantOS || c.Architecture != wantArch {
		return nil, fmt.Errorf("ociarchive: image is for %s/%s, want %s/%s: %w", c.OS, c.Architecture, wantOS, wantArch, ErrUnsupported)
	}
	if len(c.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("ociarchive: manifest has %d layers, config %d diff_ids: %w", len(m.Layers), len(c.RootFS.DiffIDs), ErrCorrupt)
	}
	img := &Image{
		ManifestDigest: md.Digest,
		ConfigDigest:   m.Config.Digest,
		Config:         c.Config,
		OS:             c.OS,
		Architecture:   c.Architecture,
		RefName:        refName,
		Size:           md.Size + m.Config.Size,
	}
	for i, l := range m.Layers {
		if err := a.verifyLayer(l, c.RootFS.DiffIDs[i]); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		img.Size += l.Size
	}
	return img, nil
}

// pick returns the first manifest for linux/amd64 (or without a platform)
// in idx, descending into nested indexes, and the ref name annotation that
// applies to it.
func (a *archive) pick(idx index, refName string, depth int) (descriptor, string, error) {
	if depth > 4 {
		return descriptor{}, "", fmt.Errorf("ociarchive: indexes nested too deep: %w", ErrUnsupported)
	}
	var seen []string
	for _, d := range idx.Manifests {
		ref := refName
		if n := d.Annotations[AnnotationRefName]; n != "" {
			ref = n
		}
		switch d.MediaType {
		case MediaTypeManifest, dockerManifest:
			if d.Platform == nil || (d.Platform.OS == wantOS && d.Platform.Architecture == wantArch) {
				return d, ref, nil
			}
			seen = append(seen, d.Platform.OS+"/"+d.Platform.Architecture)
		case MediaTypeIndex, dockerManifestList:
			var sub index
			if err := a.blobJSON(d, &sub); err != nil {
				return descriptor{}, "", err
			}
			md, r, err := a.pick(sub, ref, depth+1)
			if err == nil || !errors.Is(err, ErrUnsupported) {
				return md, r, err
			}
		default:
			seen = append(seen, d.MediaType)
		}
	}
	return descriptor{}, "", fmt.Errorf("ociarchive: no %s/%s image manifest in index (found %v): %w", wantOS, wantArch, seen, ErrUnsupported)
}

// blobJSON reads the small blob d names, verifies it and decodes it into v.
func (a *archive) blobJSON(d descriptor, v any) error {
	s, err := a.locate(d)
	if err != nil {
		return err
	}
	if s.size > maxJSONSize {
		return fmt.Errorf("ociarchive: blob %s: a %s of %d bytes is over the %d-byte limit: %w", d.Digest, d.MediaType, s.size, maxJSONSize, ErrTooLarge)
	}
	b, err := a.read(blobPath(d.Digest), s)
	if err != nil {
		return err
	}
	if got := digestOf(b); got != d.Digest {
		return fmt.Errorf("ociarchive: blob %s: content hashes to %s: %w", d.Digest, got, ErrCorrupt)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("ociarchive: blob %s: %v: %w", d.Digest, err, ErrCorrupt)
	}
	return nil
}

func (a *archive) readJSON(name string, s span, v any) error {
	if s.size > maxJSONSize {
		return fmt.Errorf("ociarchive: %s: %d bytes is over the %d-byte limit: %w", name, s.size, maxJSONSize, ErrTooLarge)
	}
	b, err := a.read(name, s)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("ociarchive: %s: %v: %w", name, err, ErrCorrupt)
	}
	return nil
}

func (a *archive) read(name string, s span) ([]byte, error) {
	b := make([]byte, s.size)
	if _, err := a.r.ReadAt(b, s.off); err != nil {
		return nil, fmt.Errorf("ociarchive: %s: truncated (%v): %w", name, err, ErrCorrupt)
	}
	return b, nil
}

// locate checks d's digest and finds its blob, of the right size.
func (a *archive) locate(d descriptor) (span, error) {
	alg, hexpart, _ := strings.Cut(d.Digest, ":")
	if alg != "sha256" {
		return span{}, fmt.Errorf("ociarchive: digest %q: only sha256 is supported: %w", d.Digest, ErrUnsupported)
	}
	if len(hexpart) != sha256.Size*2 || strings.ToLower(hexpart) != hexpart {
		return span{}, fmt.Errorf("ociarchive: malformed digest %q: %w", d.Digest, ErrCorrupt)
	}
	if _, err := hex.DecodeString(hexpart); err != nil {
		return span{}, fmt.Errorf("ociarchive: malformed digest %q: %w", d.Digest, ErrCorrupt)
	}
	s, ok := a.files[blobPath(d.Digest)]
	if !ok {
		return span{}, fmt.Errorf("ociarchive: blob %s (%s) is missing: %w", d.Digest, d.MediaType, ErrCorrupt)
	}
	if s.size != d.Size {
		return span{}, fmt.Errorf("ociarchive: blob %s: %d bytes, descriptor says %d: %w", d.Digest, s.size, d.Size, ErrCorrupt)
	}
	return s, nil
}

// verifyLayer checks a layer blob's digest and, for tar and gzip'd tar
// layers, its uncompressed digest against diffID, in one pass.
func (a *archive) verifyLayer(d descriptor, diffID string) error {
	s, err := a.locate(d)
	if err != nil {
		if strings.Contains(d.MediaType, "nondistributable") || strings.Contains(d.MediaType, "foreign") {
			return nil // may legitimately be left out of an archive
		}
		return err
	}
	blob := io.NewSectionReader(a.r, s.off, s.size)
	compressed := sha256.New()
	tee := io.TeeReader(blob, compressed)
	var gotDiff string
	var gzErr error
	switch d.MediaType {
	case MediaTypeLayerGzip, dockerLayerGzip, "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip":
		uncompressed := sha256.New()
		zr, err := gzip.NewReader(tee)
		if err == nil {
			_, err = io.Copy(uncompressed, zr)
		}
		gzErr = err
		gotDiff = sumOf(uncompressed)
	}
	// Hash what the decompressor left unread (or the whole blob).
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return fmt.Errorf("ociarchive: blob %s: %v: %w", d.Digest, err, ErrCorrupt)
	}
	// A wrong digest explains a broken gzip stream, so it is reported first.
	if got := sumOf(compressed); got != d.Digest {
		return fmt.Errorf("ociarchive: blob %s: content hashes to %s: %w", d.Digest, got, ErrCorrupt)
	}
	if gzErr != nil {
		return fmt.Errorf("ociarchive: blob %s: %v: %w", d.Digest, gzErr, ErrCorrupt)
	}
	if d.MediaType == MediaTypeLayer || d.MediaType == "application/vnd.docker.image.rootfs.diff.tar" {
		gotDiff = d.Digest
	}
	if gotDiff != "" && gotDiff != diffID {
		return fmt.Errorf("ociarchive: blob %s: uncompressed content hashes to %s, config diff_id is %s: %w", d.Digest, gotDiff, diffID, ErrCorrupt)
	}
	return nil
}
