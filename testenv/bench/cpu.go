package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// CPUSample is the CPU time (user + system, in clock ticks) of every
// process that belongs to a cluster, by command name: this process (the
// clients, the scheduler and the agents of a testenv cluster) and every
// process whose command line, or an ancestor's, names the cluster's
// folder (containerd, the shims, amber-init, the functions' runtimes).
type CPUSample map[int]procCPU

type procCPU struct {
	comm  string
	ticks int64
}

// clockTick is USER_HZ, 100 on every Linux this runs on.
const clockTick = 100

// SampleCPU reads /proc for the processes of the cluster in dir.
func SampleCPU(dir string) CPUSample {
	type proc struct {
		ppid  int
		comm  string
		ticks int64
		cmd   string
	}
	all := map[int]proc{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(stat)
		open, shut := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || shut < open || shut+2 > len(s) {
			continue
		}
		f := strings.Fields(s[shut+2:])
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		all[pid] = proc{ppid: ppid, comm: strings.TrimPrefix(s[open+1:shut], "."), ticks: utime + stime, cmd: string(cmd)}
	}
	ours := func(pid int) bool {
		for depth := 0; depth < 16; depth++ {
			p, ok := all[pid]
			if !ok {
				return false
			}
			if pid == os.Getpid() || strings.Contains(p.cmd, dir) {
				return true
			}
			pid = p.ppid
		}
		return false
	}
	out := CPUSample{}
	for pid, p := range all {
		if ours(pid) {
			out[pid] = procCPU{comm: p.comm, ticks: p.ticks}
		}
	}
	return out
}

// CPUShare is one command's CPU time per operation.
type CPUShare struct {
	Command string
	PerOp   float64 // microseconds of CPU per operation
}

// CPUPerOp is the CPU each command used between before and after,
// divided by ops, largest first, and the total. A process that started
// in between counts from zero; one that ended is not seen.
func CPUPerOp(before, after CPUSample, ops int) ([]CPUShare, float64) {
	if ops <= 0 {
		return nil, 0
	}
	by := map[string]int64{}
	for pid, p := range after {
		d := p.ticks
		if b, ok := before[pid]; ok && b.comm == p.comm {
			d -= b.ticks
		}
		by[p.comm] += d
	}
	var out []CPUShare
	total := 0.0
	for comm, ticks := range by {
		us := float64(ticks) * 1e6 / clockTick / float64(ops)
		out = append(out, CPUShare{Command: comm, PerOp: us})
		total += us
	}
	for i := range out { // few commands: insertion sort, largest first
		for j := i; j > 0 && out[j].PerOp > out[j-1].PerOp; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out, total
}

// String is "name 123 µs" pairs.
func (s CPUShare) String() string { return fmt.Sprintf("%s %.0f µs", s.Command, s.PerOp) }
