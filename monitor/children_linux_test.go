package monitor_test

import (
	"os"
	"os/exec"
	"slices"
	"testing"

	"github.com/corework/corework/monitor"
)

func pidsOf(snap monitor.Snapshot) []int {
	var pids []int
	for _, p := range snap.Procs {
		pids = append(pids, p.PID)
	}
	return pids
}

// By default the rows are this process and its children: a child started
// with os/exec gets a row, with its name, last CPU and allowed CPUs, and
// loses it when it exits. WithChildren(false) leaves it out.
func TestChildRows(t *testing.T) {
	cmds := make([]*exec.Cmd, 2)
	for i := range cmds {
		cmds[i] = exec.Command("sleep", "5")
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			cmds[i].Process.Kill()
			cmds[i].Wait()
		}()
	}
	children := []int{cmds[0].Process.Pid, cmds[1].Process.Pid}
	slices.Sort(children)

	s := newSampler(t, monitor.WithMinWindow(0), monitor.WithPIDs(children[1]))
	snap := sample(t, s)
	if got, want := pidsOf(snap), append([]int{os.Getpid()}, children...); !slices.Equal(got, want) {
		t.Fatalf("rows %v, want this process then its children %v", got, want)
	}
	for _, p := range snap.Procs[1:] {
		t.Logf("child row %+v", p)
		if p.Name != "sleep" || p.RSS == 0 || p.CPU > 0.5 || p.LastCPU < 0 || len(p.Allowed) == 0 || !p.Allowed.Contains(p.LastCPU) {
			t.Errorf("child row %+v", p)
		}
		if !slices.Equal(p.Allowed, snap.Procs[0].Allowed) {
			t.Errorf("child allowed CPUs %v, parent's %v", p.Allowed, snap.Procs[0].Allowed)
		}
	}

	without := newSampler(t, monitor.WithMinWindow(0), monitor.WithChildren(false), monitor.WithPIDs(children[1]))
	if got, want := pidsOf(sample(t, without)), []int{os.Getpid(), children[1]}; !slices.Equal(got, want) {
		t.Errorf("rows without children %v, want %v", got, want)
	}

	// The first child exits and is waited for: its row goes, without error.
	cmds[0].Process.Kill()
	cmds[0].Wait()
	if got, want := pidsOf(sample(t, s)), []int{os.Getpid(), cmds[1].Process.Pid}; !slices.Equal(got, want) {
		t.Errorf("rows after exit %v, want %v", got, want)
	}
}
