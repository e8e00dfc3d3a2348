package jobqueue_test

import (
	"testing"

	"github.com/corework/corework/jobqueue"
	"github.com/corework/corework/jobqueue/queuetest"
)

func TestMemoryBackendConformance(t *testing.T) {
	queuetest.Run(t, func(*testing.T) jobqueue.Backend { return jobqueue.NewMemoryBackend() })
}
