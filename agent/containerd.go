package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/amberfn/amber/agent/initd"
	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/api/ociarchive"
)

// Labels amber puts on every container so a restarted agent can find what
// it left behind.
const (
	LabelFunction = "amber.function"
	LabelVersion  = "amber.version"
	LabelAgent    = "amber.agent"

	// Namespace is the containerd namespace amber works in.
	Namespace = "amber"
	// initPath is where amber-init is bind-mounted inside an instance.
	initPath    = "/.amber-init"
	snapshotter = "overlayfs"

	// sandboxUID and sandboxGID are who a function (and amber-init with
	// it) runs as when its image names no User: an unprivileged id that
	// owns nothing on the host or in the image.
	sandboxUID = 993
	sandboxGID = 993
	// pidsLimit caps the processes and threads of one instance.
	pidsLimit = 256
	// tmpSize caps the instance's writable /tmp (its pages are also
	// charged to the memory limit).
	tmpSize = "512m"
)

// ImageSource fetches an image archive by digest (the scheduler's store).
type ImageSource interface {
	FetchImage(ctx context.Context, digest string) (io.ReadCloser, error)
}

// Containerd launches instances as containerd containers and tasks.
type Containerd struct {
	client   *containerd.Client
	agent    string
	initBin  string
	stateDir string
	images   ImageSource
	log      *slog.Logger
	// maxUnpacked bounds what one image's layers unpack to (imagelimits.go).
	maxUnpacked int64

	mu    sync.Mutex
	pulls map[string]*imagePull
}

type imagePull struct {
	done chan struct{}
	img  containerd.Image
	err  error
}

// NewContainerd connects to the containerd socket at address.
func NewContainerd(address, agentName, initBin, stateDir string, images ImageSource, log *slog.Logger, opts ...ContainerdOption) (*Containerd, error) {
	fi, err := os.Stat(initBin)
	if err != nil {
		return nil, fmt.Errorf("amber-init binary: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(stateDir, "netns"), 0o700); err != nil {
		return nil, err
	}
	if err := writeCRIUConfig(stateDir); err != nil {
		return nil, err
	}
	// amber-init runs as the instance's (unprivileged) user: it must be
	// readable and executable by anyone. If it is not, use a copy that is.
	if fi.Mode().Perm()&0o005 != 0o005 {
		if initBin, err = copyExecutable(initBin, filepath.Join(stateDir, "amber-init")); err != nil {
			return nil, fmt.Errorf("amber-init binary: %w", err)
		}
	}
	client, err := containerd.New(address, containerd.WithDefaultNamespace(Namespace), containerd.WithTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w", address, err)
	}
	c := &Containerd{client: client, agent: agentName, initBin: initBin, stateDir: stateDir,
		images: images, log: log, pulls: map[string]*imagePull{}, maxUnpacked: ociarchive.DefaultMaxUnpackedBytes}
	for _, o := range opts {
		o(c)
	}
	if c.maxUnpacked <= 0 {
		client.Close()
		return nil, fmt.Errorf("max unpacked image size %d: want > 0", c.maxUnpacked)
	}
	// Leftovers of archives spooled when the agent stopped.
	_ = os.RemoveAll(c.spoolDir())
	return c, nil
}

// copyExecutable copies src to dst with mode 0755 and returns dst.
func copyExecutable(src, dst string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return "", err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return "", err
	}
	if err := os.Chmod(tmp, 0o755); err != nil { // the umask may have taken bits away
		os.Remove(tmp)
		return "", err
	}
	return dst, os.Rename(tmp, dst)
}

// Close closes the client connection.
func (c *Containerd) Close() error { return c.client.Close() }

func (c *Containerd) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, Namespace)
}

func imageName(digest string) string { return "amber.local/fn@" + digest }

