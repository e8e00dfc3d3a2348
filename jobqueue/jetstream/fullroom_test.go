package jetstream

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
)

// TestFinishedJobsFreeRoom is the conformance suite's QueueFull with the
// finisher's acks late, as on a loaded machine: once Wait has returned the
// jobs that filled the queue, a Submit finds their room, though their
// messages leave the jobs stream only when their acks are processed. (It
// failed once in 20 conformance runs under load: "queue full: maximum
// messages exceeded".)
func TestFinishedJobsFreeRoom(t *testing.T) {
	q := slowAckQueue(t, "fullroom", 100*time.Millisecond, jobqueue.Config{Workers: 1, Capacity: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for round := range 5 {
		var ids []string
		for i := range 3 {
			id, err := q.Submit(ctx, jobqueue.JobRequest{Type: "rec", Payload: fmt.Appendf(nil, "%d", i)})
			if err != nil {
				t.Fatalf("round %d, job %d: %v", round, i, err)
			}
			ids = append(ids, id)
		}
		for _, id := range ids {
			if _, err := q.Wait(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
	}
}
