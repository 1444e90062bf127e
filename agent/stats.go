package agent

import (
	"github.com/shirou/gopsutil/v3/cpu"
	"github.com/shirou/gopsutil/v3/load"
	"github.com/shirou/gopsutil/v3/mem"

	"github.com/amberfn/amber/api"
)

// nodeStats reads the host's CPU, memory and load with gopsutil. CPU is
// the busy share since the previous call.
func nodeStats() api.NodeStats {
	var s api.NodeStats
	if p, err := cpu.Percent(0, false); err == nil && len(p) > 0 {
		s.CPUPercent = p[0]
	}
	if m, err := mem.VirtualMemory(); err == nil {
		s.MemUsedBytes, s.MemTotalBytes = m.Used, m.Total
	}
	if l, err := load.Avg(); err == nil {
		s.Load1 = l.Load1
	}
	return s
}
