package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// An instance's memory cgroup: where it is and what it says about peak
// usage and OOM kills. containerd (runc, cgroupfs driver) puts a container
// at cgroupsPath "/<namespace>/<id>", so on a cgroup v1 host the memory
// controller's folder is /sys/fs/cgroup/memory/amber/<id>; on a unified
// (cgroup v2) host it is /sys/fs/cgroup/amber/<id>. Which one this host has
// is detected, not assumed.

// ErrNoMemoryCgroup means the instance's memory cgroup could not be found
// (it is already removed, or the host has no memory controller).
var ErrNoMemoryCgroup = errors.New("no memory cgroup")

// MemoryUsage is what an instance's memory cgroup says.
type MemoryUsage struct {
	// PeakBytes is the high-water mark of the cgroup's charged memory
	// (anonymous memory, page cache and tmpfs pages such as /tmp) since
	// the instance started.
	PeakBytes uint64
	// OOMKills counts processes the kernel's OOM killer killed in the
	// cgroup since the instance started.
	OOMKills uint64
}

// memCgroup is one instance's memory cgroup folder.
type memCgroup struct {
	dir   string
	v2    bool
	files *cgroupFiles // kept open between reads; nil: open each time
}

// cgroupFiles keeps an instance's two memory files open: they are read
// after every invocation, and a pread of an open cgroup file costs a
// fraction of an open, read and close. Closed with the instance.
type cgroupFiles struct {
	mu     sync.Mutex
	open   map[string]*os.File
	closed bool
}

// read reads the cgroup file name in dir from its start.
func (c *cgroupFiles) read(dir, name string) ([]byte, error) {
	if c == nil {
		return readCgroupFile(filepath.Join(dir, name))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("%s: %w", name, os.ErrClosed)
	}
	f := c.open[name]
	if f == nil {
		var err error
		if f, err = os.Open(filepath.Join(dir, name)); err != nil {
			return nil, err
		}
		if c.open == nil {
			c.open = map[string]*os.File{}
		}
		c.open[name] = f
	}
	buf := make([]byte, 4096)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return buf[:n], nil
}

func (c *cgroupFiles) close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.open {
		f.Close()
	}
	c.open, c.closed = nil, true
}

const cgroupRoot = "/sys/fs/cgroup"

// cgroupUnified reports whether the cgroup root is a cgroup2 (unified)
// mount. A hybrid host (v1 controllers with cgroup2 at
// /sys/fs/cgroup/unified, as here) is not unified: its memory controller
// is v1.
func cgroupUnified() bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(cgroupRoot, &st); err != nil {
		return false
	}
	const cgroup2Magic = 0x63677270
	return st.Type == cgroup2Magic
}

// memoryMountpoint finds where the v1 memory controller is mounted, from
// /proc/self/mountinfo; /sys/fs/cgroup/memory when it cannot tell.
func memoryMountpoint() string { return controllerMountpoint("memory") }

// controllerMountpoint finds where the v1 controller ctrl is mounted, from
// /proc/self/mountinfo; /sys/fs/cgroup/CTRL when it cannot tell.
func controllerMountpoint(ctrl string) string {
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		if mp := parseControllerMountpoint(b, ctrl); mp != "" {
			return mp
		}
	}
	return filepath.Join(cgroupRoot, ctrl)
}

// parseMemoryMountpoint returns the mount point of the first cgroup (v1)
// mount in mountinfo whose super options name the memory controller.
func parseMemoryMountpoint(mountinfo []byte) string {
	return parseControllerMountpoint(mountinfo, "memory")
}

// parseControllerMountpoint returns the mount point of the first cgroup
// (v1) mount in mountinfo whose super options name the controller ctrl.
func parseControllerMountpoint(mountinfo []byte, ctrl string) string {
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	for sc.Scan() {
		// 36 25 0:31 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 || qf[0] != "cgroup" {
			continue
		}
		for _, o := range strings.Split(qf[2], ",") {
			if o == ctrl {
				return unescapeMountinfo(pf[4])
			}
		}
	}
	return ""
}

// unescapeMountinfo undoes the octal escapes (\040 for a space …) the
// kernel uses in mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// parseProcCgroup returns the memory cgroup path in a /proc/PID/cgroup
// file: the "memory" controller line on cgroup v1, the "0::" line on v2.
func parseProcCgroup(b []byte, v2 bool) (string, bool) {
	return parseProcCgroupController(b, v2, "memory")
}

// parseProcCgroupController returns the cgroup path of the controller ctrl
// in a /proc/PID/cgroup file: its line on cgroup v1, the "0::" line on v2.
func parseProcCgroupController(b []byte, v2 bool, ctrl string) (string, bool) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if v2 {
			if parts[0] == "0" && parts[1] == "" {
				return parts[2], true
			}
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == ctrl {
				return parts[2], true
			}
		}
	}
	return "", false
}

