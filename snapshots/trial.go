package snapshots

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// TrialChildCommand is the hidden amber command that runs TrialChild.
const TrialChildCommand = "criu-trial-child"

// externalNetns is the key under which the instance's network namespace
// is external to CRIU: dumped as a reference, handed back on restore (the
// same key runc uses for a namespace named by path in the spec).
const externalNetns = "extRootNetNS"

// TrialConfig says how to run a trial snapshot.
type TrialConfig struct {
	// Dir is the trial's work folder: removed on success, kept with CRIU's
	// logs on failure.
	Dir string
	// Child is the command that runs TrialChild(Dir), for example amber
	// itself with TrialChildCommand; Dir is appended to it.
	Child []string
	// CRIU is the criu to run; "" is criu on PATH.
	CRIU string
}

// Trial checkpoints and restores a tiny process the way the agent does an
// instance: the process runs in a network namespace made ahead of time
// with loopback up (external to CRIU), holds an established loopback TCP
// connection to itself, and is dumped and restored with tcp-established.
// It then proves the restored process still talks over that connection.
// A failure is a *CRIUError naming the missing piece and its fix.
func Trial(ctx context.Context, cfg TrialConfig) (err error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	criu := cfg.CRIU
	if criu == "" {
		if criu, err = exec.LookPath("criu"); err != nil {
			return &CRIUError{Op: "check", Cause: Cause{"criu is not installed", "run .ci/install-deps as root"}, Err: err}
		}
	}
	if len(cfg.Child) == 0 {
		return errors.New("snapshot trial: no child command")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	img, work := filepath.Join(dir, "image"), filepath.Join(dir, "work")
	for _, d := range []string{img, work} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("snapshot trial: %w", err)
		}
	}
	defer func() {
		if err == nil {
			_ = os.RemoveAll(dir)
		}
	}()

	// The namespace, made as the agent makes an instance's.
	netns := filepath.Join(dir, "netns")
	if f, err := os.Create(netns); err == nil {
		f.Close()
	}
	if out, err := exec.CommandContext(ctx, "unshare", "--net="+netns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("snapshot trial: network namespace (unshare, ip): %v: %s", err, strings.TrimSpace(string(out)))
	}
	defer func() {
		_ = syscall.Unmount(netns, syscall.MNT_DETACH)
		_ = os.Remove(netns)
	}()
	var st syscall.Stat_t
	if err := syscall.Stat(netns, &st); err != nil {
		return err
	}

	// The process: a session of its own, stdio on /dev/null.
	args := append([]string{"--net=" + netns, "--"}, cfg.Child...)
	child := exec.CommandContext(ctx, "nsenter", append(args, dir)...)
	child.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := child.Start(); err != nil {
		return fmt.Errorf("snapshot trial: start the trial process: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	defer func() {
		_ = child.Process.Kill()
		<-exited
	}()
	if err := waitFile(ctx, filepath.Join(dir, "ready"), exited); err != nil {
		return fmt.Errorf("snapshot trial: the trial process did not start: %w", err)
	}

	dump := exec.CommandContext(ctx, criu, "dump", "-t", strconv.Itoa(child.Process.Pid), "-D", img, "-W", work,
		"-o", "dump.log", "--tcp-established", "--external", fmt.Sprintf("net[%d]:%s", st.Ino, externalNetns))
	if out, err := dump.CombinedOutput(); err != nil {
		return KeepLog("dump", filepath.Join(work, "dump.log"), dir, "dump", fmt.Errorf("%w: %s", err, firstLine(out)))
	}
	<-exited // criu kills what it dumped
	exited <- nil

	ns, err := os.Open(netns)
	if err != nil {
		return err
	}
	defer ns.Close()
	pidfile := filepath.Join(dir, "restored.pid")
	restore := exec.CommandContext(ctx, criu, "restore", "-D", img, "-W", work, "-o", "restore.log",
		"--tcp-established", "--restore-detached", "--pidfile", pidfile,
		"--inherit-fd", "fd[3]:"+externalNetns)
	restore.ExtraFiles = []*os.File{ns}
	if out, err := restore.CombinedOutput(); err != nil {
		return KeepLog("restore", filepath.Join(work, "restore.log"), dir, "restore", fmt.Errorf("%w: %s", err, firstLine(out)))
	}
	if b, err := os.ReadFile(pidfile); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
			defer syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "ping"), nil, 0o600); err != nil {
		return err
	}
	if err := waitFile(ctx, filepath.Join(dir, "pong"), nil); err != nil {
		return &CRIUError{Op: "restore", Err: err, Log: filepath.Join(work, "restore.log"),
			Cause: Cause{Problem: "the restored process lost its loopback connection"}}
	}
	return nil
}

// waitFile waits until path exists, the context ends or exited says the
// process it waits on is gone.
func waitFile(ctx context.Context, path string, exited chan error) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	limit := time.After(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("it exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-limit:
			return fmt.Errorf("no %s after 10 s", filepath.Base(path))
		case <-t.C:
		}
	}
}

// TrialChild is the process Trial snapshots: it connects to itself over
// loopback TCP (MPTCP off, which CRIU cannot dump), says it is ready, then
// keeps bouncing a byte over the connection. Once Trial writes DIR/ping
// (after the restore), one more round trip writes DIR/pong and it exits.
func TrialChild(dir string) error {
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	d := net.Dialer{}
	d.SetMultipathTCP(false)
	client, err := d.Dial("tcp4", ln.Addr().String())
	if err != nil {
		return err
	}
	server, err := ln.Accept()
	if err != nil {
		return err
	}
	ln.Close()
	if err := os.WriteFile(filepath.Join(dir, "ready"), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return err
	}
	b := make([]byte, 1)
	for {
		_, pingErr := os.Stat(filepath.Join(dir, "ping"))
		if err := roundTrip(client, server, b); err != nil {
			return err
		}
		if pingErr == nil {
			return os.WriteFile(filepath.Join(dir, "pong"), nil, 0o600)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func roundTrip(client, server net.Conn, b []byte) error {
	deadline := time.Now().Add(30 * time.Second) // spans a dump and a restore
	client.SetDeadline(deadline)
	server.SetDeadline(deadline)
	if _, err := client.Write([]byte{'x'}); err != nil {
		return err
	}
	if _, err := server.Read(b); err != nil {
		return err
	}
	if _, err := server.Write(b); err != nil {
		return err
	}
	_, err := client.Read(b)
	return err
}
