package scheduler

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/api/ociarchive"
	"github.com/amberfn/amber/remote"
	"github.com/amberfn/amber/scheduler/internal/engine"
)

// Uploaded OCI image archives live in one JetStream object store that
// every scheduler on the same JetStream shares, so an image uploaded
// through one scheduler can be deployed and pulled through any other:
//
//	bucket AMBER_IMAGES, object "sha256:<hex>"  the archive, named by the
//	                                            sha256 of the whole tar
//
// The object store splits an archive into chunks (messages of the bucket's
// stream) and keeps its own SHA-256, which Get checks at the end of every
// read and which is the same hash as the name: exists and the import
// compare the two, so an object never serves bytes other than its name's.
// Objects are written once and never changed or deleted (there is no image
// garbage collection).
//
// Sizes: an object is as large as the bucket allows (no per-object limit;
// the stream has no MaxBytes and no MaxMsgSize), so the archive limit
// (DefaultMaxImageBytes, 1 GiB, checked before anything is stored) is what
// bounds it. Chunks are at most imageChunkMax and at most half the server's
// max_payload (8 MiB embedded, 1 MiB by default on an external server), so
// a 1 GiB archive is 1,024 chunks of 1 MiB on the embedded node.
//
// DATA/images/sha256/<hex>.tar is this scheduler's read-through cache of
// the bucket: an archive uploaded through this scheduler stays there (it
// was already on disk for its inspection), and one first downloaded from
// the bucket is kept while it streams to the agent. Every agent that runs
// a function pulls its archive once; with the cache the second and later
// pulls read a local file (with range requests and no JetStream traffic)
// instead of the whole archive again from the bucket, which on a cluster
// or an external NATS is a network read of up to 1 GiB per agent. A cached
// file is trusted: it was hashed while written and synced before its
// rename, and archives are immutable. Deploy (exists) always asks the
// bucket, never the cache.
//
// Upgrade: archives of the old per-scheduler layout (the same folder) are
// put into the bucket at every start when the bucket lacks them (logged
// "imported image into the object store"); the files stay as the cache.
// Checking costs one lookup per cached archive and start, and heals a data
// folder moved to another JetStream.
const imagesBucket = "AMBER_IMAGES"

// imageChunkMax is the largest chunk of an archive in the object store.
const imageChunkMax = 1 << 20

// imageStore keeps OCI image archives in the AMBER_IMAGES object store and
// caches them as DIR/sha256/<hex>.tar. Uploads stream to DIR/tmp, are
// hashed and checked there, then put into the bucket; a reader never sees
// a partial archive, in the bucket or in the cache.
type imageStore struct {
	dir         string
	maxBytes    int64 // the archive
	maxUnpacked int64 // what its layers unpack to
	obs         jetstream.ObjectStore
	chunk       uint32
	log         *slog.Logger
	// timeout bounds one lookup in the bucket (storeTimeout).
	timeout time.Duration

	mu       sync.Mutex
	inflight map[string]*sync.Mutex // per digest: one put at a time
}

// openImageStore opens (creating) the image bucket on eng, the cache in
// dir, and puts the archives dir holds from before into the bucket.
func openImageStore(ctx context.Context, eng *engine.Engine, dir string, maxBytes, maxUnpacked int64, log *slog.Logger) (*imageStore, error) {
	for _, d := range []string{filepath.Join(dir, "sha256"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	// Leftovers of uploads and downloads interrupted by a crash.
	if ents, err := os.ReadDir(filepath.Join(dir, "tmp")); err == nil {
		for _, e := range ents {
			_ = os.Remove(filepath.Join(dir, "tmp", e.Name()))
		}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	obs, err := eng.ObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      imagesBucket,
		Description: "amber's uploaded OCI image archives, named by digest",
	})
	if err != nil {
		return nil, imageStoreErr(fmt.Sprintf("bucket %s", imagesBucket), err)
	}
	chunk := uint32(imageChunkMax)
	if mp := eng.Conn.MaxPayload(); mp > 0 && mp/2 < int64(chunk) {
		chunk = uint32(mp / 2)
	}
	st := &imageStore{dir: dir, maxBytes: maxBytes, maxUnpacked: maxUnpacked, obs: obs, chunk: chunk, log: log,
		timeout: storeTimeout, inflight: map[string]*sync.Mutex{}}
	if err := st.importDir(ctx); err != nil {
		return nil, err
	}
	return st, nil
}

// imageStoreErr names what failed and marks it ErrStoreUnavailable (503):
// whatever keeps JetStream from taking or giving an archive is an outage
// to the caller, not a fault of the archive.
func imageStoreErr(what string, err error) error {
	err = engine.Wrap(fmt.Errorf("%s: %w", what, err))
	if !errors.Is(err, ErrStoreUnavailable) {
		err = fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
	}
	return err
}

// path returns where the cached archive with digest lives; digest must be
// valid.
func (st *imageStore) path(digest string) string {
	return filepath.Join(st.dir, "sha256", strings.TrimPrefix(digest, "sha256:")+".tar")
}

// lock serializes this scheduler's puts of one digest.
func (st *imageStore) lock(digest string) func() {
	st.mu.Lock()
	m := st.inflight[digest]
	if m == nil {
		m = &sync.Mutex{}
		st.inflight[digest] = m
	}
	st.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// info returns the object with digest in the bucket, nil when there is
// none. An object whose content hash is not its name is reported as an
// error and never served.
func (st *imageStore) info(ctx context.Context, digest string) (*jetstream.ObjectInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, st.timeout)
	defer cancel()
	oi, err := st.obs.GetInfo(ctx, digest)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, imageStoreErr("look up image "+digest, err)
	}
	if err := sameDigest(oi, digest); err != nil {
		return nil, err
	}
	return oi, nil
}

