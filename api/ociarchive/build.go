package ociarchive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// epoch is the fixed timestamp of every tar entry and of the image config,
// so that the same directory always yields the same digests.
var epoch = time.Unix(0, 0).UTC()

// Option configures Build.
type Option func(*buildConfig)

type buildConfig struct {
	prefix     string
	entrypoint []string
	env        []string
	workingDir *string
	user       string
	refName    string
	imageName  string
	err        error
}

// WithPrefix sets where dir's contents go in the image, relative to its root
// ("var/task" by default; "" puts them at the root). The default entrypoint,
// working directory and LAMBDA_TASK_ROOT follow the prefix.
func WithPrefix(p string) Option {
	return func(c *buildConfig) {
		c.prefix = strings.Trim(path.Clean("/"+p), "/")
	}
}

// WithEntrypoint sets the image's entrypoint; by default it is the bootstrap
// under the prefix: ["/var/task/bootstrap"].
func WithEntrypoint(args ...string) Option {
	return func(c *buildConfig) {
		if len(args) == 0 {
			c.err = errors.Join(c.err, fmt.Errorf("WithEntrypoint: no arguments: %w", ErrInvalid))
			return
		}
		c.entrypoint = slices.Clone(args)
	}
}

// WithEnv adds KEY=VALUE entries to the image config's Env. The defaults are
// PATH and LAMBDA_TASK_ROOT; an entry for a key already present replaces it,
// other entries are appended in the order given.
func WithEnv(kv ...string) Option {
	return func(c *buildConfig) {
		for _, e := range kv {
			if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
				c.err = errors.Join(c.err, fmt.Errorf("WithEnv(%q): want KEY=VALUE: %w", e, ErrInvalid))
				continue
			}
			c.env = append(c.env, e)
		}
	}
}

// WithWorkingDir sets the image's working directory (default: the prefix as
// an absolute path, /var/task).
func WithWorkingDir(d string) Option {
	return func(c *buildConfig) { c.workingDir = &d }
}

// WithUser sets the image's User ("1000", "1000:1000", "root"); by default
// there is none and amber runs the function as its sandbox user.
func WithUser(u string) Option {
	return func(c *buildConfig) { c.user = u }
}

// WithRefName sets the org.opencontainers.image.ref.name annotation of the
// manifest in index.json (default "latest").
func WithRefName(name string) Option {
	return func(c *buildConfig) { c.refName = name }
}

// WithImageName also sets the io.containerd.image.name annotation, the full
// name containerd's Import gives the image (for example
// "amber.local/fn/hello:v3"). Without it callers name the image on import,
// for instance with containerd's WithImageRefTranslator.
func WithImageName(name string) Option {
	return func(c *buildConfig) { c.imageName = name }
}

// entry is one file of the layer, before it is written.
type entry struct {
	name string // path in the image, no leading or trailing slash
	typ  byte
	mode int64
	size int64
	link string
	src  string // host path of a regular file's content
}

