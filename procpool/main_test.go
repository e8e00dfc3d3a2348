package procpool_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/corework/corework/procpool"
)

// Tasks used by the tests. They are registered at initialization, so the
// test binary's worker processes have them too.
var (
	double = procpool.Register("test.double", func(_ context.Context, n int) (int, error) { return 2 * n, nil })

	pidTask = procpool.Register("test.pid", func(context.Context, struct{}) (int, error) { return os.Getpid(), nil })

	sleepTask = procpool.Register("test.sleep", func(ctx context.Context, d time.Duration) (int, error) {
		time.Sleep(d)
		return os.Getpid(), nil
	})

	failTask = procpool.Register("test.fail", func(_ context.Context, n int) (int, error) {
		if n%7 == 3 {
			return 0, fmt.Errorf("bad input %d", n)
		}
		return n, nil
	})

	panicTask = procpool.Register("test.panic", func(_ context.Context, s string) (int, error) {
		panicHere(s)
		return 0, nil
	})

	exitTask = procpool.Register("test.exit", func(_ context.Context, code int) (int, error) {
		fmt.Fprintf(os.Stderr, "exiting with %d\n", code)
		os.Exit(code)
		return 0, nil
	})

	chattyTask = procpool.Register("test.chatty", func(_ context.Context, n int) (string, error) {
		// Output that would break a protocol carried on stdout: a frame
		// header, binary bytes, a partial line.
		fmt.Printf("\x00\x00\x00\x05hello %d\n", n)
		os.Stdout.Write([]byte{0xff, 0x00, 0x81, '\n'})
		fmt.Fprintf(os.Stderr, "to stderr %d\n", n)
		fmt.Printf("partial %d ", n)
		return "ok " + strconv.Itoa(n), nil
	})

	deadlineTask = procpool.Register("test.deadline", func(ctx context.Context, _ int) (time.Time, error) {
		d, _ := ctx.Deadline()
		return d, nil
	})

	echoBytes = procpool.Register("test.echo", func(_ context.Context, b []byte) ([]byte, error) { return b, nil })

	// initTask takes a few milliseconds, so that a Map spreads over all workers.
	initTask = procpool.Register("test.init", func(context.Context, int) (string, error) {
		time.Sleep(5 * time.Millisecond)
		return initValue, nil
	})
)

//go:noinline
func panicHere(s string) { panic(errors.New(s)) }

// initValue is set by the WorkerInit hook in every worker.
var initValue string

func init() {
	procpool.WorkerInit(func(_ context.Context, worker int) error {
		initValue = "worker " + strconv.Itoa(worker) + " pid " + strconv.Itoa(os.Getpid())
		return nil
	})
}

func TestMain(m *testing.M) {
	procpool.Main()
	// Race-enabled workers would otherwise sleep 1 s in os.Exit, which makes
	// every orderly worker exit (Shutdown, recycling) take a second.
	os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperParent())
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if kids := children(); len(kids) > 0 {
			fmt.Fprintf(os.Stderr, "child processes left behind: %s\n", strings.Join(kids, "; "))
			if code == 0 {
				code = 1
			}
		}
		os.Exit(code)
	}))
}
