package affinity

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// helperEnv, when set in the environment, turns the test binary into a
// child process for the tests of Start, SetProcess and taskset.
const helperEnv = "AFFINITY_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "child" {
		os.Exit(helperChild())
	}
	goleak.VerifyTestMain(m)
}

// helperChild runs a multi-threaded child: a few goroutines locked to
// threads of their own, then it reports Allowed and "ready" on stdout and
// waits for stdin to close (or 30 s, should the parent vanish).
func helperChild() int {
	stop := make(chan struct{})
	for range 3 {
		go func() {
			runtime.LockOSThread()
			<-stop
		}()
	}
	set, err := Allowed()
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Printf("allowed=%s\nready\n", set)
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
	}
	close(stop)
	return 0
}