// sameDigest checks that the object store's hash of oi is digest.
func sameDigest(oi *jetstream.ObjectInfo, digest string) error {
	sum, err := jetstream.DecodeObjectDigest(oi.Digest)
	want, _ := hex.DecodeString(strings.TrimPrefix(digest, "sha256:"))
	if err != nil || !bytes.Equal(sum, want) {
		return fmt.Errorf("image %s: the object store holds different content under its name (hash %q)", digest, oi.Digest)
	}
	return nil
}

// exists reports whether the bucket holds digest. It asks JetStream, so
// it sees archives uploaded through any scheduler.
func (st *imageStore) exists(ctx context.Context, digest string) (bool, error) {
	if err := api.ValidateDigest("image", digest); err != nil {
		return false, err
	}
	oi, err := st.info(ctx, digest)
	return oi != nil, err
}

// image is an archive being read: the cached file, or the bucket's object
// streaming (and filling the cache as it goes).
type image struct {
	io.ReadCloser
	size    int64
	modTime time.Time
	file    *os.File // set when read from the cache
}

// open opens the archive with digest: from the cache when there, else
// from the bucket.
func (st *imageStore) open(ctx context.Context, digest string) (*image, error) {
	if err := api.ValidateDigest("digest", digest); err != nil {
		return nil, err
	}
	if f, err := os.Open(st.path(digest)); err == nil {
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, err
		}
		return &image{ReadCloser: f, size: fi.Size(), modTime: fi.ModTime(), file: f}, nil
	}
	oi, err := st.info(ctx, digest)
	if err != nil {
		return nil, err
	}
	if oi == nil {
		return nil, fmt.Errorf("image %s %w", digest, api.ErrNotFound)
	}
	res, err := st.obs.Get(ctx, digest)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("image %s %w", digest, api.ErrNotFound)
	}
	if err != nil {
		return nil, imageStoreErr("read image "+digest, err)
	}
	fl := &filling{st: st, digest: digest, src: res, want: int64(oi.Size), h: sha256.New()}
	if tmp, err := os.CreateTemp(filepath.Join(st.dir, "tmp"), "download-*.tar"); err == nil {
		fl.tmp = tmp
	} else {
		st.log.Warn("image cache: cannot create a file; serving without caching", "digest", digest, "err", err.Error())
	}
	return &image{ReadCloser: fl, size: int64(oi.Size), modTime: oi.ModTime}, nil
}

// filling reads an object from the bucket and copies it into a temporary
// file, which becomes the cached archive once the whole object was read
// and its hash is its name.
type filling struct {
	st     *imageStore
	digest string
	src    jetstream.ObjectResult
	tmp    *os.File
	h      hash.Hash
	n      int64
	want   int64
	done   bool // read to the end without error
	err    error
}

func (f *filling) Read(p []byte) (int, error) {
	n, err := f.src.Read(p)
	if n > 0 {
		f.n += int64(n)
		f.h.Write(p[:n])
		if f.tmp != nil {
			if _, werr := f.tmp.Write(p[:n]); werr != nil {
				f.st.log.Warn("image cache: write failed; serving without caching", "digest", f.digest, "err", werr.Error())
				f.drop()
			}
		}
	}
	switch {
	case err == io.EOF:
		f.done = true
	case err != nil:
		err = imageStoreErr("read image "+f.digest, err)
	}
	return n, err
}

func (f *filling) drop() {
	if f.tmp != nil {
		f.tmp.Close()
		os.Remove(f.tmp.Name())
		f.tmp = nil
	}
}

// Close ends the read and keeps the archive in the cache when it was read
// whole and checks out.
func (f *filling) Close() error {
	err := f.src.Close()
	if f.tmp == nil {
		return err
	}
	if !f.done || f.n != f.want || "sha256:"+hex.EncodeToString(f.h.Sum(nil)) != f.digest {
		f.drop()
		return err
	}
	if serr := f.tmp.Sync(); serr != nil {
		f.drop()
		return err
	}
	if cerr := f.tmp.Close(); cerr != nil {
		os.Remove(f.tmp.Name())
		return err
	}
	if rerr := os.Rename(f.tmp.Name(), f.st.path(f.digest)); rerr != nil {
		os.Remove(f.tmp.Name())
	}
	f.tmp = nil
	return err
}

