package ops

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/snapshots"
)

// Check is one line of `amber doctor`.
type Check struct {
	Name    string
	OK      bool
	Skipped bool   // nothing to check here (no local cluster running); not a failure
	Info    string // what was found
	Fix     string // what to do when not OK
}

func (c Check) String() string {
	switch {
	case c.Skipped:
		return fmt.Sprintf("skip  %-11s %s", c.Name, c.Info)
	case c.OK:
		return fmt.Sprintf("ok    %-11s %s", c.Name, c.Info)
	}
	return fmt.Sprintf("FAIL  %-11s %s — fix: %s", c.Name, c.Info, c.Fix)
}

// Failed reports whether c is a failure.
func (c Check) Failed() bool { return !c.OK && !c.Skipped }

// DoctorConfig says what to check.
type DoctorConfig struct {
	Containerd string // socket
	StateDir   string // for free disk
	Scheduler  string // URL, or several comma-separated: the control plane's health, and the clock (first one); "" skips
	Token      string // API token for the control plane check (a local cluster's comes from DIR/env)
	MinFreeGB  float64
	// Trial runs a trial snapshot (Dir, Child; see snapshots.Trial).
	Trial snapshots.TrialConfig
	// Local is the data folder of a local cluster (`amber up --data`):
	// its containerd, scheduler, agents and snapshot store are checked
	// instead of a node's. "" checks this machine as an agent node.
	Local string
}

// Doctor runs every check; each is bounded in time.
func Doctor(ctx context.Context, cfg DoctorConfig) []Check {
	if cfg.MinFreeGB == 0 {
		cfg.MinFreeGB = 5
	}
	var local *localCluster
	if cfg.Local != "" {
		local = readLocal(cfg.Local)
		cfg.StateDir = cfg.Local
		if cfg.Scheduler == "" {
			cfg.Scheduler = local.scheduler
		}
		if local.token != "" {
			cfg.Token = local.token
		}
	}
	var checks []Check
	if local != nil {
		checks = append(checks, local.checkContainerd(ctx))
	} else {
		checks = append(checks, checkContainerd(ctx, cfg.Containerd))
	}
	checks = append(checks,
		checkBinary(ctx, "runc", "runc", "--version", "apt-get install runc"),
		checkSnapshots(ctx, cfg.Trial),
		checkCgroups(),
		checkOverlay(),
		checkBinary(ctx, "netns", "unshare", "--version", "apt-get install util-linux iproute2"),
		checkDisk(cfg.StateDir, cfg.MinFreeGB),
	)
	if local != nil {
		checks = append(checks, local.checkAgents(ctx)...)
	}
	if urls := api.SplitURLs(cfg.Scheduler); len(urls) > 0 {
		checks = append(checks, checkControlPlane(ctx, urls, cfg.Token), checkClock(ctx, urls[0]))
	}
	return checks
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}

func checkContainerd(ctx context.Context, sock string) Check {
	c := Check{Name: "containerd", Fix: "apt-get install containerd && systemctl start containerd, or pass --containerd SOCKET"}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	client, err := containerd.New(sock, containerd.WithTimeout(2*time.Second))
	if err != nil {
		c.Info = fmt.Sprintf("not reachable at %s: %v", sock, err)
		return c
	}
	defer client.Close()
	v, err := client.Version(ctx)
	if err != nil {
		c.Info = fmt.Sprintf("no answer at %s: %v", sock, err)
		return c
	}
	c.OK, c.Info = true, fmt.Sprintf("%s at %s", v.Version, sock)
	return c
}

func checkBinary(ctx context.Context, name, bin, arg, fix string) Check {
	c := Check{Name: name, Fix: fix}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, arg).CombinedOutput()
	if err != nil {
		c.Info = fmt.Sprintf("%s: %v", bin, err)
		return c
	}
	c.OK, c.Info = true, firstLine(out)
	return c
}

// checkSnapshots checks by doing: criu's version and `criu check`, then a
// trial checkpoint and restore of a tiny process the way the agent
// snapshots an instance (its own network namespace, an open loopback
// connection, tcp-established). A failure names the missing piece.
func checkSnapshots(ctx context.Context, trial snapshots.TrialConfig) Check {
	c := Check{Name: "snapshots", Fix: "run .ci/install-deps as root; without snapshots every start is cold"}
	env, err := snapshots.Probe(ctx)
	if err != nil {
		c.Info = err.Error()
		return c
	}
	if err := snapshots.Trial(ctx, trial); err != nil {
		var ce *snapshots.CRIUError
		if errors.As(err, &ce) {
			c.Info = ce.Cause.Problem
			if ce.Cause.Fix != "" {
				c.Fix = ce.Cause.Fix
			}
			if ce.Log != "" {
				c.Fix += " (criu log: " + ce.Log + ")"
			}
			return c
		}
		c.Info = err.Error()
		return c
	}
	c.OK, c.Info = true, fmt.Sprintf("criu %s: a trial checkpoint and restore with an open loopback connection works", env.CRIUVersion)
	return c
}

