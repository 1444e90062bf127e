package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// GoBench is one result line of `go test -bench`.
type GoBench struct {
	Pkg     string             // import path
	Name    string             // BenchmarkX, without the -GOMAXPROCS suffix
	N       int                // iterations
	Metrics map[string]float64 // unit → value: "ns/op", "decisions/s", …
}

// RunGoBench runs `go test -run '^$' -bench PATTERN -benchtime BENCHTIME
// -benchmem -count 1 -p 1 PKGS...` in dir (one package at a time, so they do not
// compete for the CPU) and parses its result lines.
func RunGoBench(ctx context.Context, dir, pattern, benchtime string, pkgs ...string) ([]GoBench, string, error) {
	args := append([]string{"test", "-run", "^$", "-bench", pattern, "-benchtime", benchtime, "-benchmem", "-count", "1", "-p", "1"}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	line := "go " + strings.Join(args, " ")
	if err != nil {
		return nil, line, fmt.Errorf("%s: %v\n%s", line, err, out)
	}
	res := ParseGoBench(out)
	if len(res) == 0 {
		return nil, line, fmt.Errorf("%s: no benchmark results\n%s", line, out)
	}
	return res, line, nil
}

// ParseGoBench reads the result lines of `go test -bench` output.
func ParseGoBench(out []byte) []GoBench {
	var res []GoBench
	pkg := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "pkg:" {
			pkg = f[1]
			continue
		}
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		g := GoBench{Pkg: pkg, Name: name, N: n, Metrics: map[string]float64{}}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			g.Metrics[f[i+1]] = v
		}
		res = append(res, g)
	}
	return res
}

// Find returns the result of the benchmark named name, if any.
func Find(rs []GoBench, name string) (GoBench, bool) {
	for _, r := range rs {
		if r.Name == name {
			return r, true
		}
	}
	return GoBench{}, false
}
