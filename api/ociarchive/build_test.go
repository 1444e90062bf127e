package ociarchive

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestBuildThenInspect(t *testing.T) {
	dir := fnDir(t)
	tests := []struct {
		name      string
		opts      []Option
		root      string // where the function lands, with trailing slash
		want      ImageConfig
		wantRef   string
		wantNames []string // directories the layer must hold before root
	}{
		{
			name: "defaults",
			root: "var/task/",
			want: ImageConfig{
				Entrypoint: []string{"/var/task/bootstrap"},
				Env:        []string{"PATH=" + defaultPath, "LAMBDA_TASK_ROOT=/var/task"},
				WorkingDir: "/var/task",
			},
			wantRef:   "latest",
			wantNames: []string{"tmp/", "var/", "var/task/"},
		},
		{
			name: "options",
			opts: []Option{
				WithPrefix("/opt/fn/"),
				WithEntrypoint("/opt/fn/bootstrap", "--serve"),
				WithEnv("PATH=/opt/fn:/bin", "GREETING=hi=there"),
				WithWorkingDir("/"),
				WithUser("1000:1000"),
				WithRefName("v7"),
				WithImageName("amber.local/fn/hello:v7"),
			},
			root: "opt/fn/",
			want: ImageConfig{
				Entrypoint: []string{"/opt/fn/bootstrap", "--serve"},
				Env:        []string{"PATH=/opt/fn:/bin", "LAMBDA_TASK_ROOT=/opt/fn", "GREETING=hi=there"},
				WorkingDir: "/",
				User:       "1000:1000",
			},
			wantRef:   "v7",
			wantNames: []string{"opt/", "opt/fn/", "tmp/"},
		},
		{
			name: "root prefix",
			opts: []Option{WithPrefix(""), WithRefName("")},
			root: "",
			want: ImageConfig{
				Entrypoint: []string{"/bootstrap"},
				Env:        []string{"PATH=" + defaultPath, "LAMBDA_TASK_ROOT=/"},
				WorkingDir: "/",
			},
			wantNames: []string{"tmp/"},
		},
		{
			name: "prefix cannot escape the root",
			opts: []Option{WithPrefix("../../x")},
			root: "x/",
			want: ImageConfig{
				Entrypoint: []string{"/x/bootstrap"},
				Env:        []string{"PATH=" + defaultPath, "LAMBDA_TASK_ROOT=/x"},
				WorkingDir: "/x",
			},
			wantRef:   "latest",
			wantNames: []string{"tmp/", "x/"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			built, err := Build(dir, &buf, tt.opts...)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			if !reflect.DeepEqual(built.Config, tt.want) {
				t.Errorf("Build config = %+v, want %+v", built.Config, tt.want)
			}
			got, err := Inspect(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
			if err != nil {
				t.Fatalf("Inspect: %v", err)
			}
			if !reflect.DeepEqual(got, built) {
				t.Errorf("Inspect = %+v\nBuild   = %+v", got, built)
			}
			if got.RefName != tt.wantRef {
				t.Errorf("RefName = %q, want %q", got.RefName, tt.wantRef)
			}
			if !strings.HasPrefix(got.ManifestDigest, "sha256:") || got.Size <= 0 {
				t.Errorf("digest %q size %d", got.ManifestDigest, got.Size)
			}

			hdrs, content := layerOf(t, buf.Bytes())
			var names []string
			byName := map[string]*tar.Header{}
			for _, h := range hdrs {
				names = append(names, h.Name)
				byName[h.Name] = h
				if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(time.Unix(0, 0)) || h.Uname != "" {
					t.Errorf("%s: uid %d gid %d uname %q mtime %v, want root and the epoch", h.Name, h.Uid, h.Gid, h.Uname, h.ModTime)
				}
			}
			if !slices.IsSorted(names) {
				t.Errorf("layer entries not sorted: %v", names)
			}
			for _, n := range tt.wantNames {
				if h := byName[n]; h == nil || h.Typeflag != tar.TypeDir {
					t.Errorf("layer lacks directory %s: %v", n, names)
				}
			}
			if h := byName["tmp/"]; h == nil || h.Mode != 0o1777 {
				t.Errorf("tmp/ = %+v, want mode 1777", h)
			}
			r := tt.root
			want := []struct {
				name string
				typ  byte
				mode int64
				link string
			}{
				{r + "bootstrap", tar.TypeReg, 0o755, ""},
				{r + "config.txt", tar.TypeReg, 0o644, ""},
				{r + "helper", tar.TypeSymlink, 0o777, "lib/helper.sh"},
				{r + "lib/", tar.TypeDir, 0o750, ""},
				{r + "lib/deep/data.json", tar.TypeReg, 0o600, ""},
				{r + "lib/helper.sh", tar.TypeReg, 0o750, ""},
			}
			for _, w := range want {
				h := byName[w.name]
				if h == nil {
					t.Errorf("layer lacks %s: %v", w.name, names)
					continue
				}
				if h.Typeflag != w.typ || h.Mode != w.mode || h.Linkname != w.link {
					t.Errorf("%s: type %c mode %o link %q, want %c %o %q", w.name, h.Typeflag, h.Mode, h.Linkname, w.typ, w.mode, w.link)
				}
			}
			if c := content[r+"lib/deep/data.json"]; c != `{"a":1}` {
				t.Errorf("data.json = %q", c)
			}
		})
	}
}

func TestBuildDeterministic(t *testing.T) {
	dir := fnDir(t)
	build := func(dir string) ([]byte, *Image) {
		t.Helper()
		var buf bytes.Buffer
		img, err := Build(dir, &buf)
		if err != nil {
			t.Fatal(err)
		}
		return buf.Bytes(), img
	}
	first, img1 := build(dir)
	second, img2 := build(dir)
	if !bytes.Equal(first, second) || img1.ManifestDigest != img2.ManifestDigest {
		t.Fatalf("two builds of one dir differ: %s vs %s", img1.ManifestDigest, img2.ManifestDigest)
	}

	// New timestamps and another path, same content: same image.
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "config.txt"), later, later); err != nil {
		t.Fatal(err)
	}
	moved := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	if third, img3 := build(moved); !bytes.Equal(first, third) {
		t.Errorf("touched and moved dir gives %s, want %s", img3.ManifestDigest, img1.ManifestDigest)
	}

	// Different content: different image.
	if err := os.WriteFile(filepath.Join(moved, "config.txt"), []byte("x=2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, img4 := build(moved); img4.ManifestDigest == img1.ManifestDigest {
		t.Error("changed content gives the same digest")
	}
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string)
		opts    []Option
		wantErr error
		wantMsg string // with DIR replaced by the directory
	}{
		{
			name:    "no bootstrap",
			setup:   func(t *testing.T, dir string) { writeFile(t, dir, "main", 0o755) },
			wantErr: ErrNoBootstrap,
			wantMsg: "bootstrap: not found in DIR",
		},
		{
			name:    "bootstrap not executable",
			setup:   func(t *testing.T, dir string) { writeFile(t, dir, "bootstrap", 0o644) },
			wantErr: ErrNoBootstrap,
			wantMsg: "bootstrap: not executable",
		},
		{
			name: "bootstrap is a directory",
			setup: func(t *testing.T, dir string) {
				if err := os.Mkdir(filepath.Join(dir, "bootstrap"), 0o755); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrNoBootstrap,
			wantMsg: "bootstrap: not a regular file",
		},
		{
			name: "bootstrap is a symlink",
			setup: func(t *testing.T, dir string) {
				writeFile(t, dir, "real", 0o755)
				if err := os.Symlink("real", filepath.Join(dir, "bootstrap")); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrNoBootstrap,
			wantMsg: "bootstrap: not a regular file",
		},
		{
			name: "dir missing",
			setup: func(t *testing.T, dir string) {
				if err := os.Remove(dir); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrInvalid,
		},
		{
			name:    "env without =",
			setup:   func(t *testing.T, dir string) { writeFile(t, dir, "bootstrap", 0o755) },
			opts:    []Option{WithEnv("NOVALUE")},
			wantErr: ErrInvalid,
			wantMsg: `WithEnv("NOVALUE")`,
		},
		{
			name:    "empty entrypoint",
			setup:   func(t *testing.T, dir string) { writeFile(t, dir, "bootstrap", 0o755) },
			opts:    []Option{WithEntrypoint()},
			wantErr: ErrInvalid,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(t, dir)
			var buf bytes.Buffer
			_, err := Build(dir, &buf, tt.opts...)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Build error = %v, want %v", err, tt.wantErr)
			}
			if msg := strings.ReplaceAll(tt.wantMsg, "DIR", dir); !strings.Contains(err.Error(), msg) {
				t.Errorf("error %q does not say %q", err, msg)
			}
			if buf.Len() != 0 {
				t.Errorf("wrote %d bytes on error", buf.Len())
			}
		})
	}
}

func writeFile(t *testing.T, dir, name string, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("x"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func ExampleBuild() {
	dir, _ := os.MkdirTemp("", "fn")
	defer os.RemoveAll(dir)
	os.WriteFile(filepath.Join(dir, "bootstrap"), []byte("#!/bin/sh\n"), 0o755)

	var archive bytes.Buffer
	img, err := Build(dir, &archive, WithRefName("v1"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(img.Config.Entrypoint, img.Config.WorkingDir)
	// Output: [/var/task/bootstrap] /var/task
}