// Build packs dir as one gzip'd layer (under /var/task unless WithPrefix
// says otherwise) and writes an OCI image archive for linux/amd64 to w.
//
// dir must hold an executable regular file named bootstrap. File modes,
// subdirectories and symlinks (not followed) are kept; owners are root and
// every timestamp is the Unix epoch, and entries are sorted, so the same
// directory always gives the same digests. The layer also holds the parent
// directories of the prefix and an empty /tmp (mode 1777).
func Build(dir string, w io.Writer, opts ...Option) (*Image, error) {
	cfg := buildConfig{prefix: defaultPrefix, refName: defaultRefName}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.err != nil {
		return nil, cfg.err
	}
	if err := checkBootstrap(dir); err != nil {
		return nil, err
	}
	entries, err := collect(dir, cfg.prefix)
	if err != nil {
		return nil, err
	}

	layer, err := os.CreateTemp("", "amber-layer-*.tar.gz")
	if err != nil {
		return nil, fmt.Errorf("ociarchive: layer scratch file: %w", err)
	}
	defer func() {
		layer.Close()
		os.Remove(layer.Name())
	}()
	diffID, layerDesc, unpacked, err := writeLayer(layer, entries)
	if err != nil {
		return nil, err
	}

	taskRoot := "/" + cfg.prefix
	ic := ImageConfig{
		Entrypoint: cfg.entrypoint,
		Env:        mergeEnv([]string{"PATH=" + defaultPath, "LAMBDA_TASK_ROOT=" + taskRoot}, cfg.env),
		WorkingDir: taskRoot,
	}
	if ic.Entrypoint == nil {
		ic.Entrypoint = []string{path.Join(taskRoot, "bootstrap")}
	}
	ic.User = cfg.user
	if cfg.workingDir != nil {
		ic.WorkingDir = *cfg.workingDir
	}
	created := epoch.Format(time.RFC3339)
	configJSON, err := json.Marshal(imageConfigFile{
		Created:      created,
		Architecture: wantArch,
		OS:           wantOS,
		Config:       ic,
		RootFS:       rootFS{Type: "layers", DiffIDs: []string{diffID}},
		History: []history{{
			Created:   created,
			CreatedBy: "amber build: function code in " + taskRoot,
			Comment:   "amber",
		}},
	})
	if err != nil {
		return nil, err
	}
	configDesc := descriptor{MediaType: MediaTypeConfig, Digest: digestOf(configJSON), Size: int64(len(configJSON))}
	manifestJSON, err := json.Marshal(manifest{
		SchemaVersion: 2,
		MediaType:     MediaTypeManifest,
		Config:        configDesc,
		Layers:        []descriptor{layerDesc},
	})
	if err != nil {
		return nil, err
	}
	manifestDesc := descriptor{
		MediaType: MediaTypeManifest,
		Digest:    digestOf(manifestJSON),
		Size:      int64(len(manifestJSON)),
		Platform:  &platform{Architecture: wantArch, OS: wantOS},
	}
	if cfg.refName != "" || cfg.imageName != "" {
		manifestDesc.Annotations = map[string]string{}
		if cfg.refName != "" {
			manifestDesc.Annotations[AnnotationRefName] = cfg.refName
		}
		if cfg.imageName != "" {
			manifestDesc.Annotations[AnnotationImageName] = cfg.imageName
		}
	}
	indexJSON, err := json.Marshal(index{SchemaVersion: 2, MediaType: MediaTypeIndex, Manifests: []descriptor{manifestDesc}})
	if err != nil {
		return nil, err
	}
	layoutJSON, _ := json.Marshal(layout{ImageLayoutVersion: imageLayoutVersion})

	if _, err := layer.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("ociarchive: layer scratch file: %w", err)
	}
	tw := tar.NewWriter(w)
	files := []struct {
		name string
		data []byte
		r    io.Reader
		size int64
	}{
		{name: "oci-layout", data: layoutJSON},
		{name: "index.json", data: indexJSON},
		{name: "blobs/"},
		{name: "blobs/sha256/"},
		{name: blobPath(configDesc.Digest), data: configJSON},
		{name: blobPath(layerDesc.Digest), r: layer, size: layerDesc.Size},
		{name: blobPath(manifestDesc.Digest), data: manifestJSON},
	}
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, ModTime: epoch, Typeflag: tar.TypeReg, Mode: 0o644}
		switch {
		case strings.HasSuffix(f.name, "/"):
			hdr.Typeflag, hdr.Mode = tar.TypeDir, 0o755
		case f.r != nil:
			hdr.Size = f.size
		default:
			hdr.Size = int64(len(f.data))
			f.r = bytes.NewReader(f.data)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("ociarchive: write archive: %w", err)
		}
		if f.r != nil {
			if _, err := io.CopyN(tw, f.r, hdr.Size); err != nil {
				return nil, fmt.Errorf("ociarchive: write archive: %w", err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("ociarchive: write archive: %w", err)
	}
	return &Image{
		ManifestDigest: manifestDesc.Digest,
		ConfigDigest:   configDesc.Digest,
		Config:         ic,
		OS:             wantOS,
		Architecture:   wantArch,
		RefName:        cfg.refName,
		Size:           manifestDesc.Size + configDesc.Size + layerDesc.Size,
		UnpackedSize:   unpacked,
		Layers: []Layer{{Digest: layerDesc.Digest, MediaType: layerDesc.MediaType,
			Size: layerDesc.Size, Unpacked: unpacked}},
	}, nil
}

func checkBootstrap(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("ociarchive: %w: %w", ErrInvalid, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("ociarchive: %s is not a directory: %w", dir, ErrInvalid)
	}
	fi, err := os.Lstat(filepath.Join(dir, "bootstrap"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("bootstrap: not found in %s: %w", dir, ErrNoBootstrap)
	case err != nil:
		return fmt.Errorf("bootstrap: %w: %w", err, ErrNoBootstrap)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("bootstrap: not a regular file (%s) in %s: %w", fi.Mode().Type(), dir, ErrNoBootstrap)
	case fi.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("bootstrap: not executable (mode %s) in %s: %w", fi.Mode().Perm(), dir, ErrNoBootstrap)
	}
	return nil
}

// collect lists dir's tree as layer entries under prefix, plus the prefix's
// parent directories and /tmp, sorted by name.
func collect(dir, prefix string) ([]entry, error) {
	var entries []entry
	seen := map[string]bool{}
	add := func(e entry) {
		if !seen[e.name] {
			seen[e.name] = true
			entries = append(entries, e)
		}
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		e := entry{name: path.Join(prefix, filepath.ToSlash(rel)), mode: tarMode(fi.Mode())}
		switch m := fi.Mode(); {
		case m.IsRegular():
			e.typ, e.size, e.src = tar.TypeReg, fi.Size(), p
		case m.IsDir():
			e.typ = tar.TypeDir
		case m&fs.ModeSymlink != 0:
			e.typ = tar.TypeSymlink
			if e.link, err = os.Readlink(p); err != nil {
				return err
			}
		default:
			return fmt.Errorf("ociarchive: %s: cannot pack file type %s: %w", p, m.Type(), ErrUnsupported)
		}
		add(e)
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrUnsupported) {
			return nil, err
		}
		return nil, fmt.Errorf("ociarchive: read %s: %w", dir, err)
	}
	// The prefix and its parents, then /tmp; entries from dir win.
	for p := prefix; p != "" && p != "."; p = path.Dir(p) {
		add(entry{name: p, typ: tar.TypeDir, mode: 0o755})
	}
	add(entry{name: "tmp", typ: tar.TypeDir, mode: 0o1777})
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.name, b.name) })
	return entries, nil
}

