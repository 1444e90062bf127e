package snapshots

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// MinCRIU is the oldest CRIU that works here: 4.1 cannot dump IPv4
// sockets on kernels from 6.16 on (criu issues 2705 and 2718).
const MinCRIU = "4.2"

var versionRe = regexp.MustCompile(`(?m)^Version:\s*(\d+)\.(\d+)(?:\.(\d+))?`)

// Probe finds out whether CRIU can take and restore snapshots on this
// node: criu on PATH, version MinCRIU or newer, and `criu check` passing.
// It returns the node's Env, or an error whose text says why not in one
// line an operator understands.
func Probe(ctx context.Context) (Env, error) {
	var env Env
	kernel, err := KernelRelease()
	if err != nil {
		return env, err
	}
	env.Kernel = kernel
	bin, err := exec.LookPath("criu")
	if err != nil {
		return env, fmt.Errorf("criu is not installed (run .ci/install-deps as root for criu >= %s)", MinCRIU)
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil {
		return env, fmt.Errorf("%s --version: %v: %s", bin, err, firstLine(out))
	}
	m := versionRe.FindSubmatch(out)
	if m == nil {
		return env, fmt.Errorf("%s --version: no version in %q", bin, firstLine(out))
	}
	major, _ := strconv.Atoi(string(m[1]))
	minor, _ := strconv.Atoi(string(m[2]))
	env.CRIUVersion = strings.TrimPrefix(strings.TrimSpace(string(bytes.SplitN(m[0], []byte(":"), 2)[1])), " ")
	if major < 4 || major == 4 && minor < 2 {
		return env, fmt.Errorf("criu %s is too old: %s or newer is needed (run .ci/install-deps as root)", env.CRIUVersion, MinCRIU)
	}
	out, err = exec.CommandContext(ctx, bin, "check").CombinedOutput()
	if err != nil {
		return env, fmt.Errorf("criu %s check fails on kernel %s: %s", env.CRIUVersion, kernel, lastLine(out))
	}
	return env, nil
}

// KernelRelease is uname -r.
func KernelRelease() (string, error) {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	var b strings.Builder
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	return b.String(), nil
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

func ctime(fi fs.FileInfo) (int64, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Ctim.Sec*1e9 + st.Ctim.Nsec, true
}
