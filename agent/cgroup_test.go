package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestParseProcCgroup(t *testing.T) {
	const v1 = `12:hugetlb:/
9:name=systemd:/
4:memory:/amber/fn-1
3:cpu,cpuacct:/amber/fn-1
0::/
`
	tests := []struct {
		name   string
		in     string
		v2     bool
		want   string
		wantOK bool
	}{
		{"v1 memory line", v1, false, "/amber/fn-1", true},
		{"v1 host asked for v2 gets the unified line", v1, true, "/", true},
		{"memory in a combined list", "5:cpu,memory:/amber/x\n", false, "/amber/x", true},
		{"v2 only", "0::/amber/fn-2\n", true, "/amber/fn-2", true},
		{"v2 file on a v1 reader", "0::/amber/fn-2\n", false, "", false},
		{"no memory controller", "3:cpu:/a\n1:name=systemd:/\n", false, "", false},
		{"path with colons", "4:memory:/a:b\n", false, "/a:b", true},
		{"empty", "", false, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseProcCgroup([]byte(tt.in), tt.v2)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("parseProcCgroup = %q, %v; want %q, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestParseMemoryMountpoint(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"hybrid host", `25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
36 31 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
37 31 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
`, "/sys/fs/cgroup/memory"},
		{"optional fields and an escaped space", "40 31 0:33 / /mnt/cg\\040mem rw - cgroup none rw,memory,cpu\n", "/mnt/cg mem"},
		{"unified only", "32 25 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n", ""},
		{"memory option on something that is not cgroup", "50 1 0:40 / /x rw - tmpfs tmpfs rw,memory\n", ""},
		{"garbage", "not a mountinfo line\n\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseMemoryMountpoint([]byte(tt.in)); got != tt.want {
				t.Errorf("parseMemoryMountpoint = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseFlatKeyed(t *testing.T) {
	tests := []struct {
		name string
		in   string
		key  string
		want uint64
		has  bool
	}{
		{"v1 oom_control after a kill", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill", 3, true},
		{"v1 oom_control on an old kernel", "oom_kill_disable 0\nunder_oom 0\n", "oom_kill", 0, false},
		{"v2 memory.events", "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n", "oom_kill", 1, true},
		{"v2 max hits", "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n", "max", 12, true},
		{"oom_group_kill is not oom_kill", "oom_group_kill 4\n", "oom_kill", 0, false},
		{"junk and blank lines", "\nnonsense\nkey notanumber\n  oom_kill   7  \n", "oom_kill", 7, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := parseFlatKeyed([]byte(tt.in))
			got, ok := m[tt.key]
			if got != tt.want || ok != tt.has {
				t.Errorf("%s = %d, %v; want %d, %v (map %v)", tt.key, got, ok, tt.want, tt.has, m)
			}
		})
	}
}

func TestParseUintValue(t *testing.T) {
	tests := []struct {
		in      string
		want    uint64
		wantErr bool
	}{
		{"134217728\n", 134217728, false},
		{"0", 0, false},
		{"max\n", ^uint64(0), false},
		{"", 0, true},
		{"-1", 0, true},
		{"12 34", 0, true},
	}
	for _, tt := range tests {
		got, err := parseUintValue([]byte(tt.in))
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("parseUintValue(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		"/plain":        "/plain",
		`/a\040b`:       "/a b",
		`/tab\011x`:     "/tab\tx",
		`/back\134part`: `/back\part`,
		`/short\04`:     `/short\04`,
		`/end\`:         `/end\`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMemCgroupRead(t *testing.T) {
	tests := []struct {
		name    string
		v2      bool
		files   map[string]string
		want    MemoryUsage
		wantErr bool
	}{
		{
			name: "v1 after an OOM kill",
			files: map[string]string{
				"memory.max_usage_in_bytes": "134217728\n",
				"memory.oom_control":        "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
				"memory.failcnt":            "0\n",
			},
			want: MemoryUsage{PeakBytes: 134217728, OOMKills: 1},
		},
		{
			name: "v1 healthy",
			files: map[string]string{
				"memory.max_usage_in_bytes": "3575808\n",
				"memory.oom_control":        "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
			},
			want: MemoryUsage{PeakBytes: 3575808},
		},
		{
			name:    "v1 without oom_control",
			files:   map[string]string{"memory.max_usage_in_bytes": "1\n"},
			wantErr: true,
		},
		{
			name: "v2 after an OOM kill",
			v2:   true,
			files: map[string]string{
				"memory.peak":   "134213632\n",
				"memory.events": "low 0\nhigh 0\nmax 57\noom 2\noom_kill 2\noom_group_kill 0\n",
			},
			want: MemoryUsage{PeakBytes: 134213632, OOMKills: 2},
		},
		{
			name:    "v2 kernel without memory.peak",
			v2:      true,
			files:   map[string]string{"memory.events": "oom_kill 0\n"},
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tt.files)
			got, err := memCgroup{dir: dir, v2: tt.v2}.read()
			if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
				t.Errorf("read = %+v, %v; want %+v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
	if _, err := (memCgroup{}).read(); !errors.Is(err, ErrNoMemoryCgroup) {
		t.Errorf("read of no cgroup: %v, want ErrNoMemoryCgroup", err)
	}
}

// The figures outlive the cgroup: taken at exit, kept after removal.
func TestCtrProcessMemoryOutlivesCgroup(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"memory.max_usage_in_bytes": "1000\n",
		"memory.oom_control":        "oom_kill 0\n",
	})
	p := &ctrProcess{mem: memCgroup{dir: dir}, exit: make(chan struct{})}
	if u, err := p.Memory(); u != (MemoryUsage{PeakBytes: 1000}) || err != nil {
		t.Fatalf("live: %+v, %v", u, err)
	}
	writeFiles(t, dir, map[string]string{
		"memory.max_usage_in_bytes": "2000\n",
		"memory.oom_control":        "oom_kill 1\n",
	})
	p.readMemory() // what the exit watcher does before closing exit
	close(p.exit)
	os.RemoveAll(dir) // the task is deleted
	u, err := p.Memory()
	if err != nil || u != (MemoryUsage{PeakBytes: 2000, OOMKills: 1}) {
		t.Errorf("after removal: %+v, %v", u, err)
	}
	p.readMemory() // Close reads again: a failure keeps the figures
	if u, err := p.Memory(); err != nil || u.PeakBytes != 2000 {
		t.Errorf("after a failed re-read: %+v, %v", u, err)
	}

	none := &ctrProcess{}
	if u, err := none.Memory(); !errors.Is(err, ErrNoMemoryCgroup) || u.OOMKills != 0 {
		t.Errorf("no cgroup: %+v, %v", u, err)
	}
}

func TestInstanceMemoryNotFound(t *testing.T) {
	if _, err := InstanceMemory(Namespace, "no-such-instance-"+t.Name()); !errors.Is(err, ErrNoMemoryCgroup) {
		t.Errorf("InstanceMemory of a missing instance: %v, want ErrNoMemoryCgroup", err)
	}
}

// The spec options that need no image: user, capabilities, mounts, seccomp.
func TestSandboxSpecOptions(t *testing.T) {
	ctx := namespaces.WithNamespace(context.Background(), Namespace)
	s, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: "fn-1"},
		withUser(""), minimalMounts, withInitCapabilities, oci.WithNoNewPrivileges, seccomp.WithDefaultProfile())
	if err != nil {
		t.Fatal(err)
	}
	if u := s.Process.User; u.UID != sandboxUID || u.GID != sandboxGID {
		t.Errorf("user = %+v, want %d:%d", u, sandboxUID, sandboxGID)
	}
	c := s.Process.Capabilities
	if c == nil {
		t.Fatal("capabilities left nil: runc would keep its own")
	}
	// amber-init's, which it empties for the function (initd/guard.go).
	want := "CAP_KILL CAP_SETGID CAP_SETUID CAP_SETPCAP"
	for name, set := range map[string][]string{"bounding": c.Bounding, "effective": c.Effective,
		"permitted": c.Permitted, "inheritable": c.Inheritable, "ambient": c.Ambient} {
		if got := strings.Join(set, " "); got != want {
			t.Errorf("%s capabilities = %v, want %s", name, got, want)
		}
	}
	if !s.Process.NoNewPrivileges {
		t.Error("no new privileges is off")
	}
	var dests []string
	for _, m := range s.Mounts {
		dests = append(dests, m.Destination)
	}
	if strings.Join(dests, " ") != "/proc /dev" {
		t.Errorf("mounts = %v, want /proc /dev", dests)
	}
	for _, p := range append(append([]string{}, s.Linux.MaskedPaths...), s.Linux.ReadonlyPaths...) {
		if !strings.HasPrefix(p, "/proc/") {
			t.Errorf("masked or read-only path %s is under no kept mount", p)
		}
	}
	if len(s.Linux.MaskedPaths) == 0 || len(s.Linux.ReadonlyPaths) == 0 {
		t.Errorf("masked %v, read-only %v: want containerd's /proc defaults", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
	sc := s.Linux.Seccomp
	if sc == nil || sc.DefaultAction != specs.ActErrno || len(sc.Syscalls) == 0 {
		t.Fatalf("seccomp = %+v, want containerd's default (deny by default)", sc)
	}
	// Calls the default profile allows only with a capability.
	capOnly := map[string]bool{"mount": true, "umount2": true, "unshare": true, "setns": true,
		"bpf": true, "kexec_load": true, "init_module": true, "open_by_handle_at": true}
	for _, rule := range sc.Syscalls {
		if rule.Action != specs.ActAllow {
			continue
		}
		for _, name := range rule.Names {
			if capOnly[name] {
				t.Errorf("seccomp allows %s with amber-init's capabilities", name)
			}
		}
	}
}

func TestWithUserHonoursTheImage(t *testing.T) {
	ctx := namespaces.WithNamespace(context.Background(), Namespace)
	// A numeric user needs no lookup when the spec has an absolute rootfs
	// without /etc/passwd.
	root := t.TempDir()
	s, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: "fn-1"}, oci.WithRootFSPath(root), withUser("1234:5678"))
	if err != nil {
		t.Fatal(err)
	}
	if u := s.Process.User; u.UID != 1234 || u.GID != 5678 {
		t.Errorf("image user 1234:5678 gave %+v", u)
	}
	s, err = oci.GenerateSpec(ctx, nil, &containers.Container{ID: "fn-1"}, oci.WithRootFSPath(root), withUser("0"))
	if err != nil {
		t.Fatal(err)
	}
	if u := s.Process.User; u.UID != 0 {
		t.Errorf("an image that says root explicitly gave %+v", u)
	}
}
