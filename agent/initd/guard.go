package initd

import (
	"errors"
	"fmt"
	"syscall"
	"unsafe"
)

// ErrGuard wraps a failure to put amber-init out of its runtime's reach.
var ErrGuard = errors.New("guard amber-init")

// Capabilities amber-init keeps past takeOver (linux/capability.h).
const (
	capKill   = 5 // signal the runtime, which runs as another user
	capSetgid = 6 // start the runtime with its groups
	capSetuid = 7 // start the runtime as its user

	linuxCapabilityVersion3 = 0x20080522
)

// GuardCapabilities are the capabilities amber-init must be started with
// (effective, permitted, inheritable and ambient, so they survive its
// execve as a non-root user) for WithGuard: CAP_SETUID and CAP_SETGID to
// become root and start the runtime as its user, CAP_SETPCAP to empty the
// bounding set, CAP_KILL to signal the runtime.
var GuardCapabilities = []string{"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP"}

// guard is how amber-init keeps the function's code away from itself: it
// runs as root in the container (another user than the runtime, unless
// the runtime is root too), non-dumpable, and, once the runtime is
// started, with CAP_KILL alone. Then the runtime can neither ptrace it,
// open /proc/1/mem or /proc/1/fd/*, nor signal it. A runtime that is
// root itself (an image that says so) is kept out by non-dumpable alone:
// it can still signal amber-init, though not with SIGKILL or SIGSTOP,
// which PID 1 of a pid namespace never takes from inside it.
//
// amber-init is started as the function's user holding GuardCapabilities.
// takeOver records that user for the runtime and becomes root;
// lockDown drops what only starting the runtime needed.
type guard struct {
	runtime *syscall.Credential // who the runtime runs as
}

// takeOver records the user, group and supplementary groups amber-init was
// started as, becomes root (uid and gid 0, no supplementary groups), makes
// itself non-dumpable, empties the bounding set (a runtime that is root
// cannot gain anything through execve) and keeps in the permitted and
// effective sets only what starting the runtime as that user and
// signalling it take. The inheritable set goes empty, and with it the
// ambient set, so the runtime starts without capabilities.
func takeOver() (*guard, error) {
	groups, err := syscall.Getgroups()
	if err != nil {
		return nil, fmt.Errorf("%w: getgroups: %w", ErrGuard, err)
	}
	g := &guard{runtime: &syscall.Credential{Uid: uint32(syscall.Getuid()), Gid: uint32(syscall.Getgid())}}
	for _, id := range groups {
		g.runtime.Groups = append(g.runtime.Groups, uint32(id))
	}
	steps := []struct {
		what string
		do   func() error
	}{
		{"setgroups", func() error { return syscall.Setgroups(nil) }},
		{"setresgid", func() error { return syscall.Setresgid(0, 0, 0) }},
		{"setresuid", func() error { return syscall.Setresuid(0, 0, 0) }},
		{"set non-dumpable", setNonDumpable}, // after the uid change, which resets it
		{"drop the bounding set", dropBoundingSet},
		{"set capabilities", func() error { return setCapabilities(capKill, capSetgid, capSetuid) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrGuard, s.what, err)
		}
	}
	return g, nil
}

// lockDown keeps CAP_KILL alone, once the runtime has been started.
func (g *guard) lockDown() error {
	if err := setCapabilities(capKill); err != nil {
		return fmt.Errorf("%w: drop capabilities: %w", ErrGuard, err)
	}
	if err := setNonDumpable(); err != nil {
		return fmt.Errorf("%w: set non-dumpable: %w", ErrGuard, err)
	}
	return nil
}

// setNonDumpable denies ptrace, /proc/PID/mem and /proc/PID/fd to anyone
// without CAP_SYS_PTRACE, even a process of the same user. It holds for
// the whole process.
func setNonDumpable() error {
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_DUMPABLE, 0, 0); e != 0 {
		return e
	}
	return nil
}

// dropBoundingSet removes every capability from the bounding set of every
// thread (it is per thread, and children inherit the forking thread's).
func dropBoundingSet() error {
	for c := uintptr(0); ; c++ {
		_, _, e := syscall.AllThreadsSyscall(syscall.SYS_PRCTL, syscall.PR_CAPBSET_DROP, c, 0)
		switch {
		case e == syscall.EINVAL: // past the kernel's last capability
			if c == 0 {
				return e
			}
			return nil
		case e == syscall.ENOTSUP:
			return fmt.Errorf("%w (amber-init must be built with CGO_ENABLED=0)", e)
		case e != 0:
			return fmt.Errorf("capability %d: %w", c, e)
		}
	}
}

// setCapabilities makes caps the effective and permitted sets of every
// thread, with an empty inheritable set (which empties the ambient set).
func setCapabilities(caps ...uint) error {
	hdr := struct {
		version uint32
		pid     int32
	}{version: linuxCapabilityVersion3}
	var data [2]struct{ effective, permitted, inheritable uint32 }
	for _, c := range caps {
		data[c/32].effective |= 1 << (c % 32)
		data[c/32].permitted |= 1 << (c % 32)
	}
	if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return e
	}
	return nil
}
