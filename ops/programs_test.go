package ops

import (
	"bufio"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/amberfn/amber/snapshots"
)

// listedPrograms reads .ci/programs: program → package.
func listedPrograms(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("../.ci/programs")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		if len(fields) < 3 {
			t.Fatalf(".ci/programs: %q wants: program package who-runs-it", sc.Text())
		}
		out[fields[0]] = fields[1]
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// launchers run the program named by their first plain argument.
var launchers = map[string]bool{"unshare": true, "nsenter": true, "timeout": true}

// programsRun finds the programs the code starts by name: the first
// argument of exec.Command, exec.CommandContext and exec.LookPath when it
// is a string literal, the program a launcher (unshare, nsenter) runs, and
// the names in a []string literal ranged over to look each one up.
func programsRun(t *testing.T, root string) map[string][]string {
	t.Helper()
	found := map[string][]string{}
	add := func(name string, pos token.Position) {
		found[name] = append(found[name], pos.String())
	}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") && path != root || d.Name() == "bin") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		file, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(file, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "exec" {
					return true
				}
				args := n.Args
				switch sel.Sel.Name {
				case "CommandContext":
					if len(args) > 0 {
						args = args[1:]
					}
				case "Command", "LookPath":
				default:
					return true
				}
				lits := stringLits(args)
				if len(lits) == 0 || lits[0].index != 0 {
					return true
				}
				add(lits[0].value, fset.Position(n.Pos()))
				if launchers[lits[0].value] {
					for _, l := range lits[1:] {
						if !strings.HasPrefix(l.value, "-") {
							add(l.value, fset.Position(n.Pos()))
							break
						}
					}
				}
			case *ast.RangeStmt:
				// for _, bin := range []string{"containerd", …} { exec.LookPath(bin) }
				cl, ok := n.X.(*ast.CompositeLit)
				if !ok || !usesLookPath(n.Body) {
					return true
				}
				for _, l := range stringLits(cl.Elts) {
					add(l.value, fset.Position(n.Pos()))
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

type lit struct {
	index int
	value string
}

func stringLits(exprs []ast.Expr) []lit {
	var out []lit
	for i, e := range exprs {
		b, ok := e.(*ast.BasicLit)
		if !ok || b.Kind != token.STRING {
			continue
		}
		if v, err := strconv.Unquote(b.Value); err == nil {
			out = append(out, lit{i, v})
		}
	}
	return out
}

func usesLookPath(body *ast.BlockStmt) bool {
	found := false
	ast.Inspect(body, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok && sel.Sel.Name == "LookPath" {
			found = true
		}
		return !found
	})
	return found
}

// TestProgramsListed: every program the code runs by name, and every
// program CRIU runs for amber's dumps and restores, is in .ci/programs,
// which .ci/install-deps installs from.
func TestProgramsListed(t *testing.T) {
	listed := listedPrograms(t)
	run := programsRun(t, "..")
	for _, must := range []string{"unshare", "ip", "containerd", "runc", "tmux", "systemctl"} {
		if _, ok := run[must]; !ok {
			t.Errorf("the scan no longer finds %s being run: is the scan broken?", must)
		}
	}
	for _, p := range snapshots.CRIUPrograms() {
		run[p] = append(run[p], "snapshots.CRIUPrograms (run by criu)")
	}
	var names []string
	for p := range run {
		names = append(names, p)
	}
	slices.Sort(names)
	for _, p := range names {
		if _, ok := listed[p]; !ok {
			t.Errorf("%s is run (%s) but not listed in .ci/programs: add it with its Debian package", p, strings.Join(run[p], ", "))
		}
	}
}

func TestProgramsScan(t *testing.T) {
	dir := t.TempDir()
	src := `package x
import ("context"; "os/exec")
func f(ctx context.Context, p string) {
	exec.Command("alpha", "-x")
	exec.CommandContext(ctx, "beta")
	exec.Command("unshare", "--net="+p, "gamma", "link")
	exec.Command(p, "delta")
	for _, b := range []string{"epsilon", "zeta"} { exec.LookPath(b) }
	for _, b := range []string{"not-a-program"} { _ = b }
}
`
	if err := os.WriteFile(filepath.Join(dir, "x.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	got := programsRun(t, dir)
	var names []string
	for p := range got {
		names = append(names, p)
	}
	slices.Sort(names)
	want := []string{"alpha", "beta", "epsilon", "gamma", "unshare", "zeta"}
	if !slices.Equal(names, want) {
		t.Errorf("scan found %v, want %v", names, want)
	}
}
