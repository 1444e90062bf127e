// Package snapshots keeps CRIU checkpoint images of function instances:
// one entry per function version on an agent, each a folder holding the
// CRIU image files and a metadata file, verified before use, removed when
// its version is gone, and kept under a size budget, oldest first.
//
// The package knows nothing of containerd: the agent takes and restores
// snapshots into and from the folders the store hands out.
package snapshots

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Errors Get and Verify return, to be tested with errors.Is.
var (
	ErrNotFound = errors.New("no snapshot")
	// ErrCorrupt: files missing, truncated or changed since the snapshot was taken.
	ErrCorrupt = errors.New("snapshot corrupt")
	// ErrForeign: taken by another CRIU version or on another kernel release.
	ErrForeign = errors.New("snapshot from another CRIU or kernel")
)

const (
	metaFile = "meta.json"
	imageDir = "image"
	// DefaultBudget is the store's default size budget.
	DefaultBudget int64 = 4 << 30
)

// Env is what a snapshot must have been taken with to be restored here.
type Env struct {
	CRIUVersion string `json:"criu_version"`
	Kernel      string `json:"kernel_release"`
}

// Meta describes one stored snapshot.
type Meta struct {
	Function    string    `json:"function"`
	Version     int       `json:"version"`
	ImageDigest string    `json:"image_digest"`
	CRIUVersion string    `json:"criu_version"`
	Kernel      string    `json:"kernel_release"`
	Size        int64     `json:"size"`   // bytes of the CRIU image files
	SHA256      string    `json:"sha256"` // over every image file: relative path, size and content, in path order
	Files       int       `json:"files"`
	Created     time.Time `json:"created"`
	// TakeTime is how long taking it took: the checkpoint and storing it.
	TakeTime time.Duration `json:"take_time_ns"`
	// InitTime is the cold init the snapshot stands in for, as measured
	// on the instance it was taken from.
	InitTime time.Duration `json:"init_time_ns"`
}

// Entry is a stored snapshot: its metadata and where its CRIU image is.
type Entry struct {
	Meta
	Dir string // the entry's folder
}

// ImagePath is the folder of CRIU image files, for restore.
func (e *Entry) ImagePath() string { return filepath.Join(e.Dir, imageDir) }

// Store keeps snapshots under one folder.
type Store struct {
	dir    string
	budget int64

	mu       sync.Mutex
	verified map[string]string // entry folder → fingerprint of the files last verified
}

