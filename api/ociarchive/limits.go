package ociarchive

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// CheckDocuments checks, without reading any layer, that the JSON
// documents of the OCI image archive of size bytes in r are within
// api.MaxManifestBytes: index.json, every manifest and index it leads to,
// and every image config those manifests name, by their descriptors' sizes
// and by the sizes of the blobs in the archive. A too large one is refused
// with an error naming it that wraps ErrTooLarge (and api.ErrTooLarge).
// It is the check a server applies to an upload; Inspect, which verifies
// everything, applies the same limit.
//
// Blobs the archive does not hold and documents that do not parse are left
// to Inspect and to the importer; the other errors wrap ErrNotArchive.
func CheckDocuments(r io.ReaderAt, size int64) error {
	a, err := scan(r, size)
	if err != nil {
		return err
	}
	var idx index
	if err := a.readJSON("index.json", a.files["index.json"], &idx); err != nil {
		if errors.Is(err, ErrTooLarge) {
			return err
		}
		return nil
	}
	return a.checkIndex(idx, 0)
}

// checkDoc checks d's declared size and its blob's, and decodes the blob
// into v when it is there and parses; ok says whether v was filled.
func (a *archive) checkDoc(d descriptor, what string, v any) (ok bool, err error) {
	if d.Size > maxJSONSize {
		return false, fmt.Errorf("ociarchive: %s %s: descriptor says %d bytes, over the %d-byte limit: %w", what, d.Digest, d.Size, maxJSONSize, ErrTooLarge)
	}
	s, found := a.files[blobPath(d.Digest)]
	if !found {
		return false, nil
	}
	if s.size > maxJSONSize {
		return false, fmt.Errorf("ociarchive: %s %s: %d bytes, over the %d-byte limit: %w", what, d.Digest, s.size, maxJSONSize, ErrTooLarge)
	}
	b, err := a.read(blobPath(d.Digest), s)
	if err != nil || json.Unmarshal(b, v) != nil {
		return false, nil
	}
	return true, nil
}

func (a *archive) checkIndex(idx index, depth int) error {
	if depth > 4 {
		return nil // Inspect refuses it
	}
	for _, d := range idx.Manifests {
		switch d.MediaType {
		case MediaTypeIndex, dockerManifestList:
			var sub index
			ok, err := a.checkDoc(d, "index", &sub)
			if err != nil {
				return err
			}
			if ok {
				if err := a.checkIndex(sub, depth+1); err != nil {
					return err
				}
			}
		default:
			var m manifest
			ok, err := a.checkDoc(d, "manifest", &m)
			if err != nil {
				return err
			}
			if ok {
				var cfg json.RawMessage
				if _, err := a.checkDoc(m.Config, "image config", &cfg); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
