package procpool_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corework/corework/procpool"
)

var (
	// suicideTask kills its own worker process with SIGKILL.
	suicideTask = procpool.Register("test.suicide", func(context.Context, int) (int, error) {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Minute)
		return 0, nil
	})

	// spawnTask starts "sleep 300" and does not wait for it; it writes the
	// sleep's PID and its own to the file named in.path, then does in.then:
	// "block", "crash" (SIGKILL itself) or "return".
	spawnTask = procpool.Register("test.spawn", func(_ context.Context, in spawnIn) (int, error) {
		cmd := exec.Command("sleep", "300")
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		pids := fmt.Sprintf("%d %d", cmd.Process.Pid, os.Getpid())
		if err := os.WriteFile(in.Path, []byte(pids), 0o600); err != nil {
			return 0, err
		}
		switch in.Then {
		case "block":
			time.Sleep(time.Hour)
		case "crash":
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			time.Sleep(time.Minute)
		}
		return cmd.Process.Pid, nil
	})

	// fdTask misuses a protocol descriptor the way task code that assumes
	// it owns descriptors 3 and 4 might.
	fdTask = procpool.Register("test.fd", func(_ context.Context, op string) (int, error) {
		var err error
		switch op {
		case "close 3":
			err = unix.Close(3)
		case "close 4":
			err = unix.Close(4)
		case "write 3":
			_, err = unix.Write(3, []byte("\x00\x00\x00\x05garbage"))
		case "write 4":
			_, err = unix.Write(4, []byte("\x00\x00\x00\x05garbage"))
		}
		return os.Getpid(), err
	})
)

type spawnIn struct{ Path, Then string }

// TestCrashFailsOnlyItsCall: with the default options, a worker that dies
// in a task fails that task's call only; the calls and the chunks of Map
// queued behind it on the same worker are sent again and succeed.
func TestCrashFailsOnlyItsCall(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(2), procpool.WithLogger(slog.New(slog.DiscardHandler)))
	ctx := context.Background()
	const crashes = 50
	var echoes, echoFailed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Go(func() {
			msg := []byte{byte(g), 1, 2, 3}
			for {
				select {
				case <-stop:
					return
				default:
				}
				out, err := echoBytes.Call(ctx, p, msg)
				echoes.Add(1)
				if err != nil || string(out) != string(msg) {
					if echoFailed.Add(1) <= 5 {
						t.Errorf("echo: %q, %v", out, err)
					}
				}
			}
		})
	}
	var maps, mapFailed atomic.Int64
	wg.Go(func() {
		in := ints(64)
		for {
			select {
			case <-stop:
				return
			default:
			}
			out, err := double.Map(ctx, p, in, procpool.WithChunkSize(4))
			maps.Add(1)
			if err != nil || len(out) != len(in) || out[63] != 126 {
				if mapFailed.Add(1) <= 5 {
					t.Errorf("map: %v", err)
				}
			}
		}
	})
	for i := range crashes {
		_, err := suicideTask.Call(ctx, p, i)
		var ce *procpool.CrashError
		if !errors.Is(err, procpool.ErrWorkerCrashed) || !errors.As(err, &ce) {
			t.Errorf("crash call %d: %v", i, err)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d echo calls, %d failed; %d maps, %d failed; stats %+v",
		echoes.Load(), echoFailed.Load(), maps.Load(), mapFailed.Load(), p.Stats())
	if n := echoFailed.Load(); n != 0 {
		t.Errorf("%d of %d echo calls failed", n, echoes.Load())
	}
	if n := mapFailed.Load(); n != 0 {
		t.Errorf("%d of %d maps failed", n, maps.Load())
	}
	// Each crash call ran once: it was never resent to crash another worker.
	if st := p.Stats(); st.Crashes != crashes || st.Failed != crashes {
		t.Errorf("stats %+v, want %d crashes and failures", st, crashes)
	}
}

