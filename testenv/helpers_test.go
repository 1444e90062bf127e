package testenv_test

import (
	"io"
	"os"
	"path/filepath"

	"github.com/amberfn/amber/api/ociarchive"
)

func buildArchive(dir, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := ociarchive.Build(dir, f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func copyDir(src, dst string) error {
	return filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(target, fi.Mode().Perm())
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
}