func checkCgroups() Check {
	c := Check{Name: "cgroups", Fix: "mount the memory, cpu and pids controllers (cgroup v1) or cgroup2 at /sys/fs/cgroup"}
	var st syscall.Statfs_t
	if err := syscall.Statfs("/sys/fs/cgroup", &st); err != nil {
		c.Info = err.Error()
		return c
	}
	const cgroup2Magic = 0x63677270
	if st.Type == cgroup2Magic {
		b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
		if err != nil || !strings.Contains(string(b), "memory") || !strings.Contains(string(b), "pids") {
			c.Info = "cgroup v2 without the memory or pids controller"
			return c
		}
		c.OK, c.Info = true, "cgroup v2: "+strings.TrimSpace(string(b))
		return c
	}
	var missing []string
	for _, ctl := range []string{"memory", "cpu", "pids"} {
		if _, err := os.Stat("/sys/fs/cgroup/" + ctl); err != nil {
			missing = append(missing, ctl)
		}
	}
	if len(missing) > 0 {
		c.Info = "cgroup v1 without " + strings.Join(missing, ", ")
		return c
	}
	c.OK, c.Info = true, "cgroup v1: memory, cpu, pids"
	return c
}

func checkOverlay() Check {
	c := Check{Name: "overlayfs", Fix: "modprobe overlay"}
	f, err := os.Open("/proc/filesystems")
	if err != nil {
		c.Info = err.Error()
		return c
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasSuffix(sc.Text(), "\toverlay") {
			c.OK, c.Info = true, "the kernel has overlay"
			return c
		}
	}
	c.Info = "the kernel lists no overlay filesystem"
	return c
}

func checkDisk(dir string, minGB float64) Check {
	c := Check{Name: "disk", Fix: fmt.Sprintf("free space under %s (images and snapshots want at least %.0f GB)", dir, minGB)}
	for d := dir; d != ""; d = parent(d) {
		var st syscall.Statfs_t
		if err := syscall.Statfs(d, &st); err == nil {
			free := float64(st.Bavail) * float64(st.Bsize) / (1 << 30)
			c.Info = fmt.Sprintf("%.1f GB free for %s", free, dir)
			c.OK = free >= minGB
			return c
		}
	}
	c.Info = "cannot stat " + dir
	return c
}

func parent(d string) string {
	if d == "/" {
		return ""
	}
	i := strings.LastIndexByte(strings.TrimRight(d, "/"), '/')
	if i <= 0 {
		return "/"
	}
	return d[:i]
}

func checkClock(ctx context.Context, url string) Check {
	c := Check{Name: "clock", Fix: "synchronise the clock (chrony or systemd-timesyncd); signatures and schedules need it"}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(url, "/")+"/healthz", nil)
	if err != nil {
		c.Info = err.Error()
		return c
	}
	t0 := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.Info = fmt.Sprintf("scheduler %s not reachable: %v", url, err)
		return c
	}
	resp.Body.Close()
	their, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		c.Info = "the scheduler sent no Date header"
		return c
	}
	skew := time.Until(their.Add(time.Since(t0) / 2)).Round(time.Second)
	c.Info = fmt.Sprintf("%s off the scheduler's clock", skew)
	c.OK = skew < 5*time.Second && skew > -5*time.Second
	return c
}

// checkControlPlane asks every scheduler for its view of the engine (GET
// /v1/cluster) and fails naming the first that does not answer or whose
// JetStream has no meta leader (no quorum: writes are refused).
func checkControlPlane(ctx context.Context, urls []string, token string) Check {
	c := Check{Name: "control plane"}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var parts []string
	for _, u := range urls {
		cp, err := api.NewClient(u, api.WithToken(token)).ControlPlane(ctx)
		switch {
		case errors.Is(err, api.ErrNotFound):
			c.Info = fmt.Sprintf("scheduler %s has no /v1/cluster", u)
			c.Fix = "upgrade that scheduler to this amber"
			return c
		case err != nil:
			c.Info = fmt.Sprintf("scheduler %s: %v", u, err)
			c.Fix = "start that scheduler (systemctl start amber-scheduler) or check its NATS (--nats, --cluster-peers); see its log"
			return c
		case cp.MetaLeader == "":
			c.Info = fmt.Sprintf("scheduler %s (NATS server %s): JetStream has no meta leader: no quorum, writes are refused", u, cp.Server)
			c.Fix = "bring back enough schedulers (or NATS servers) for a majority: 2 of 3"
			return c
		}
		p := fmt.Sprintf("%s (server %s, leader %s, %d peers, %d streams, %s", u, cp.Server, cp.MetaLeader, cp.Peers, cp.Streams, humanBytes(cp.Bytes))
		if len(cp.OfflinePeers) > 0 {
			p += ", offline: " + strings.Join(cp.OfflinePeers, " ")
		}
		parts = append(parts, p+")")
	}
	c.OK, c.Info = true, strings.Join(parts, "; ")
	return c
}

func humanBytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f kB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
