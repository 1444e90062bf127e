package snapshots

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var here = Env{CRIUVersion: "4.2.1", Kernel: "6.18.0-test"}

// take stores a fake snapshot of fn@version with the given image files.
func take(t *testing.T, s *Store, fn string, version int, files map[string]string, created time.Time) *Entry {
	t.Helper()
	img, err := s.Prepare(fn, version)
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		p := filepath.Join(img, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e, _, err := s.Commit(img, Meta{Function: fn, Version: version, ImageDigest: "sha256:abc",
		CRIUVersion: here.CRIUVersion, Kernel: here.Kernel, Created: created, TakeTime: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestVerify(t *testing.T) {
	files := map[string]string{"pages-1.img": strings.Repeat("p", 4096), "core-1.img": "core", "sub/tmpfs.img": "t"}
	tests := []struct {
		name    string
		damage  func(t *testing.T, e *Entry)
		env     Env
		fresh   bool // verify in a new Store (no cached verification)
		wantErr error
	}{
		{name: "intact", wantErr: nil},
		{name: "intact, fresh store", fresh: true, wantErr: nil},
		{name: "truncated page file", fresh: true, wantErr: ErrCorrupt, damage: func(t *testing.T, e *Entry) {
			if err := os.Truncate(filepath.Join(e.ImagePath(), "pages-1.img"), 100); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "truncated, same store (fingerprint changes)", wantErr: ErrCorrupt, damage: func(t *testing.T, e *Entry) {
			if err := os.Truncate(filepath.Join(e.ImagePath(), "pages-1.img"), 0); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "flipped byte, same size", fresh: true, wantErr: ErrCorrupt, damage: func(t *testing.T, e *Entry) {
			p := filepath.Join(e.ImagePath(), "core-1.img")
			if err := os.WriteFile(p, []byte("cora"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "missing file", fresh: true, wantErr: ErrCorrupt, damage: func(t *testing.T, e *Entry) {
			if err := os.Remove(filepath.Join(e.ImagePath(), "sub", "tmpfs.img")); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "extra file", fresh: true, wantErr: ErrCorrupt, damage: func(t *testing.T, e *Entry) {
			if err := os.WriteFile(filepath.Join(e.ImagePath(), "extra.img"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "other kernel", env: Env{CRIUVersion: "4.2.1", Kernel: "6.19.0"}, wantErr: ErrForeign},
		{name: "other criu", env: Env{CRIUVersion: "4.3", Kernel: here.Kernel}, wantErr: ErrForeign},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, 0)
			if err != nil {
				t.Fatal(err)
			}
			take(t, s, "fn", 1, files, time.Time{})
			e, err := s.Get("fn", 1)
			if err != nil {
				t.Fatal(err)
			}
			if tt.damage != nil {
				tt.damage(t, e)
			}
			if tt.fresh {
				if s, err = Open(dir, 0); err != nil {
					t.Fatal(err)
				}
			}
			env := here
			if tt.env != (Env{}) {
				env = tt.env
			}
			err = s.Verify(e, env)
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestGetBadMetadata(t *testing.T) {
	tests := []struct {
		name    string
		meta    *string // nil: no meta.json
		wantErr error
	}{
		{name: "no entry", wantErr: ErrNotFound},
		{name: "missing metadata", meta: nil, wantErr: ErrCorrupt},
		{name: "truncated metadata", meta: ptr(`{"function":"fn","vers`), wantErr: ErrCorrupt},
		{name: "empty metadata", meta: ptr(`{}`), wantErr: ErrCorrupt},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(t.TempDir(), 0)
			if err != nil {
				t.Fatal(err)
			}
			if i > 0 {
				e := take(t, s, "fn", 1, map[string]string{"a.img": "a"}, time.Time{})
				mp := filepath.Join(e.Dir, metaFile)
				if tt.meta == nil {
					os.Remove(mp)
				} else if err := os.WriteFile(mp, []byte(*tt.meta), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.Get("fn", 1); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Get = %v, want %v", err, tt.wantErr)
			}
			if i > 0 {
				// Collect removes entries with unreadable metadata.
				if got := s.Collect(func(string, int) bool { return true }); len(got) != 1 {
					t.Errorf("Collect removed %d, want 1", len(got))
				}
				if _, err := s.Get("fn", 1); !errors.Is(err, ErrNotFound) {
					t.Errorf("after Collect: Get = %v", err)
				}
			}
		})
	}
}

func ptr(s string) *string { return &s }

func TestRemoveAndCollect(t *testing.T) {
	s, err := Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	for v := 1; v <= 3; v++ {
		take(t, s, "fn", v, map[string]string{"a.img": "x"}, time.Time{})
	}
	take(t, s, "other", 1, map[string]string{"a.img": "x"}, time.Time{})
	if err := s.Remove("fn", 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("fn", 2); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if _, err := s.Get("fn", 2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Remove = %v", err)
	}
	gone := s.Collect(func(fn string, v int) bool { return !(fn == "fn" && v == 1) })
	if len(gone) != 1 || gone[0].Function != "fn" || gone[0].Version != 1 {
		t.Fatalf("Collect = %+v", gone)
	}
	var left []string
	for _, e := range s.List() {
		left = append(left, entryName(e.Function, e.Version))
	}
	if strings.Join(left, ",") != "fn@3,other@1" {
		t.Errorf("left %v", left)
	}
}

func TestBudget(t *testing.T) {
	tests := []struct {
		name   string
		budget int64
		sizes  []int // each entry's size, taken in order (oldest first)
		want   []int // versions left
	}{
		{name: "within budget", budget: 100, sizes: []int{30, 30, 30}, want: []int{1, 2, 3}},
		{name: "oldest go first", budget: 100, sizes: []int{40, 40, 40}, want: []int{2, 3}},
		{name: "new entry over budget alone stays", budget: 100, sizes: []int{40, 150}, want: []int{2}},
		{name: "several evicted", budget: 100, sizes: []int{20, 20, 20, 90}, want: []int{4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(t.TempDir(), tt.budget)
			if err != nil {
				t.Fatal(err)
			}
			base := time.Now().Add(-time.Hour)
			for i, n := range tt.sizes {
				take(t, s, "fn", i+1, map[string]string{"pages.img": strings.Repeat("x", n)}, base.Add(time.Duration(i)*time.Minute))
			}
			var got []int
			for _, e := range s.List() {
				got = append(got, e.Version)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("left %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("left %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestOpenRemovesLeftovers(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	img, err := s.Prepare("fn", 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(img)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("leftover %s still there (%v)", img, err)
	}
}

func TestReplaceKeepsOne(t *testing.T) {
	s, err := Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	take(t, s, "fn", 1, map[string]string{"a.img": "old"}, time.Time{})
	e := take(t, s, "fn", 1, map[string]string{"a.img": "newer"}, time.Time{})
	if got := len(s.List()); got != 1 {
		t.Fatalf("%d entries, want 1", got)
	}
	if err := s.Verify(e, here); err != nil {
		t.Fatal(err)
	}
	if e.Size != 5 {
		t.Errorf("size %d", e.Size)
	}
}
