package jobqueue_test

import (
	"testing"
	"time"

	"github.com/corework/corework/jobqueue"
)

// TestNewIDAndIDTime: NewID makes IDs shaped and ordered like a Queue's,
// and IDTime reads back their time; other shapes are not mistaken for them.
func TestNewIDAndIDTime(t *testing.T) {
	before := time.Now().Truncate(time.Millisecond)
	a, b := jobqueue.NewID(), jobqueue.NewID()
	after := time.Now()
	if len(a) != 36 || a >= b {
		t.Fatalf("NewID: %q then %q", a, b)
	}
	at, ok := jobqueue.IDTime(a)
	if !ok || at.Before(before) || at.After(after) {
		t.Fatalf("IDTime(%q) = %v, %v; want between %v and %v", a, at, ok, before, after)
	}
	for _, id := range []string{"", "job-1", a[:35], a[:35] + "I", a + "0"} {
		if _, ok := jobqueue.IDTime(id); ok {
			t.Fatalf("IDTime(%q) accepted an ID of another shape", id)
		}
	}
}
