package snapshots

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Cause is why a CRIU dump or restore failed, in words an operator acts
// on: what is missing and how to get it.
type Cause struct {
	Problem string // "criu's network lock needs iptables-restore"
	Fix     string // "apt-get install iptables"; "" when there is none to give
}

func (c Cause) String() string {
	if c.Fix == "" {
		return c.Problem
	}
	return c.Problem + ": " + c.Fix
}

// ErrCRIU marks a failed CRIU dump or restore.
var ErrCRIU = errors.New("criu failed")

// CRIUError is a failed CRIU dump or restore: its one-line cause, the
// path of CRIU's full log (kept for the operator) and the error that the
// runtime or criu returned.
type CRIUError struct {
	Op    string // "dump" or "restore"
	Cause Cause
	Log   string // CRIU's log; "" when there is none
	Err   error
}

func (e *CRIUError) Error() string {
	s := "criu " + e.Op + ": " + e.Cause.String()
	if e.Log != "" {
		s += " (criu log: " + e.Log + ")"
	}
	return s
}

func (e *CRIUError) Unwrap() []error { return []error{ErrCRIU, e.Err} }

// programFix names the Debian package for the programs CRIU runs (the
// same list as .ci/programs, which .ci/install-deps installs from).
var programFix = map[string]string{
	"iptables-restore":  "apt-get install iptables",
	"ip6tables-restore": "apt-get install iptables",
	"iptables-save":     "apt-get install iptables",
	"ip6tables-save":    "apt-get install iptables",
	"ip":                "apt-get install iproute2",
	"tar":               "apt-get install tar",
}

// CRIUPrograms are the programs CRIU itself runs during the dumps and
// restores amber asks for: the network lock (iptables-restore, and
// ip6tables-restore for IPv6), the network namespace dump (ip route/rule
// save, iptables-save) and the contents of tmpfs mounts (tar). Each must be
// listed in .ci/programs (a test checks).
func CRIUPrograms() []string {
	out := make([]string, 0, len(programFix))
	for p := range programFix {
		out = append(out, p)
	}
	return out
}

var execvpRe = regexp.MustCompile(`execvp\("([^"]+)"`)

// causes are known CRIU failures, first match wins. Each was seen on
// machines of this kind (see ENVIRONMENT notes) or is CRIU's own wording.
var causes = []struct {
	match string
	cause Cause
}{
	{"Unsupported proto 262", Cause{"the process listens with MPTCP, which criu cannot dump", "listen with SetMultipathTCP(false)"}},
	{"Can't get 1:16 opt", Cause{"this criu cannot dump IPv4 sockets on kernels from 6.16 on", "run .ci/install-deps for criu >= " + MinCRIU}},
	{"Unexpected rt vDSO area bounds", Cause{"this criu does not know this kernel's vDSO", "run .ci/install-deps for criu >= " + MinCRIU}},
	{"Can't get rlimit", Cause{"criu lacks CAP_SYS_RESOURCE to read another uid's limits", "run the agent with CAP_SYS_RESOURCE"}},
	{"Can't connect inet socket back", Cause{"the restored network namespace has loopback down", "bring lo up in the instance's namespace before restore"}},
	{"No space left on device", Cause{"no space left on the snapshot store's disk", "free space under the agent's state folder"}},
}

// Diagnose reads a CRIU log and says what went wrong in one line, from
// its error lines (the whole log when it has none). A failure it does not
// know is CRIU's first error line.
func Diagnose(log []byte) Cause {
	var errLines [][]byte
	for _, l := range bytes.Split(log, []byte("\n")) {
		if bytes.Contains(l, []byte("Error")) {
			errLines = append(errLines, bytes.TrimSpace(l))
		}
	}
	if len(errLines) > 0 {
		log = bytes.Join(errLines, []byte("\n"))
	}
	if m := execvpRe.FindSubmatch(log); m != nil {
		prog := string(m[1])
		problem := "criu needs " + prog
		if strings.HasPrefix(prog, "ip") && strings.Contains(prog, "tables") {
			problem = "criu's network lock needs " + prog
		}
		fix := programFix[prog]
		if fix == "" {
			fix = "install it (see .ci/programs)"
		}
		return Cause{problem, fix}
	}
	for _, c := range causes {
		if bytes.Contains(log, []byte(c.match)) {
			return c.cause
		}
	}
	if len(errLines) > 0 {
		return Cause{Problem: string(errLines[0])}
	}
	if len(bytes.TrimSpace(log)) == 0 {
		return Cause{Problem: "criu left no log"}
	}
	return Cause{Problem: lastLine(log)}
}

// maxKeptLogs bounds the CRIU logs KeepLog keeps in one folder.
const maxKeptLogs = 20

// KeepLog copies CRIU's log at src into keepDir (as name, made unique), so
// an operator can read it after the work folder is gone, and returns the
// failure for err: its cause read from the log, and the kept log's path.
// Only the newest maxKeptLogs logs are kept.
func KeepLog(op, src, keepDir, name string, err error) *CRIUError {
	e := &CRIUError{Op: op, Err: err}
	b, rerr := os.ReadFile(src)
	if rerr != nil {
		e.Cause = Cause{Problem: firstLine([]byte(err.Error()))}
		return e
	}
	e.Cause = Diagnose(b)
	if mkErr := os.MkdirAll(keepDir, 0o700); mkErr == nil {
		f, cerr := os.CreateTemp(keepDir, name+"-*.log")
		if cerr == nil {
			_, werr := f.Write(b)
			if f.Close() == nil && werr == nil {
				e.Log = f.Name()
			}
		}
		pruneLogs(keepDir)
	}
	if e.Log == "" {
		e.Log = src
	}
	return e
}

func pruneLogs(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) <= maxKeptLogs {
		return
	}
	type kept struct {
		path string
		mod  int64
	}
	var logs []kept
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			logs = append(logs, kept{filepath.Join(dir, e.Name()), fi.ModTime().UnixNano()})
		}
	}
	for len(logs) > maxKeptLogs {
		oldest := 0
		for i := range logs {
			if logs[i].mod < logs[oldest].mod {
				oldest = i
			}
		}
		_ = os.Remove(logs[oldest].path)
		logs = append(logs[:oldest], logs[oldest+1:]...)
	}
}
