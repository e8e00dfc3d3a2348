package procpool

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestCommName(t *testing.T) {
	for _, c := range []struct {
		prog string
		slot int
		want string
	}{
		{"myprog", 3, "myprog-w3"},
		{"procpool.test", 0, "procpool.tes-w0"},
		{"a-rather-long-program", 12, "a-rather-lo-w12"},
		{"añññññññ", 1, "añññññ-w1"},                // 12 bytes would end inside an ñ
		{"x", 123456789012345, "-w123456789012345"}, // no room left for the name
	} {
		got := commName(c.prog, c.slot)
		if got != c.want {
			t.Errorf("commName(%q, %d) = %q, want %q", c.prog, c.slot, got, c.want)
		}
	}
	for _, c := range []struct{ arg0, want string }{
		{"/usr/local/bin/myprog", "myprog"},
		{"./myprog", "myprog"},
		{"", "procpool"},
		{"/", "procpool"},
	} {
		if got := progName(c.arg0); got != c.want {
			t.Errorf("progName(%q) = %q, want %q", c.arg0, got, c.want)
		}
	}
}

// argvTask reports a worker's os.Args[0] and whether the name variable
// is still in its environment.
var argvTask = Register("test.name.argv", func(context.Context, int) (string, error) {
	_, leaked := os.LookupEnv(envArgv0)
	return os.Args[0] + " " + strconv.FormatBool(leaked), nil
})

// TestWorkerNames: ps, top and /proc show each worker as the program and
// its slot, and task code still sees the parent's os.Args[0].
func TestWorkerNames(t *testing.T) {
	if _, err := exec.LookPath("ps"); err != nil {
		t.Skip("no ps")
	}
	p, err := New(WithWorkers(2))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	prog := filepath.Base(os.Args[0]) // procpool.test
	for _, ws := range p.Stats().PerWorker {
		suffix := "-w" + strconv.Itoa(ws.ID)
		comm := prog[:min(len(prog), 15-len(suffix))] + suffix
		pid := strconv.Itoa(ws.PID)
		b, err := os.ReadFile("/proc/" + pid + "/comm")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(b)); got != comm {
			t.Errorf("worker %d: /proc/%s/comm = %q, want %q", ws.ID, pid, got, comm)
		}
		out, err := exec.Command("ps", "-o", "comm=", "-p", pid).Output()
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(out)); got != comm {
			t.Errorf("worker %d: ps -o comm= -p %s = %q, want %q", ws.ID, pid, got, comm)
		}
		out, err = exec.Command("ps", "-o", "args=", "-p", pid).Output()
		if err != nil {
			t.Fatal(err)
		}
		args := prog + " [worker " + strconv.Itoa(ws.ID) + "]"
		if got := strings.TrimSpace(string(out)); got != args {
			t.Errorf("worker %d: ps -o args= -p %s = %q, want %q", ws.ID, pid, got, args)
		}
		// Every thread, not just the main one, carries the name.
		threads, _ := filepath.Glob("/proc/" + pid + "/task/*/comm")
		for _, f := range threads {
			if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) != comm {
				t.Errorf("worker %d: %s = %q, want %q", ws.ID, f, strings.TrimSpace(string(b)), comm)
			}
		}
	}
	want := os.Args[0] + " false"
	for i := range 4 {
		got, err := argvTask.Call(context.Background(), p, i)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("task saw os.Args[0] and leaked env %q, want %q", got, want)
		}
	}
}