// ensureImage makes the archive with the given digest available as an
// unpacked image, fetching and importing it once however many callers ask.
func (c *Containerd) ensureImage(ctx context.Context, dgst string) (containerd.Image, error) {
	c.mu.Lock()
	p, ok := c.pulls[dgst]
	if ok {
		c.mu.Unlock()
		select {
		case <-p.done:
			if p.err == nil {
				return p.img, nil
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		c.mu.Lock()
		if c.pulls[dgst] == p {
			delete(c.pulls, dgst)
		}
		c.mu.Unlock()
		return c.ensureImage(ctx, dgst)
	}
	p = &imagePull{done: make(chan struct{})}
	c.pulls[dgst] = p
	c.mu.Unlock()
	p.img, p.err = c.importImage(ctx, dgst)
	close(p.done)
	return p.img, p.err
}

func (c *Containerd) importImage(ctx context.Context, dgst string) (containerd.Image, error) {
	if !api.IsArchiveDigest(dgst) {
		return c.pullImage(ctx, dgst) // a registry reference pinned by digest: pull.go
	}
	ctx = c.ctx(ctx)
	name := imageName(dgst)
	if img, err := c.client.GetImage(ctx, name); err == nil {
		if ok, _ := img.IsUnpacked(ctx, snapshotter); ok {
			return img, nil
		}
		if err := c.unpack(ctx, dgst, img, nil, nil); err != nil {
			return nil, err
		}
		return img, nil
	}
	start := time.Now()
	// Fetched to a file and verified before containerd reads it: its
	// importer holds manifests and configs in memory whole.
	f, info, err := c.spoolArchive(ctx, dgst)
	if err != nil {
		c.log.Warn("image not imported", "image", dgst, "limit", c.maxUnpacked, "err", err.Error())
		return nil, err
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	ref := func(string) string { return name }
	imgs, err := c.client.Import(ctx, f,
		containerd.WithImageRefTranslator(ref),
		containerd.WithDigestRef(func(digest.Digest) string { return name }))
	if err != nil {
		return nil, fmt.Errorf("import image %s: %w", dgst, err)
	}
	if len(imgs) == 0 {
		return nil, fmt.Errorf("image %s: archive holds no image for linux/amd64: %w", dgst, api.ErrInvalid)
	}
	img, err := c.client.GetImage(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", dgst, err)
	}
	// Inspect counted the layers it could read; any other is counted
	// from the content store.
	budget := &ociarchive.UnpackBudget{Limit: c.maxUnpacked, Used: info.UnpackedSize}
	counted := map[string]bool{}
	for _, l := range info.Layers {
		if l.Unpacked >= 0 {
			counted[l.Digest] = true
		}
	}
	if err := c.unpack(ctx, dgst, img, budget, counted); err != nil {
		return nil, err
	}
	c.log.Info("image imported", "digest", dgst, "unpacked", info.UnpackedSize, "took", time.Since(start).Round(time.Millisecond))
	return img, nil
}

// makeNetns creates a network namespace with loopback up, bound at a file,
// so the instance gets loopback only and a checkpoint can be restored into
// a namespace made ahead of time.
func (c *Containerd) makeNetns(id string) (string, error) {
	p := filepath.Join(c.stateDir, "netns", id)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	f.Close()
	out, err := exec.Command("unshare", "--net="+p, "ip", "link", "set", "lo", "up").CombinedOutput()
	if err != nil {
		os.Remove(p)
		return "", fmt.Errorf("network namespace: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return p, nil
}

func removeNetns(p string) {
	if p == "" {
		return
	}
	_ = syscall.Unmount(p, syscall.MNT_DETACH)
	_ = os.Remove(p)
}

// lambdaEnv is the standard Lambda environment for a function.
func lambdaEnv(fn *api.Function) []string {
	env := []string{
		"AWS_LAMBDA_FUNCTION_NAME=" + fn.Name,
		"AWS_LAMBDA_FUNCTION_VERSION=" + strconv.Itoa(fn.Version),
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=" + strconv.Itoa(fn.MemoryMB),
		"AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/" + fn.Name,
		"AWS_REGION=us-east-1",
		"AWS_DEFAULT_REGION=us-east-1",
		"AWS_LAMBDA_INITIALIZATION_TYPE=on-demand",
		"LAMBDA_TASK_ROOT=/var/task",
		"LAMBDA_RUNTIME_DIR=/var/runtime",
		"TZ=:UTC",
	}
	for k, v := range fn.Env {
		env = append(env, k+"="+v)
	}
	return env
}

// Launch creates the container and task for one instance and starts it.
func (c *Containerd) Launch(ctx context.Context, spec launchSpec) (process, error) {
	img, err := c.ensureImage(ctx, spec.Fn.Image)
	if err != nil {
		return nil, err
	}
	ctx = c.ctx(ctx)
	netns, err := c.makeNetns(spec.ID)
	if err != nil {
		return nil, err
	}
	p := &ctrProcess{c: c, id: spec.ID, netns: netns}
	sopts := c.instanceSpec(img, spec.Fn, netns)
	var topts []containerd.NewTaskOpts
	if spec.Snapshot || spec.RestoreFrom != "" {
		// Keep the instance's loopback connections (the runtime's /next)
		// on restore: runc hands this file to criu (snapshot.go).
		sopts = append(sopts, oci.WithAnnotations(map[string]string{criuConfigAnnotation: c.criuConfigPath()}))
		sopts = append(sopts, c.snapshotUser()...)
	}
	if spec.RestoreFrom != "" {
		p.criuWork = filepath.Join(c.stateDir, "criu-work", spec.ID)
		topts = append(topts, withRestore(spec.RestoreFrom, p.criuWork))
	}
	ok := false
	defer func() {
		if !ok {
			if err := p.Close(context.WithoutCancel(ctx)); err != nil {
				c.log.Warn("instance that failed to start not removed", "instance", spec.ID, "err", err)
			}
		}
	}()
	cont, err := c.client.NewContainer(ctx, spec.ID,
		containerd.WithImage(img),
		containerd.WithSnapshotter(snapshotter),
		containerd.WithNewSnapshot(spec.ID, img),
		containerd.WithContainerLabels(map[string]string{
			LabelFunction: spec.Fn.Name,
			LabelVersion:  strconv.Itoa(spec.Fn.Version),
			LabelAgent:    c.agent,
		}),
		containerd.WithNewSpec(sopts...),
	)
	if err != nil {
		p.createFailed = !errdefs.IsAlreadyExists(err)
		return nil, fmt.Errorf("create container: %w", err)
	}
	p.cont = cont
	task, err := cont.NewTask(ctx, cio.NewCreator(cio.WithStreams(spec.Stdin, spec.Stdout, spec.Stderr)), topts...)
	if err != nil {
		return nil, fmt.Errorf("create task: %w", err)
	}
	p.task = task
	findMem := func() {
		if mc, err := findMemCgroup(Namespace, spec.ID, task.Pid()); err == nil {
			p.mem = mc
		} else {
			c.log.Warn("instance memory cgroup not found: no peak or OOM figures", "instance", spec.ID, "err", err)
		}
		if dir, v2, err := findCgroup(Namespace, spec.ID, task.Pid(), "cpuacct"); err == nil {
			p.cpuDir, p.cpuV2 = dir, v2
		}
		if fc, err := findFreezer(Namespace, spec.ID, task.Pid()); err == nil {
			p.frz = fc
		} else {
			c.log.Warn("instance freezer cgroup not found: it runs on while idle", "instance", spec.ID, "err", err)
		}
	}
	if spec.RestoreFrom == "" {
		findMem()
	}
	// The wait outlives the request that started the instance.
	exitCh, err := task.Wait(c.ctx(context.Background()))
	if err != nil {
		return nil, fmt.Errorf("wait task: %w", err)
	}
	p.exit = make(chan struct{})
	p.closed = make(chan struct{})
	go func() {
		st := p.waitExit(task, exitCh)
		p.exitCode, _, p.exitErr = st.Result()
		// The cgroup lives until the task is deleted: keep its last word.
		p.readMemory()
		// Let the output copy finish, so amber-init's last frames (its
		// exit reason) arrive before the stream is closed.
		drained := make(chan struct{})
		go func() {
			if pio := task.IO(); pio != nil {
				pio.Wait()
			}
			close(drained)
		}()
		select {
		case <-drained:
		case <-time.After(time.Second):
		}
		close(p.exit)
	}()
	if err := task.Start(ctx); err != nil {
		if spec.RestoreFrom != "" {
			return nil, fmt.Errorf("restore task: %w", c.criuFailure("restore", p.criuWork, "restore.log", err))
		}
		return nil, fmt.Errorf("start task: %w", err)
	}
	if spec.RestoreFrom != "" {
		findMem() // a restored task has its processes only once started
	}
	ok = true
	return p, nil
}

// instanceSpec is the runtime spec of one instance, on top of containerd's
// defaults (own pid, ipc, uts and mount namespaces; the default masked and
// read-only /proc paths; no new privileges):
//
//   - the image's env, entrypoint, cmd and working dir, behind amber-init;
//   - the image's User if it names one, else sandboxUID:sandboxGID, for
//     the function. An image that explicitly says root ("0", "root") runs
//     as uid 0, but with every capability set empty that root is no more
//     powerful than any other uid (it still owns root-owned files, and the
//     rootfs is read-only);
//   - amber-init guarded (-guard): runc starts it as that user with
//     initd.GuardCapabilities; it becomes root in the container,
//     non-dumpable, empties the bounding set, starts the function with no
//     capabilities at all and keeps only CAP_KILL itself, so the function
//     can neither ptrace it, read its memory, write to its frame stream
//     through /proc/1/fd, nor signal it;
//   - containerd's default seccomp profile for those capabilities;
//   - a read-only root, a size-capped tmpfs /tmp (mode 1777) and only the
//     mounts a function needs (see minimalMounts);
//   - the agent-made network namespace (loopback only);
//   - memory limit = the function's memory with no swap on top, CPU shares
//     in proportion to memory, and a pids limit.
func (c *Containerd) instanceSpec(img containerd.Image, fn *api.Function, netns string) []oci.SpecOpts {
	mem := uint64(fn.MemoryMB) << 20
	return []oci.SpecOpts{
		withImageConfig(img),
		prependInit([]string{initPath, "-guard"}),
		oci.WithEnv(lambdaEnv(fn)),
		oci.WithHostname("amber"),
		minimalMounts,
		oci.WithMounts([]specs.Mount{
			{Destination: initPath, Type: "bind", Source: c.initBin, Options: []string{"rbind", "ro", "nosuid", "nodev"}},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777", "size=" + tmpSize}},
		}),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: netns}),
		oci.WithMemoryLimit(mem),
		oci.WithMemorySwap(int64(mem)),
		oci.WithCPUShares(cpuShares(fn.MemoryMB)),
		oci.WithPidsLimit(pidsLimit),
		withInitCapabilities,
		oci.WithNoNewPrivileges,
		seccomp.WithDefaultProfile(), // after the capabilities: the profile follows them
		oci.WithRootFSReadonly(),
	}
}

// defaultPath is containerd's PATH for an image whose config sets no Env.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// withImageConfig applies the image config's env, entrypoint, cmd, working
// dir and user, like oci.WithImageConfig, except that an image without a
// User runs as sandboxUID:sandboxGID. oci.WithImageConfig mounts the
// image's root filesystem on every start to read /etc/group; this does so
// only when the image names a user, which then has to be looked up there.
func withImageConfig(img containerd.Image) oci.SpecOpts {
	return func(ctx context.Context, client oci.Client, c *containers.Container, s *specs.Spec) error {
		ispec, err := img.Spec(ctx)
		if err != nil {
			return fmt.Errorf("image config: %w", err)
		}
		cfg := ispec.Config
		if s.Process == nil {
			s.Process = &specs.Process{}
		}
		s.Process.Env = append([]string{}, cfg.Env...)
		if len(s.Process.Env) == 0 {
			s.Process.Env = []string{defaultPath}
		}
		// Lambda container images name their handler in CMD ("app.handler").
		if len(cfg.Cmd) > 0 {
			s.Process.Env = append(s.Process.Env, "_HANDLER="+cfg.Cmd[0])
		}
		s.Process.Args = append(append([]string{}, cfg.Entrypoint...), cfg.Cmd...)
		s.Process.Cwd = cfg.WorkingDir
		if s.Process.Cwd == "" {
			s.Process.Cwd = "/"
		}
		return withUser(cfg.User)(ctx, client, c, s)
	}
}

// withUser sets who the instance runs as: the image's user when it names
// one (resolved against the image's /etc/passwd and /etc/group as
// containerd does), the sandbox user otherwise.
func withUser(imageUser string) oci.SpecOpts {
	return func(ctx context.Context, client oci.Client, c *containers.Container, s *specs.Spec) error {
		if imageUser == "" {
			return oci.WithUIDGID(sandboxUID, sandboxGID)(ctx, client, c, s)
		}
		if err := oci.WithUser(imageUser)(ctx, client, c, s); err != nil {
			return fmt.Errorf("image user %q: %w", imageUser, err)
		}
		return oci.WithAdditionalGIDs(strconv.FormatUint(uint64(s.Process.User.UID), 10))(ctx, client, c, s)
	}
}

// withInitCapabilities gives amber-init initd.GuardCapabilities in every
// set, ambient (and so inheritable) included: started as a non-root user,
// it would lose them on execve otherwise. amber-init empties every set
// for the function (initd/guard.go). The struct is always set: a nil one
// would leave runc's own capabilities in place.
func withInitCapabilities(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
	if s.Process == nil {
		s.Process = &specs.Process{}
	}
	caps := initd.GuardCapabilities
	s.Process.Capabilities = &specs.LinuxCapabilities{
		Bounding: slices.Clone(caps), Effective: slices.Clone(caps), Permitted: slices.Clone(caps),
		Inheritable: slices.Clone(caps), Ambient: slices.Clone(caps),
	}
	return nil
}

// keptMounts are the default mounts an instance keeps. containerd's
// defaults also give /dev/pts (no terminal here), /dev/shm and
// /dev/mqueue (POSIX shared memory and queues, which Lambda does not
// offer either), /sys (host details a function has no use for) and /run
// (the rootfs has nowhere to need it): each is one more mount to set up
// on every start and to dump and restore in a snapshot.
var keptMounts = map[string]bool{"/proc": true, "/dev": true}

// minimalMounts drops the default mounts a function does not need, and
// the masked and read-only paths under them.
func minimalMounts(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
	kept := s.Mounts[:0]
	for _, m := range s.Mounts {
		if keptMounts[m.Destination] {
			kept = append(kept, m)
		}
	}
	s.Mounts = kept
	if s.Linux != nil {
		s.Linux.MaskedPaths = underKept(s.Linux.MaskedPaths)
		s.Linux.ReadonlyPaths = underKept(s.Linux.ReadonlyPaths)
	}
	return nil
}

func underKept(paths []string) []string {
	out := paths[:0]
	for _, p := range paths {
		for m := range keptMounts {
			if strings.HasPrefix(p, m+"/") {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// prependInit puts amber-init in front of the image's entrypoint and cmd,
// separated by "--", so amber-init starts them as the function runtime.
func prependInit(initArgs []string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		rest := s.Process.Args
		args := append([]string{}, initArgs...)
		if len(rest) > 0 {
			args = append(append(args, "--"), rest...)
		}
		s.Process.Args = args
		return nil
	}
}

// cpuShares gives CPU weight in proportion to memory, as Lambda does
// (1769 MB is one full vCPU there, 1024 shares here).
func cpuShares(memoryMB int) uint64 {
	s := uint64(memoryMB) * 1024 / 1769
	if s < 2 {
		s = 2
	}
	return s
}

type ctrProcess struct {
	c        *Containerd
	id       string
	netns    string
	cont     containerd.Container
	task     containerd.Task
	exit     chan struct{}
	closed   chan struct{} // closed when Close is done: waitExit stops retrying
	exitCode uint32
	exitErr  error
	once     sync.Once
	criuWork string // CRIU's work folder (logs) of a restore, removed with the instance
	// createFailed: creating the container failed in a way that may
	// still have made it (Close then looks it up).
	createFailed bool

	mem     memCgroup     // the instance's memory cgroup, if found
	frz     freezerCgroup // the instance's freezer cgroup, if found
	cpuDir  string        // the instance's cpuacct (v2: its only) cgroup, if found
	cpuV2   bool
	memMu   sync.Mutex
	memLast MemoryUsage // the last figures read, kept after the cgroup is gone
	memErr  error
}

func (p *ctrProcess) Exited() <-chan struct{} { return p.exit }

// Tuning of the agent's resilience to a containerd restart.
const (
	// cleanupTimeout bounds the removal of one container left by an
	// earlier run; cleanupParallel is how many are removed at once.
	cleanupTimeout  = 15 * time.Second
	cleanupParallel = 8
	// waitReconnect bounds how long a task's exit wait is retried while
	// containerd cannot be reached before the task is taken for gone.
	waitReconnect = 2 * time.Minute
	// closeRetryFor bounds how long removing an instance is retried
	// while containerd cannot be reached.
	closeRetryFor = 30 * time.Second
	// ctrRetryEvery is the pause between those retries.
	ctrRetryEvery = 250 * time.Millisecond
	// ctrCallTimeout bounds one attempt of a removal step.
	ctrCallTimeout = 10 * time.Second
)

// waitExit returns the task's exit status. A wait that failed because
// containerd went away — a restart, which leaves the shim and the task
// running, and the instance's stdio FIFOs working — is not an exit: the
// wait is made again once containerd answers, for up to waitReconnect.
// Without this a containerd restart made the agent take every instance for
// dead: invocations in flight failed as Runtime.ExitError, and instances
// removed while containerd was down stayed in containerd.
func (p *ctrProcess) waitExit(task containerd.Task, ch <-chan containerd.ExitStatus) containerd.ExitStatus {
	var since time.Time
	for {
		st := <-ch
		err := st.Error()
		if err == nil {
			return st
		}
		err = errdefs.FromGRPC(err)
		if errdefs.IsNotFound(err) {
			return st
		}
		if since.IsZero() {
			since = time.Now()
			p.c.log.Warn("lost the wait on an instance's task (containerd restarting?); waiting again", "instance", p.id, "err", err)
		}
		if time.Since(since) > waitReconnect {
			p.c.log.Warn("containerd did not come back; taking the instance for gone", "instance", p.id, "err", err)
			return st
		}
		select {
		case <-p.closed:
			return st
		case <-time.After(ctrRetryEvery):
		}
		next, werr := task.Wait(p.c.ctx(context.Background()))
		if werr != nil {
			c := make(chan containerd.ExitStatus, 1)
			c <- *containerd.NewExitStatus(containerd.UnknownExitStatus, time.Time{}, werr)
			next = c
		}
		ch = next
	}
}

// unavailable reports whether err says containerd cannot be reached: a
// gRPC status, or an error the client already converted (converting
// that one again would make it "unknown").
func unavailable(err error) bool {
	return errdefs.IsUnavailable(err) || errdefs.IsUnavailable(errdefs.FromGRPC(err))
}

// retryUnavailable runs op again while it fails because containerd cannot
// be reached (it restarts), for up to closeRetryFor. Each attempt has
// ctrCallTimeout: a call caught in a containerd restart can otherwise
// wait forever, holding up the invocation that removes the instance
// (seen under load in TestFaults/ContainerdRestart).
func retryUnavailable(ctx context.Context, op func(context.Context) error) error {
	return retryUnavailableFor(ctx, ctrCallTimeout, op)
}

func retryUnavailableFor(ctx context.Context, perCall time.Duration, op func(context.Context) error) error {
	deadline := time.Now().Add(closeRetryFor)
	for {
		actx, cancel := context.WithTimeout(ctx, perCall)
		err := op(actx)
		timedOut := actx.Err() != nil && ctx.Err() == nil
		cancel()
		if err == nil || !(unavailable(err) || timedOut) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(ctrRetryEvery)
	}
}

func (p *ctrProcess) ExitStatus() (int, error) { return int(p.exitCode), p.exitErr }

// Freeze stops every process of the instance, amber-init included, with
// the cgroup freezer (freezer.go).
func (p *ctrProcess) Freeze(context.Context) error { return p.frz.freeze() }

// CPU is the CPU time the instance's processes have used.
func (p *ctrProcess) CPU() (time.Duration, error) {
	if p.cpuDir == "" {
		return 0, ErrNoCPUCgroup
	}
	return readCPU(p.cpuDir, p.cpuV2)
}

// Thaw lets a frozen instance run again.
func (p *ctrProcess) Thaw(context.Context) error { return p.frz.thaw() }

// thawForRemoval thaws the instance, frozen or not, before it is killed:
// under cgroup v1 a frozen task does not die of SIGKILL until it is thawed.
// An instance an earlier run of the agent left (Cleanup) has its freezer
// looked up by its id.
func (p *ctrProcess) thawForRemoval() {
	f := p.frz
	if f.dir == "" {
		var err error
		if f, err = findFreezer(Namespace, p.id, 0); err != nil {
			return // no cgroup: nothing can be frozen
		}
	}
	if err := f.thaw(); err != nil && !errors.Is(err, os.ErrNotExist) {
		p.c.log.Warn("thaw before removal", "instance", p.id, "err", err)
	}
}

// Kill sends SIGKILL to every process of the instance.
func (p *ctrProcess) Kill(ctx context.Context) error {
	if p.task == nil {
		return nil
	}
	err := p.task.Kill(p.c.ctx(ctx), syscall.SIGKILL, containerd.WithKillAll)
	if errdefs.IsNotFound(err) {
		return nil
	}
	return err
}

// Close kills what is left and removes the task, container, snapshot and
// network namespace.
func (p *ctrProcess) Close(ctx context.Context) error {
	var errs []error
	p.once.Do(func() {
		ctx = p.c.ctx(ctx)
		if p.cont == nil && p.createFailed {
			// The create call failed, but containerd may have made the
			// container before the answer was lost (a containerd restart
			// cuts calls off): look it up so it goes too.
			_ = retryUnavailable(ctx, func(ctx context.Context) error {
				cont, err := p.c.client.LoadContainer(ctx, p.id)
				if err == nil {
					p.cont = cont
				}
				return err
			})
		}
		if p.task == nil && p.cont != nil {
			// A task whose creation was cut short (a cancelled request) may
			// still exist, with its shim: find it so it goes too.
			tctx, cancel := context.WithTimeout(ctx, ctrCallTimeout)
			if t, err := p.cont.Task(tctx, cio.Load); err == nil {
				p.task = t
			}
			cancel()
		}
		if p.closed != nil {
			defer close(p.closed)
		}
		// While containerd restarts, each step is retried (retryUnavailable):
		// an instance removed then must not stay behind in containerd.
		if p.task != nil {
			p.readMemory() // before the kill and the delete remove the cgroup's story
			p.thawForRemoval()
			_ = retryUnavailable(ctx, p.Kill)
			if p.exit != nil {
				select {
				case <-p.exit:
				case <-time.After(5 * time.Second):
				}
			}
			err := retryUnavailable(ctx, func(ctx context.Context) error {
				_, err := p.task.Delete(ctx, containerd.WithProcessKill)
				return err
			})
			if err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete task: %w", err))
			}
		}
		if p.cont != nil {
			err := retryUnavailable(ctx, func(ctx context.Context) error { return p.cont.Delete(ctx, containerd.WithSnapshotCleanup) })
			if err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete container: %w", err))
			}
		}
		p.mem.files.close()
		removeNetns(p.netns)
		if p.criuWork != "" {
			_ = os.RemoveAll(p.criuWork)
		}
	})
	return errors.Join(errs...)
}

// Cleanup removes every container this agent left behind (a previous run
// that was killed), with its task, snapshot and network namespace.
func (c *Containerd) Cleanup(ctx context.Context) (int, error) {
	ctx = c.ctx(ctx)
	conts, err := c.client.Containers(ctx, fmt.Sprintf("labels.%q==%s", LabelAgent, c.agent))
	if err != nil {
		return 0, fmt.Errorf("list containers: %w", err)
	}
	// In parallel, each within cleanupTimeout: a task caught in the middle
	// of a checkpoint or restore when its agent was killed can keep its
	// shim from answering, and must not hold up the rest (or the agent).
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, cleanupParallel)
	)
	for _, cont := range conts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, cleanupTimeout)
			defer cancel()
			p := &ctrProcess{c: c, id: cont.ID(), cont: cont, netns: filepath.Join(c.stateDir, "netns", cont.ID())}
			// cio.Load reattaches to the task's stdio FIFOs without copying,
			// so deleting the task also removes them (and their folder under
			// /run/containerd/fifo), which the killed agent could not do.
			if t, err := cont.Task(cctx, cio.Load); err == nil {
				p.task = t
			}
			if err := p.Close(cctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", cont.ID(), err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	// Namespaces whose container is already gone.
	entries, _ := os.ReadDir(filepath.Join(c.stateDir, "netns"))
	for _, e := range entries {
		removeNetns(filepath.Join(c.stateDir, "netns", e.Name()))
	}
	return len(conts), errors.Join(errs...)
}