// TestTaskChildrenDie: the processes a task starts end with its worker,
// whether the worker is killed on its call's timeout, crashes, is closed
// or shut down: each worker runs in its own process group, which is
// killed when the worker ends.
func TestTaskChildrenDie(t *testing.T) {
	for _, c := range []struct {
		name, then string
		end        func(t *testing.T, p *procpool.Pool, call func(context.Context) error)
	}{
		{"timeout", "block", func(t *testing.T, p *procpool.Pool, call func(context.Context) error) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := call(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("call: %v", err)
			}
		}},
		{"crash", "crash", func(t *testing.T, p *procpool.Pool, call func(context.Context) error) {
			if err := call(context.Background()); !errors.Is(err, procpool.ErrWorkerCrashed) {
				t.Errorf("call: %v", err)
			}
		}},
		{"close", "block", func(t *testing.T, p *procpool.Pool, call func(context.Context) error) {
			errc := make(chan error, 1)
			go func() { errc <- call(context.Background()) }()
			waitInFlight(t, p, 1)
			time.Sleep(200 * time.Millisecond) // let the task start its child
			p.Close()
			if err := <-errc; !errors.Is(err, procpool.ErrClosed) {
				t.Errorf("call: %v", err)
			}
		}},
		{"shutdown", "return", func(t *testing.T, p *procpool.Pool, call func(context.Context) error) {
			if err := call(context.Background()); err != nil {
				t.Errorf("call: %v", err)
			}
			if err := p.Shutdown(context.Background()); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newPool(t, procpool.WithWorkers(1), procpool.WithLogger(slog.New(slog.DiscardHandler)))
			path := filepath.Join(t.TempDir(), "pids")
			c.end(t, p, func(ctx context.Context) error {
				_, err := spawnTask.Call(ctx, p, spawnIn{Path: path, Then: c.then})
				return err
			})
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("the task never started its child: %v", err)
			}
			var child, worker int
			if _, err := fmt.Sscan(string(b), &child, &worker); err != nil {
				t.Fatalf("pids %q: %v", b, err)
			}
			// Gone, or a zombie that its new parent has yet to reap.
			deadline := time.Now().Add(10 * time.Second)
			for {
				left := groupMembers(worker)
				state, _, _, err := procStat3(child)
				if len(left) == 0 && (err != nil || state == 'Z') {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("child %d (state %c, %v) and group %d members %v still alive", child, state, err, worker, left)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// procStat3 returns the state, parent PID and process group of pid.
func procStat3(pid int) (state byte, ppid, pgrp int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, 0, fmt.Errorf("bad stat %q", s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 3 {
		return 0, 0, 0, fmt.Errorf("bad stat %q", s)
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgrp, err2 := strconv.Atoi(f[2])
	return f[0][0], ppid, pgrp, errors.Join(err1, err2)
}

// groupMembers lists the live (not zombie) processes of process group pgrp.
func groupMembers(pgrp int) []string {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var out []string
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		if state, _, g, err := procStat3(pid); err == nil && g == pgrp && state != 'Z' {
			out = append(out, fmt.Sprintf("pid %d state %c", pid, state))
		}
	}
	return out
}

// TestProtocolFdsProtected: a task that closes or writes descriptor 3 or 4,
// where the worker received its pipes, breaks neither its own call nor the
// next one on the same worker.
func TestProtocolFdsProtected(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(1))
	ctx := context.Background()
	before, err := pidTask.Call(ctx, p, struct{}{})
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{"write 4", "write 3", "close 3", "close 4"} {
		if pid, err := fdTask.Call(ctx, p, op); err != nil || pid != before {
			t.Errorf("%s: pid %d (worker %d), %v", op, pid, before, err)
		}
		if v, err := double.Call(ctx, p, 21); err != nil || v != 42 {
			t.Errorf("call after %s: %d, %v", op, v, err)
		}
	}
	if after, err := pidTask.Call(ctx, p, struct{}{}); err != nil || after != before {
		t.Errorf("worker %d replaced by %d, %v", before, after, err)
	}
	if st := p.Stats(); st.Crashes != 0 || st.Restarts != 0 {
		t.Errorf("stats %+v", st)
	}
}

// oomTask runs its worker out of memory: it caps the process's address
// space a little above what it maps now (RLIMIT_AS) and allocates far
// beyond it, so the Go runtime dies with "fatal error: out of memory", as
// a worker under a memory limit does.
var oomTask = procpool.Register("test.oom", func(_ context.Context, mb int) (int, error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	var vmSize uint64 // in KiB
	for line := range strings.Lines(string(status)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmSize:" {
			vmSize, _ = strconv.ParseUint(f[1], 10, 64)
		}
	}
	if vmSize == 0 {
		return 0, errors.New("no VmSize in /proc/self/status")
	}
	limit := vmSize<<10 + 64<<20
	if err := unix.Setrlimit(unix.RLIMIT_AS, &unix.Rlimit{Cur: limit, Max: limit}); err != nil {
		return 0, err
	}
	var keep [][]byte
	for range mb {
		b := make([]byte, 1<<20)
		for i := range b {
			if i%4096 == 0 {
				b[i] = 1
			}
		}
		keep = append(keep, b)
	}
	return len(keep), nil
})

// TestOutOfMemory: a worker that runs out of memory in a task fails that
// call with ErrWorkerCrashed, whose Cause says why; the calls queued
// behind it, and the pool, go on.
func TestOutOfMemory(t *testing.T) {
	p := newPool(t, procpool.WithWorkers(1), procpool.WithLogger(slog.New(slog.DiscardHandler)))
	ctx := context.Background()
	oom := make(chan error, 1)
	go func() {
		_, err := oomTask.Call(ctx, p, 1024)
		oom <- err
	}()
	var echoes sync.WaitGroup
	for i := range 8 {
		echoes.Go(func() {
			msg := []byte{byte(i)}
			if out, err := echoBytes.Call(ctx, p, msg); err != nil || string(out) != string(msg) {
				t.Errorf("echo %d behind the out-of-memory task: %q, %v", i, out, err)
			}
		})
	}
	err := <-oom
	echoes.Wait()
	var ce *procpool.CrashError
	if !errors.Is(err, procpool.ErrWorkerCrashed) || !errors.As(err, &ce) {
		t.Fatalf("out-of-memory call: %v, want a CrashError", err)
	}
	// The runtime's reason comes before a goroutine dump longer than the
	// kept tail of stderr: Cause keeps it. Under the race detector, whose
	// runtime needs far more address space, the limit ends the worker
	// with "too many address space collisions" instead.
	want := "out of memory"
	if raceEnabled {
		want = "fatal error: "
	}
	if !strings.Contains(ce.Cause, want) || !strings.Contains(err.Error(), want) {
		t.Errorf("the crash does not say %q: Cause %q, error %v", want, ce.Cause, err)
	}
	if ce.State == nil || ce.State.ExitCode() != 2 {
		t.Errorf("exit state %v, want exit status 2 (the runtime's fatal error)", ce.State)
	}
	t.Logf("out-of-memory call: %v", err)
	if out, err := echoBytes.Call(ctx, p, []byte("after")); err != nil || string(out) != "after" {
		t.Errorf("call after the crash: %q, %v", out, err)
	}
	if st := p.Stats(); st.Crashes != 1 || st.Failed != 1 {
		t.Errorf("stats %+v, want 1 crash and 1 failure", st)
	}
}