// Open opens (creating) a store under dir that keeps at most budget bytes
// (DefaultBudget when budget <= 0). Leftovers of snapshots being taken
// when a previous agent stopped are removed.
func Open(dir string, budget int64) (*Store, error) {
	if budget <= 0 {
		budget = DefaultBudget
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			_ = os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
	return &Store{dir: dir, budget: budget, verified: map[string]string{}}, nil
}

// Dir is the store's folder.
func (s *Store) Dir() string { return s.dir }

func entryName(function string, version int) string {
	return function + "@" + strconv.Itoa(version)
}

// Prepare returns a new empty folder for a CRIU image of the function
// version, to be committed with Commit or dropped with Discard.
func (s *Store) Prepare(function string, version int) (string, error) {
	tmp, err := os.MkdirTemp(s.dir, ".tmp-"+entryName(function, version)+"-")
	if err != nil {
		return "", fmt.Errorf("snapshot store: %w", err)
	}
	img := filepath.Join(tmp, imageDir)
	if err := os.Mkdir(img, 0o700); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	return img, nil
}

// Discard drops a folder Prepare returned.
func (s *Store) Discard(imagePath string) {
	if strings.HasPrefix(filepath.Base(filepath.Dir(imagePath)), ".tmp-") {
		_ = os.RemoveAll(filepath.Dir(imagePath))
	}
}

// Commit stores the CRIU image written into imagePath (from Prepare) as
// the snapshot of m.Function at m.Version, replacing any previous one.
// Size, checksum and file count are computed here. Oldest entries are
// then removed until the store is within its budget; the new entry is
// never removed that way, so Commit returns what was evicted.
func (s *Store) Commit(imagePath string, m Meta) (*Entry, []Meta, error) {
	tmp := filepath.Dir(imagePath)
	sum, size, files, err := checksum(imagePath)
	if err != nil {
		s.Discard(imagePath)
		return nil, nil, fmt.Errorf("snapshot checksum: %w", err)
	}
	m.SHA256, m.Size, m.Files = sum, size, files
	if m.Created.IsZero() {
		m.Created = time.Now()
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := writeFileSync(filepath.Join(tmp, metaFile), b); err != nil {
		s.Discard(imagePath)
		return nil, nil, err
	}
	final := filepath.Join(s.dir, entryName(m.Function, m.Version))
	s.mu.Lock()
	defer s.mu.Unlock()
	old := final + ".old"
	_ = os.RemoveAll(old)
	if err := os.Rename(final, old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.Discard(imagePath)
		return nil, nil, err
	}
	if err := os.Rename(tmp, final); err != nil {
		s.Discard(imagePath)
		return nil, nil, err
	}
	_ = os.RemoveAll(old)
	delete(s.verified, final)
	s.verified[final] = fingerprint(filepath.Join(final, imageDir)) // just computed
	e := &Entry{Meta: m, Dir: final}
	evicted := s.enforceLocked(final)
	return e, evicted, nil
}

func writeFileSync(p string, b []byte) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Get returns the stored snapshot of a function version, or ErrNotFound.
// A metadata file that cannot be read is ErrCorrupt. Get does not verify
// the image: see Verify.
func (s *Store) Get(function string, version int) (*Entry, error) {
	dir := filepath.Join(s.dir, entryName(function, version))
	return s.load(dir)
}

func (s *Store) load(dir string) (*Entry, error) {
	b, err := os.ReadFile(filepath.Join(dir, metaFile))
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(dir); serr == nil {
			return &Entry{Dir: dir}, fmt.Errorf("%w: %s: no metadata", ErrCorrupt, dir)
		}
		return nil, ErrNotFound
	}
	if err != nil {
		return &Entry{Dir: dir}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil || m.Function == "" || m.SHA256 == "" {
		return &Entry{Dir: dir}, fmt.Errorf("%w: %s: bad metadata", ErrCorrupt, dir)
	}
	return &Entry{Meta: m, Dir: dir}, nil
}

// Verify checks that the entry can be restored here: taken with the same
// CRIU version on the same kernel release, and its files as they were
// (count, sizes and SHA-256). The full checksum is computed once per
// entry and process; later calls compare the files' sizes and change
// times with those seen at that check, so a restore does not hash the
// whole image every time.
func (s *Store) Verify(e *Entry, env Env) error {
	if e.CRIUVersion != env.CRIUVersion || e.Kernel != env.Kernel {
		return fmt.Errorf("%w: taken with CRIU %q on kernel %q, this node has CRIU %q on kernel %q",
			ErrForeign, e.CRIUVersion, e.Kernel, env.CRIUVersion, env.Kernel)
	}
	img := e.ImagePath()
	fp := fingerprint(img)
	s.mu.Lock()
	known := s.verified[e.Dir]
	s.mu.Unlock()
	if fp != "" && fp == known {
		return nil
	}
	sum, size, files, err := checksum(img)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if files != e.Files || size != e.Size {
		return fmt.Errorf("%w: %d files of %d bytes, metadata says %d files of %d bytes", ErrCorrupt, files, size, e.Files, e.Size)
	}
	if sum != e.SHA256 {
		return fmt.Errorf("%w: checksum %s, metadata says %s", ErrCorrupt, sum, e.SHA256)
	}
	s.mu.Lock()
	s.verified[e.Dir] = fp
	s.mu.Unlock()
	return nil
}

// Remove deletes the snapshot of a function version, if any.
func (s *Store) Remove(function string, version int) error {
	return s.removeDir(filepath.Join(s.dir, entryName(function, version)))
}

func (s *Store) removeDir(dir string) error {
	s.mu.Lock()
	delete(s.verified, dir)
	s.mu.Unlock()
	// Rename first, so a concurrent Get never sees half a folder.
	gone := filepath.Join(s.dir, ".tmp-gone-"+filepath.Base(dir))
	if err := os.Rename(dir, gone); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	return os.RemoveAll(gone)
}

// List returns every entry, oldest first. Entries whose metadata cannot
// be read are listed with an empty Meta (Function "").
func (s *Store) List() []Entry {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return nil
	}
	var out []Entry
	for _, d := range des {
		if !d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			continue
		}
		e, err := s.load(filepath.Join(s.dir, d.Name()))
		if e == nil {
			continue
		}
		if err != nil {
			e.Meta = Meta{}
		}
		out = append(out, *e)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out
}

// Collect removes the entries keep says no to (their function version
// is gone) and those whose metadata is unreadable, and returns them.
func (s *Store) Collect(keep func(function string, version int) bool) []Meta {
	var removed []Meta
	for _, e := range s.List() {
		if e.Function != "" && keep(e.Function, e.Version) {
			continue
		}
		if s.removeDir(e.Dir) == nil {
			removed = append(removed, e.Meta)
		}
	}
	return removed
}

// Size is the total size of the stored image files.
func (s *Store) Size() int64 {
	var n int64
	for _, e := range s.List() {
		n += e.Size
	}
	return n
}

// enforceLocked removes the oldest entries other than keepDir until the
// store is within its budget.
func (s *Store) enforceLocked(keepDir string) []Meta {
	list := s.List()
	var total int64
	for _, e := range list {
		total += e.Size
	}
	var evicted []Meta
	for _, e := range list {
		if total <= s.budget {
			break
		}
		if e.Dir == keepDir {
			continue
		}
		s.mu.Unlock()
		err := s.removeDir(e.Dir)
		s.mu.Lock()
		if err == nil {
			total -= e.Size
			evicted = append(evicted, e.Meta)
		}
	}
	return evicted
}

// checksum hashes every regular file under dir: relative path, size and
// content, in path order.
func checksum(dir string) (sum string, size int64, files int, err error) {
	h := sha256.New()
	err = walkFiles(dir, func(rel string, p string, fi fs.FileInfo) error {
		files++
		size += fi.Size()
		fmt.Fprintf(h, "%s\x00%d\x00", rel, fi.Size())
		return hashFile(h, p, fi.Size())
	})
	if err != nil {
		return "", 0, 0, err
	}
	if files == 0 {
		return "", 0, 0, fmt.Errorf("no image files in %s", dir)
	}
	return hex.EncodeToString(h.Sum(nil)), size, files, nil
}

func hashFile(h hash.Hash, p string, size int64) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("%s changed while being read", p)
	}
	return nil
}

// fingerprint is a cheap summary of the files under dir (names, sizes,
// change times), "" when dir cannot be read.
func fingerprint(dir string) string {
	h := sha256.New()
	err := walkFiles(dir, func(rel string, _ string, fi fs.FileInfo) error {
		fmt.Fprintf(h, "%s\x00%d\x00%d\x00", rel, fi.Size(), fi.ModTime().UnixNano())
		if st, ok := ctime(fi); ok {
			fmt.Fprintf(h, "%d\x00", st)
		}
		return nil
	})
	if err != nil {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))
}

func walkFiles(dir string, fn func(rel, p string, fi fs.FileInfo) error) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		return fn(filepath.ToSlash(rel), p, fi)
	})
}