// tarMode converts an fs.FileMode to the Unix mode bits tar stores.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// writeLayer writes entries as a gzip'd tar to f and returns the diff ID
// (sha256 of the uncompressed tar), the layer's descriptor and the
// uncompressed tar's length.
func writeLayer(f io.Writer, entries []entry) (string, descriptor, int64, error) {
	compressed := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, compressed)}
	gz := gzip.NewWriter(cw) // no name, no mtime: deterministic header
	uncompressed := sha256.New()
	raw := &countWriter{w: uncompressed}
	tw := tar.NewWriter(io.MultiWriter(gz, raw))
	for _, e := range entries {
		hdr := &tar.Header{
			Typeflag: e.typ,
			Name:     e.name,
			Linkname: e.link,
			Mode:     e.mode,
			Size:     e.size,
			ModTime:  epoch,
		}
		if e.typ == tar.TypeDir {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return "", descriptor{}, 0, fmt.Errorf("ociarchive: layer: %s: %w", e.name, err)
		}
		if e.typ == tar.TypeReg {
			if err := copyFile(tw, e.src, e.size); err != nil {
				return "", descriptor{}, 0, fmt.Errorf("ociarchive: layer: %w", err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return "", descriptor{}, 0, fmt.Errorf("ociarchive: layer: %w", err)
	}
	if err := gz.Close(); err != nil {
		return "", descriptor{}, 0, fmt.Errorf("ociarchive: layer: %w", err)
	}
	if cw.err != nil {
		return "", descriptor{}, 0, fmt.Errorf("ociarchive: layer: %w", cw.err)
	}
	return sumOf(uncompressed), descriptor{
		MediaType: MediaTypeLayerGzip,
		Digest:    sumOf(compressed),
		Size:      cw.n,
	}, raw.n, nil
}

func copyFile(w io.Writer, src string, size int64) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.CopyN(w, f, size)
	if err == io.EOF || (err == nil && n == size && !atEOF(f)) {
		return fmt.Errorf("%s changed size while being packed", src)
	}
	return err
}

func atEOF(f *os.File) bool {
	var b [1]byte
	n, _ := f.Read(b[:])
	return n == 0
}

type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if err != nil && c.err == nil {
		c.err = err
	}
	return n, err
}

// mergeEnv applies extra KEY=VALUE entries to base: a known key is
// replaced in place, a new one appended.
func mergeEnv(base, extra []string) []string {
	out := slices.Clone(base)
	for _, e := range extra {
		k, _, _ := strings.Cut(e, "=")
		i := slices.IndexFunc(out, func(o string) bool { return strings.HasPrefix(o, k+"=") })
		if i >= 0 {
			out[i] = e
		} else {
			out = append(out, e)
		}
	}
	return out
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func sumOf(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

func blobPath(digest string) string {
	alg, hexpart, _ := strings.Cut(digest, ":")
	return "blobs/" + alg + "/" + hexpart
}
