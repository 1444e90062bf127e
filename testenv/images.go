package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/amberfn/amber/api/ociarchive"
)

// ModuleRoot is the folder of amber's go.mod (tests run inside the module).
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the amber module")
	}
	return filepath.Dir(mod), nil
}

func goBuild(ctx context.Context, root, out, pkg string, extra ...string) error {
	args := append([]string{"build", "-trimpath", "-ldflags=-s", "-o", out}, extra...)
	cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// BuildInit builds the static amber-init into dir and returns its path.
func BuildInit(ctx context.Context, dir string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "amber-init")
	return out, goBuild(ctx, root, out, "./cmd/amber-init")
}

// BuildAmber builds the amber binary into dir and returns its path (for
// clusters with several scheduler processes).
func BuildAmber(ctx context.Context, dir string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "amber")
	return out, goBuild(ctx, root, out, "./cmd/amber")
}

// BuildExample builds examples/NAME into an OCI image archive in dir and
// returns its path. Go examples are built with CGO off; examples with a
// stage.sh are staged by it.
func BuildExample(ctx context.Context, name, dir string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	src := filepath.Join(root, "examples", name)
	stage := filepath.Join(dir, "stage-"+name)
	if err := os.RemoveAll(stage); err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(src, "stage.sh")); err == nil {
		cmd := exec.CommandContext(ctx, "sh", filepath.Join(src, "stage.sh"), stage)
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("stage %s: %v\n%s", name, err, b)
		}
		return packStage(stage, filepath.Join(dir, name+".tar"))
	}
	return BuildGoFunction(ctx, "./examples/"+name, name, dir)
}

// BuildGoFunction builds the Go package pkg (a path relative to the module
// root) as a function's bootstrap and packs it into dir/NAME.tar.
func BuildGoFunction(ctx context.Context, pkg, name, dir string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	stage := filepath.Join(dir, "stage-"+name)
	if err := os.RemoveAll(stage); err != nil {
		return "", err
	}
	if err := goBuild(ctx, root, filepath.Join(stage, "bootstrap"), pkg, "-tags", "lambda.norpc"); err != nil {
		return "", err
	}
	return packStage(stage, filepath.Join(dir, name+".tar"))
}

func packStage(stage, out string) (string, error) {
	f, err := os.Create(out)
	if err != nil {
		return "", err
	}
	if _, err := ociarchive.Build(stage, f); err != nil {
		f.Close()
		return "", fmt.Errorf("build image %s: %w", out, err)
	}
	return out, f.Close()
}
