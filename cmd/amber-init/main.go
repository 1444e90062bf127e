// Command amber-init is the PID 1 of every amber function instance. It
// serves the Lambda Runtime API, starts the function's runtime and talks
// to the agent in frames on stdin and stdout; see package initd.
//
// Usage:
//
//	amber-init [-listen 127.0.0.1:9001] [-debug] [-guard] [--] [command [args...]]
//
// With -guard (what the agent runs) amber-init is started as the
// function's user holding initd.GuardCapabilities; it becomes root,
// non-dumpable, starts the runtime as that user without capabilities and
// keeps CAP_KILL alone, so the function cannot trace, read or signal it.
//
// Without a command it runs the first executable of
// $LAMBDA_TASK_ROOT/bootstrap, /var/runtime/bootstrap, /var/task/bootstrap.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"runtime"
	"syscall"

	"github.com/amberfn/amber/agent/initd"
)

func main() {
	// amber-init relays one invocation at a time: a second P would only
	// spin looking for work and hand goroutines between threads, which
	// costs the instance CPU on every invocation. With one P the frame
	// pipes must be on the poller (pollable), or a blocked read would hold
	// the P until sysmon takes it back.
	runtime.GOMAXPROCS(1)
	listen := flag.String("listen", initd.DefaultListenAddr, "Runtime API listen address")
	debug := flag.Bool("debug", false, "log debug messages to stderr")
	guard := flag.Bool("guard", false, "run as root, out of the runtime's reach, and the runtime as the user amber-init was started as")
	flag.Parse()

	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	opts := []initd.Option{initd.WithListenAddr(*listen), initd.WithLogger(log),
		initd.WithStdio(pollable(0, "stdin"), pollable(1, "stdout"))}
	if *guard {
		opts = append(opts, initd.WithGuard())
	}
	if args := flag.Args(); len(args) > 0 {
		opts = append(opts, initd.WithCommand(args...))
	}
	err := initd.New(opts...).Run(context.Background())
	if err != nil {
		log.Info("amber-init exiting", "err", err)
	}
	os.Exit(initd.ExitCode(err))
}

// pollable returns fd as a file on Go's poller: a frame read then parks a
// goroutine instead of holding a thread (and, with one P, the P) in a
// blocking read until sysmon takes the P back.
func pollable(fd int, name string) *os.File {
	_ = syscall.SetNonblock(fd, true) // if refused, the file stays blocking: slower, not wrong
	return os.NewFile(uintptr(fd), name)
}
