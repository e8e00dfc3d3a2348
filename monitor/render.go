package monitor

import (
	"bytes"
	"fmt"
	"io"
	"strings"
)

const (
	barWidth = 20
	rule     = "=================================================="

	colorReset  = "\x1b[0m"
	colorGreen  = "\x1b[32m"
	colorYellow = "\x1b[33m"
	colorRed    = "\x1b[31m"
)

// Render writes snap to w as a block of text lines, one bar per core:
//
//	[12:45:30] ==================================================
//	CPU Total:  45.2%
//	  CPU0: [████████████░░░░░░░░] 60.5%
//	  CPU1: [██████░░░░░░░░░░░░░░] 30.1%
//	Memory:     35.4% (708/2000 MB)
//	Load Avg:  1.23, 0.98, 0.76
//
// followed by a line per watched process (and per thread, see WithThreads)
// with its CPU usage, resident memory, last CPU and allowed CPUs. The time
// is printed in snap.Time's location. Bars are coloured green, yellow and
// red (below 50%, below 80%, above) only when w is a terminal, the
// NO_COLOR environment variable is unset or empty and TERM is not "dumb";
// otherwise the output holds no escape code. Render makes one Write call and returns its error.
func Render(w io.Writer, snap Snapshot) error {
	var buf bytes.Buffer
	render(&buf, snap, styled(w))
	_, err := w.Write(buf.Bytes())
	return err
}

func render(b *bytes.Buffer, snap Snapshot, color bool) {
	fmt.Fprintf(b, "[%s] %s\n", snap.Time.Format("15:04:05"), rule)
	fmt.Fprintf(b, "CPU Total: %5.1f%%\n", 100*snap.CPU)
	width := 0
	for _, c := range snap.Cores {
		width = max(width, len(fmt.Sprint(c.CPU)))
	}
	for _, c := range snap.Cores {
		label := fmt.Sprintf("CPU%d:", c.CPU)
		fmt.Fprintf(b, "  %-*s [%s]%5.1f%%\n", width+4, label, bar(c.Usage, color), 100*c.Usage)
	}
	const mb = 1 << 20
	m := snap.Memory
	fmt.Fprintf(b, "Memory:    %5.1f%% (%d/%d MB)\n", 100*m.UsedRatio, m.Used/mb, m.Total/mb)
	fmt.Fprintf(b, "Load Avg:  %.2f, %.2f, %.2f\n", snap.Load.Load1, snap.Load.Load5, snap.Load.Load15)
	for _, p := range snap.Procs {
		fmt.Fprintf(b, "PID %-7d %-15s CPU %5.1f%%  RSS %6.1f MB  last CPU %s  allowed %s\n",
			p.PID, p.Name, 100*p.CPU, float64(p.RSS)/mb, cpuName(p.LastCPU), allowedName(p))
		for _, t := range p.Threads {
			fmt.Fprintf(b, "  TID %-9d CPU %5.1f%%  last CPU %s\n", t.TID, 100*t.CPU, cpuName(t.LastCPU))
		}
	}
}

// bar draws a bar of barWidth cells filled in proportion to usage.
func bar(usage float64, color bool) string {
	usage = min(max(usage, 0), 1)
	n := int(usage*barWidth + 0.5)
	full := strings.Repeat("█", n)
	if color {
		c := colorGreen
		switch {
		case usage >= 0.8:
			c = colorRed
		case usage >= 0.5:
			c = colorYellow
		}
		full = c + full + colorReset
	}
	return full + strings.Repeat("░", barWidth-n)
}

func cpuName(cpu int) string {
	if cpu < 0 {
		return "?"
	}
	return fmt.Sprint(cpu)
}

func allowedName(p Process) string {
	if p.Allowed == nil {
		return "?"
	}
	return p.Allowed.String()
}