// findMemCgroup locates the memory cgroup of the container id in the
// containerd namespace ns. With pid > 0 the kernel's /proc/PID/cgroup
// says where that process is; otherwise (or if that fails) the path
// containerd gives its containers, /<ns>/<id>, is used.
func findMemCgroup(ns, id string, pid uint32) (memCgroup, error) {
	dir, v2, err := findCgroup(ns, id, pid, "memory")
	if err != nil {
		return memCgroup{}, fmt.Errorf("%s/%s: %w: %v", ns, id, ErrNoMemoryCgroup, err)
	}
	return memCgroup{dir: dir, v2: v2, files: &cgroupFiles{}}, nil
}

// findCgroup locates the folder of the v1 controller ctrl (or, on a
// unified host, the one cgroup2 folder) of the container id in the
// containerd namespace ns, as findMemCgroup does, and says whether it is
// cgroup2.
func findCgroup(ns, id string, pid uint32, ctrl string) (string, bool, error) {
	v2 := cgroupUnified()
	root := cgroupRoot
	if !v2 {
		root = controllerMountpoint(ctrl)
	}
	rel := path.Join("/", ns, id)
	if pid > 0 {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid)); err == nil {
			if p, ok := parseProcCgroupController(b, v2, ctrl); ok && p != "/" {
				rel = p
			}
		}
	}
	dir := filepath.Join(root, filepath.FromSlash(rel))
	if _, err := os.Stat(dir); err != nil {
		return "", v2, err
	}
	return dir, v2, nil
}

// read reads the cgroup's peak usage and OOM kill count.
func (m memCgroup) read() (MemoryUsage, error) {
	if m.dir == "" {
		return MemoryUsage{}, ErrNoMemoryCgroup
	}
	peakFile, oomFile := "memory.max_usage_in_bytes", "memory.oom_control"
	if m.v2 {
		peakFile, oomFile = "memory.peak", "memory.events"
	}
	var u MemoryUsage
	b, err := m.files.read(m.dir, peakFile)
	if err != nil {
		return u, err
	}
	if u.PeakBytes, err = parseUintValue(b); err != nil {
		return u, err
	}
	if b, err = m.files.read(m.dir, oomFile); err != nil {
		return u, err
	}
	// On v1, memory.failcnt is no OOM sign (reclaim usually resolves a
	// failed charge, and this kernel leaves it at 0 even when the OOM
	// killer fires): oom_kill is the one to trust.
	u.OOMKills = parseFlatKeyed(b)["oom_kill"]
	return u, nil
}

// InstanceMemory reads the memory cgroup of the container id in the
// containerd namespace ns (for amber's instances, Namespace). The cgroup
// exists until the task is deleted.
func InstanceMemory(ns, id string) (MemoryUsage, error) {
	m, err := findMemCgroup(ns, id, 0)
	if err != nil {
		return MemoryUsage{}, err
	}
	m.files = nil // one read: nothing to keep open
	return m.read()
}

// readCgroupFile reads a small cgroup file in one read (these are read
// after every invocation: open, read, close and nothing more).
func readCgroupFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, 4096)
	n, err := f.Read(buf)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return buf[:n], nil
}

func parseUintValue(b []byte) (uint64, error) {
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return ^uint64(0), nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cgroup value %q: %w", s, err)
	}
	return n, nil
}

// parseFlatKeyed parses "key value" lines (memory.oom_control,
// memory.events, memory.stat); lines that do not parse are skipped.
func parseFlatKeyed(b []byte) map[string]uint64 {
	out := map[string]uint64{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue
		}
		out[k] = n
	}
	return out
}

// readMemory refreshes the instance's last memory figures. A failed read
// (the cgroup is already gone) keeps the figures read before.
func (p *ctrProcess) readMemory() {
	if p.mem.dir == "" {
		return
	}
	u, err := p.mem.read()
	p.memMu.Lock()
	defer p.memMu.Unlock()
	if err != nil {
		if p.memErr == nil && p.memLast == (MemoryUsage{}) {
			p.memErr = err
		}
		return
	}
	p.memLast, p.memErr = u, nil
}

// Memory returns the instance's memory figures: read live while the task
// exists, and afterwards the last figures read (they are taken as the
// task exits, before Exited is closed, and again at the start of Close).
func (p *ctrProcess) Memory() (MemoryUsage, error) {
	select {
	case <-p.exit: // exited: the figures were taken before exit was closed
	default:
		p.readMemory()
	}
	p.memMu.Lock()
	defer p.memMu.Unlock()
	if p.mem.dir == "" {
		return MemoryUsage{}, ErrNoMemoryCgroup
	}
	return p.memLast, p.memErr
}
