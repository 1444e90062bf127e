package bench

import (
	"bufio"
	"os"
	"os/exec"
	"runtime"
	"strings"
)

// Machine describes where the figures were taken.
type Machine struct {
	Cores      int
	CPU        string // model name
	OS         string // PRETTY_NAME of /etc/os-release
	Kernel     string
	Containerd string
	Runc       string
	CRIU       string
	Go         string
	Commit     string // HEAD, "+ uncommitted changes" when the tree is dirty
	Load       string // /proc/loadavg's first three fields
}

// Describe gathers Machine; repo is the git checkout. What cannot be
// found reads "unknown" (or "not installed" for the tools).
func Describe(repo string) Machine {
	m := Machine{Cores: runtime.NumCPU(), CPU: "unknown", OS: "unknown", Go: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH}
	m.Kernel = firstLine(readFile("/proc/sys/kernel/osrelease"), "unknown")
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	for _, l := range strings.Split(readFile("/etc/os-release"), "\n") {
		if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
			m.OS = strings.Trim(v, `"`)
		}
	}
	m.Containerd = tool("containerd", "--version")
	m.Runc = tool("runc", "--version")
	m.CRIU = tool("criu", "--version")
	if out, err := exec.Command("go", "version").Output(); err == nil {
		m.Go = strings.TrimPrefix(strings.TrimSpace(string(out)), "go version ")
	}
	m.Commit = "unknown"
	if out, err := gitOut(repo, "rev-parse", "HEAD"); err == nil {
		m.Commit = out
		if st, err := gitOut(repo, "status", "--porcelain"); err == nil && st != "" {
			m.Commit += " + uncommitted changes"
		}
	}
	m.Load = LoadAvg()
	return m
}

// LoadAvg is the 1, 5 and 15 minute load averages.
func LoadAvg() string {
	f := strings.Fields(readFile("/proc/loadavg"))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func gitOut(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}

// tool is the version a tool prints: containerd's third and fourth word,
// runc's and criu's first line.
func tool(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "not installed"
	}
	l := firstLine(string(out), "unknown")
	if f := strings.Fields(l); name == "containerd" && len(f) >= 3 {
		return f[2]
	}
	l = strings.TrimPrefix(l, "runc version ")
	l = strings.TrimPrefix(l, "Version: ")
	return l
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func firstLine(s, def string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if s == "" {
		return def
	}
	return s
}
