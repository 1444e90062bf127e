// initattack is an aws-lambda-go function that tries, from inside its
// instance, to take over amber-init (PID 1): trace it, read its memory,
// reach its frame stream through /proc/1/fd or pidfd_getfd, and signal it. Each attempt
// reports "allowed" or the error that refused it. Whatever succeeds is
// undone at once (a trace is detached, a file closed unwritten), and
// signals are tried only when asked for.
package main

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"github.com/aws/aws-lambda-go/lambda"
)

type event struct {
	Signals bool `json:"signals"` // also kill(1, …) with 0, SIGTERM and SIGKILL
}

type attempt struct {
	name string
	try  func() error
}

// ptraceSeize is PTRACE_SEIZE, which the syscall package does not name.
const ptraceSeize = 0x4206

func handler(_ context.Context, ev event) (map[string]string, error) {
	out := map[string]string{
		"uid":      strconv.Itoa(os.Getuid()),
		"init_uid": procStatus(1, "Uid"),
		"init_cap": procStatus(1, "CapEff"),
	}
	for _, set := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		out[set] = procStatus(os.Getpid(), set)
	}
	attempts := []attempt{
		{"ptrace_attach", func() error {
			if err := syscall.PtraceAttach(1); err != nil {
				return err
			}
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(1, &ws, syscall.WALL, nil) // detach wants it stopped
			return syscall.PtraceDetach(1)
		}},
		{"ptrace_seize", func() error {
			if _, _, e := syscall.RawSyscall6(syscall.SYS_PTRACE, ptraceSeize, 1, 0, 0, 0, 0); e != 0 {
				return e
			}
			return syscall.PtraceDetach(1)
		}},
		{"mem_read", openClose("/proc/1/mem", os.O_RDONLY)},
		{"vm_read", vmRead},
		{"pidfd_getfd", pidfdGetfd},
		{"environ_read", openClose("/proc/1/environ", os.O_RDONLY)},
		{"fd0_read", openClose("/proc/1/fd/0", os.O_RDONLY)},
		{"fd0_write", openClose("/proc/1/fd/0", os.O_WRONLY)},
		{"fd1_write", openClose("/proc/1/fd/1", os.O_WRONLY)},
		{"fd_list", func() error { _, err := os.ReadDir("/proc/1/fd"); return err }},
	}
	if ev.Signals {
		for _, s := range []struct {
			name string
			sig  syscall.Signal
		}{{"kill_0", 0}, {"kill_term", syscall.SIGTERM}, {"kill_kill", syscall.SIGKILL}} {
			attempts = append(attempts, attempt{s.name, func() error { return syscall.Kill(1, s.sig) }})
		}
	}
	for _, a := range attempts {
		out[a.name] = result(a.try())
	}
	return out, nil
}

// vmRead reads a byte of PID 1's memory with process_vm_readv.
func vmRead() error {
	var b [1]byte
	local := syscall.Iovec{Base: &b[0], Len: 1}
	remote := struct{ base, len uintptr }{0x400000, 1} // where a static Go binary is mapped
	const sysProcessVMReadv = 310                      // linux/amd64
	_, _, e := syscall.Syscall6(sysProcessVMReadv, 1,
		uintptr(unsafe.Pointer(&local)), 1, uintptr(unsafe.Pointer(&remote)), 1, 0)
	if e != 0 {
		return e
	}
	return nil
}

// pidfdGetfd takes a copy of PID 1's stdout (its frame stream) with
// pidfd_getfd, and closes it at once if it gets one.
func pidfdGetfd() error {
	const sysPidfdOpen, sysPidfdGetfd = 434, 438 // every architecture
	pidfd, _, e := syscall.Syscall(sysPidfdOpen, 1, 0, 0)
	if e != 0 {
		return e
	}
	defer syscall.Close(int(pidfd))
	fd, _, e := syscall.Syscall(sysPidfdGetfd, pidfd, 1, 0)
	if e != 0 {
		return e
	}
	return syscall.Close(int(fd))
}

func openClose(path string, flag int) func() error {
	return func() error {
		f, err := os.OpenFile(path, flag, 0)
		if err != nil {
			return err
		}
		return f.Close()
	}
}

// result is "allowed", the errno's text, or the whole error.
func result(err error) string {
	var errno syscall.Errno
	switch {
	case err == nil:
		return "allowed"
	case errors.As(err, &errno):
		return errno.Error()
	default:
		return err.Error()
	}
}

// procStatus is the first field of a line of /proc/PID/status.
func procStatus(pid int, key string) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return result(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				return f[0]
			}
		}
	}
	return ""
}

func main() { lambda.Start(handler) }