// store puts the archive r (size bytes, hashing to digest) into the
// bucket unless it is there already, and returns once JetStream has
// acknowledged every chunk. It reports whether it wrote.
func (st *imageStore) store(ctx context.Context, digest string, r io.Reader, size int64) (bool, error) {
	defer st.lock(digest)()
	oi, err := st.info(ctx, digest)
	if err != nil {
		return false, err
	}
	if oi != nil {
		return false, nil
	}
	oi, err = st.obs.Put(ctx, jetstream.ObjectMeta{Name: digest, Opts: &jetstream.ObjectMetaOptions{ChunkSize: st.chunk}}, r)
	if err != nil {
		return false, imageStoreErr("store image "+digest, err)
	}
	if err := sameDigest(oi, digest); err != nil || int64(oi.Size) != size {
		// What went in is not what was hashed: take it out again.
		dctx, cancel := context.WithTimeout(context.Background(), st.timeout)
		_ = st.obs.Delete(dctx, digest)
		cancel()
		return false, fmt.Errorf("image %s: the archive read was %d bytes with object store hash %q, not %d bytes hashing to its name",
			digest, oi.Size, oi.Digest, size)
	}
	return true, nil
}

// importDir puts every archive of the cache folder (the old layout's
// DATA/images/sha256) the bucket lacks into it. A file whose content does
// not hash to its name is renamed *.corrupt and left out.
func (st *imageStore) importDir(ctx context.Context) error {
	ents, err := os.ReadDir(filepath.Join(st.dir, "sha256"))
	if err != nil {
		return err
	}
	var n int
	var total int64
	for _, e := range ents {
		hexName, ok := strings.CutSuffix(e.Name(), ".tar")
		digest := "sha256:" + hexName
		if !ok || !e.Type().IsRegular() || api.ValidateDigest("image", digest) != nil {
			continue
		}
		file := filepath.Join(st.dir, "sha256", e.Name())
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		wrote, err := st.store(ctx, digest, f, fi.Size())
		f.Close()
		if err != nil {
			if errors.Is(err, ErrStoreUnavailable) {
				return fmt.Errorf("import %s: %w", file, err)
			}
			st.log.Error("image archive not imported: its content does not match its name; renamed *.corrupt", "file", file, "err", err.Error())
			_ = os.Rename(file, file+".corrupt")
			continue
		}
		if !wrote {
			continue
		}
		n++
		total += fi.Size()
		st.log.Info("imported image into the object store", "digest", digest, "size", fi.Size(), "bucket", imagesBucket)
	}
	if n > 0 {
		st.log.Info("imported images from the data folder", "images", n, "bytes", total, "folder", filepath.Join(st.dir, "sha256"))
	}
	return nil
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
	return st.putContext(context.Background(), r)
}

// putContext receives an archive from r into a temporary file, checks it,
// puts it into the bucket (unless there already) and keeps the file as the
// cached copy. It returns once JetStream acknowledged the archive; ctx
// ends the wait (the caller hung up).
func (st *imageStore) putContext(ctx context.Context, r io.Reader) (digest string, size int64, err error) {
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
	if err := st.inspect(tmp, size); err != nil {
		return "", 0, err
	}
	digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	if _, err := st.store(ctx, digest, io.NewSectionReader(tmp, 0, size), size); err != nil {
		return "", 0, err
	}
	// The bucket holds it: the file becomes the cached copy (synced
	// first, so a crash never leaves a torn file under the name).
	if _, err := os.Stat(st.path(digest)); err == nil {
		return digest, size, nil
	}
	if err := tmp.Sync(); err != nil {
		st.log.Warn("image cache: sync failed; not cached", "digest", digest, "err", err.Error())
		return digest, size, nil
	}
	if err := tmp.Close(); err != nil {
		st.log.Warn("image cache: close failed; not cached", "digest", digest, "err", err.Error())
		return digest, size, nil
	}
	if err := os.Rename(tmp.Name(), st.path(digest)); err != nil {
		st.log.Warn("image cache: rename failed; not cached", "digest", digest, "err", err.Error())
		os.Remove(tmp.Name())
	}
	tmp = nil
	return digest, size, nil
}

// inspect verifies the archive in f as `amber deploy` does (every blob
// its linux/amd64 image references present, with the size and digest its
// descriptor gives; manifests and configs within
// ociarchive.MaxManifestBytes) and counts what its layers unpack to,
// stopping at the store's limit. Nothing is held in memory but the small
// JSON documents.
func (st *imageStore) inspect(f io.ReaderAt, size int64) error {
	_, err := ociarchive.Inspect(f, size, ociarchive.WithMaxUnpackedBytes(st.maxUnpacked),
		ociarchive.WithDecompressor(remote.DecompressLayer))
	switch {
	case errors.Is(err, ociarchive.ErrImageTooLarge):
		return tooLarge{err}
	case err != nil:
		return api.Invalid("image", "%v", err)
	}
	return nil
}

// tooLarge is an ociarchive.ErrImageTooLarge refusal that is also an
// api.ErrTooLarge (413), with the message of the first.
type tooLarge struct{ err error }

func (e tooLarge) Error() string   { return "image archive refused: " + e.err.Error() }
func (e tooLarge) Unwrap() []error { return []error{e.err, api.ErrTooLarge} }

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
