package jetstream_test

import (
	"testing"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/jobqueue/queuetest"
)

// TestConformance runs the jobqueue behaviour suite on the JetStream
// backend: one embedded file-backed server, a queue of its own name for
// each subtest.
func TestConformance(t *testing.T) {
	srv := startServer(t)
	queuetest.Run(t, func(t *testing.T) jobqueue.Backend {
		b, err := srv.Backend(testOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}
