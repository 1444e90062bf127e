package snapshots_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/amberfn/amber/snapshots"
	"github.com/amberfn/amber/testenv"
)

// TestMain doubles as the trial's child process (what amber's hidden
// criu-trial-child command runs).
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == snapshots.TrialChildCommand {
		if err := snapshots.TrialChild(os.Args[2]); err != nil {
			os.Exit(3)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func requireCRIU(t *testing.T) {
	t.Helper()
	if !testenv.CRIUExpected() {
		t.Skip("CRIU is not expected on this machine (AMBER_NO_CRIU=1 or not x86_64)")
	}
	testenv.Require(t, testenv.CheckCRIU())
}

func trialConfig(t *testing.T) snapshots.TrialConfig {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return snapshots.TrialConfig{Dir: filepath.Join(t.TempDir(), "trial"), Child: []string{exe, snapshots.TrialChildCommand}}
}

// TestTrial: on a machine .ci/install-deps prepared, a process holding an
// established loopback connection in an agent-made namespace is dumped,
// restored and talks again, and the trial leaves nothing behind.
func TestTrial(t *testing.T) {
	requireCRIU(t)
	cfg := trialConfig(t)
	if err := snapshots.Trial(t.Context(), cfg); err != nil {
		t.Fatalf("trial: %v", err)
	}
	if _, err := os.Stat(cfg.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("trial folder left behind: %v", err)
	}
}

// TestTrialWithoutIptables hides iptables-restore from criu (a mount
// namespace with /dev/null over it), as on a machine without Debian's
// iptables: the trial fails naming the program and the package.
func TestTrialWithoutIptables(t *testing.T) {
	requireCRIU(t)
	bin, err := exec.LookPath("iptables-restore")
	if err != nil {
		t.Fatalf("iptables-restore is not installed (.ci/install-deps installs it): %v", err)
	}
	real, err := filepath.EvalSymlinks(bin)
	if err != nil {
		t.Fatal(err)
	}
	criu, err := exec.LookPath("criu")
	if err != nil {
		t.Fatal(err)
	}
	cfg := trialConfig(t)
	wrapper := filepath.Join(t.TempDir(), "criu")
	script := "#!/bin/sh\nexec unshare -m --propagation private sh -c 'mount --bind /dev/null " + real + " && exec \"$0\" \"$@\"' " + criu + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg.CRIU = wrapper
	err = snapshots.Trial(context.Background(), cfg)
	var ce *snapshots.CRIUError
	if !errors.As(err, &ce) {
		t.Fatalf("trial without iptables-restore: want a CRIUError, got %v", err)
	}
	if !errors.Is(err, snapshots.ErrCRIU) {
		t.Errorf("%v does not wrap ErrCRIU", err)
	}
	want := "criu's network lock needs iptables-restore: apt-get install iptables"
	if got := ce.Cause.String(); got != want {
		t.Errorf("cause = %q, want %q (log %s)", got, want, ce.Log)
	}
	if b, err := os.ReadFile(ce.Log); err != nil || !strings.Contains(string(b), "iptables-restore") {
		t.Errorf("kept log %s: %v", ce.Log, err)
	}
}

func TestDiagnose(t *testing.T) {
	for _, tc := range []struct {
		name, log, want string
	}{
		{"network lock", "(00.01) Warn (a.c:1): x\n(00.02) Error (criu/util.c:640): execvp(\"iptables-restore\", ...) failed: No such file or directory\n(00.02) Error (criu/net.c:3096): net: Locking network failed: iptables-restore returned -1.\n",
			"criu's network lock needs iptables-restore: apt-get install iptables"},
		{"ip tool", "Error (criu/util.c:640): execvp(\"ip\", ...) failed: No such file or directory\n", "criu needs ip: apt-get install iproute2"},
		{"unknown program", "Error (criu/util.c:640): execvp(\"frob\", ...) failed\n", "criu needs frob: install it (see .ci/programs)"},
		{"mptcp", "(00.1) Error (criu/sk-inet.c:1): inet: Unsupported proto 262 for socket 1\n", "the process listens with MPTCP, which criu cannot dump: listen with SetMultipathTCP(false)"},
		{"old criu", "Error (criu/sockets.c:1): sockets: Can't get 1:16 opt: Operation not supported\n", "this criu cannot dump IPv4 sockets on kernels from 6.16 on: run .ci/install-deps for criu >= 4.2"},
		{"a match outside error lines is ignored", "Info: No space left on device is fine\n(00.3) Error (criu/cr-dump.c:9): Dumping FAILED.\n", "(00.3) Error (criu/cr-dump.c:9): Dumping FAILED."},
		{"no error lines", "one\ntwo\n", "two"},
		{"empty", "", "criu left no log"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := snapshots.Diagnose([]byte(tc.log)).String(); got != tc.want {
				t.Errorf("Diagnose = %q, want %q", got, tc.want)
			}
		})
	}
}
