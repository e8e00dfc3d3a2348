package jetstream_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain runs the tests under goleak, or, when the crash tests re-execute
// the test binary as a worker process, runs that worker instead.
func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) != "" {
		os.Exit(runWorker())
	}
	goleak.VerifyTestMain(m)
}
