package monitor

// This is the only file that imports gopsutil. Moving to gopsutil v4 means
// changing the four import paths below and nothing else.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"github.com/shirou/gopsutil/v3/cpu"
	"github.com/shirou/gopsutil/v3/load"
	"github.com/shirou/gopsutil/v3/mem"
	"github.com/shirou/gopsutil/v3/process"
)

// readCores reads the cumulative CPU times of every logical CPU (one read of
// /proc/stat on Linux). Every caller gets its own copy: no baseline is kept
// here, unlike cpu.Percent.
func readCores(ctx context.Context) ([]Core, error) {
	ts, err := cpu.TimesWithContext(ctx, true)
	if err != nil {
		return nil, fmt.Errorf("monitor: read CPU times: %w", err)
	}
	if len(ts) == 0 {
		return nil, errors.New("monitor: read CPU times: no CPU found")
	}
	cores := make([]Core, len(ts))
	for i, t := range ts {
		n, err := strconv.Atoi(strings.TrimPrefix(t.CPU, "cpu"))
		if err != nil {
			n = i
		}
		cores[i] = Core{CPU: n, Times: CPUTimes{
			User:    t.User,
			Nice:    t.Nice,
			System:  t.System,
			Idle:    t.Idle,
			IOWait:  t.Iowait,
			IRQ:     t.Irq,
			SoftIRQ: t.Softirq,
			Steal:   t.Steal,
		}}
	}
	return cores, nil
}

// readMemory reads the system memory figures. Used is Total minus Available,
// the memory programs cannot get back without swapping.
func readMemory(ctx context.Context) (Memory, error) {
	vm, err := mem.VirtualMemoryWithContext(ctx)
	if err != nil {
		return Memory{}, fmt.Errorf("monitor: read memory: %w", err)
	}
	m := Memory{Total: vm.Total, Available: vm.Available}
	if m.Available <= m.Total {
		m.Used = m.Total - m.Available
	}
	if m.Total > 0 {
		m.UsedRatio = float64(m.Used) / float64(m.Total)
	}
	return m, nil
}

// readLoad reads the 1, 5 and 15 minute load averages. Windows has none:
// gopsutil emulates them there with a goroutine that never ends, so they
// are left at zero instead.
func readLoad(ctx context.Context) (Load, error) {
	if runtime.GOOS == "windows" {
		return Load{}, nil
	}
	a, err := load.AvgWithContext(ctx)
	if err != nil {
		return Load{}, fmt.Errorf("monitor: read load average: %w", err)
	}
	return Load{Load1: a.Load1, Load5: a.Load5, Load15: a.Load15}, nil
}

// proc is a handle on one process; it caches what never changes (the name).
type proc struct {
	p    *process.Process
	name string
}

// errGone reports that a process no longer exists.
var errGone = errors.New("monitor: process gone")

// openProc returns a handle on process pid, or errGone.
func openProc(ctx context.Context, pid int) (*proc, error) {
	p, err := process.NewProcessWithContext(ctx, int32(pid))
	if err != nil {
		if errors.Is(err, process.ErrorProcessNotRunning) {
			return nil, errGone
		}
		return nil, fmt.Errorf("monitor: open process %d: %w", pid, err)
	}
	name, _ := p.NameWithContext(ctx) // a name is nice to have, not needed
	return &proc{p: p, name: name}, nil
}

// gone maps the error of a read of a process that has exited to errGone.
func (h *proc) gone(ctx context.Context, err error) error {
	if ok, e := process.PidExistsWithContext(ctx, h.p.Pid); e == nil && !ok {
		return errGone
	}
	return fmt.Errorf("monitor: read process %d: %w", h.p.Pid, err)
}

// cpuSeconds returns the user plus system CPU time the process has used.
func (h *proc) cpuSeconds(ctx context.Context) (float64, error) {
	t, err := h.p.TimesWithContext(ctx)
	if err != nil {
		return 0, h.gone(ctx, err)
	}
	return t.User + t.System, nil
}

// rss returns the resident set size of the process in bytes.
func (h *proc) rss(ctx context.Context) (uint64, error) {
	m, err := h.p.MemoryInfoWithContext(ctx)
	if err != nil {
		return 0, h.gone(ctx, err)
	}
	return m.RSS, nil
}

// threads returns the user plus system CPU time of each thread, by thread id.
func (h *proc) threads(ctx context.Context) (map[int]float64, error) {
	ts, err := h.p.ThreadsWithContext(ctx)
	if err != nil {
		return nil, h.gone(ctx, err)
	}
	out := make(map[int]float64, len(ts))
	for tid, t := range ts {
		out[int(tid)] = t.User + t.System
	}
	return out, nil
}
