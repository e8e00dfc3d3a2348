package procpool

import "testing"

// TestRingsOn: on Linux, a worker's frames go through the rings.
func TestRingsOn(t *testing.T) {
	p, err := New(WithWorkers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	w := p.slotList()[0].cur.Load()
	if w == nil || !ringsOn(w.shm) {
		t.Fatal("worker did not acknowledge the rings")
	}
	if _, ok := w.out.(*ringWriter); !ok {
		t.Fatalf("requests go to %T, not the request ring", w.out)
	}
	if _, ok := w.fr.src.(*ringReader); !ok {
		t.Fatalf("replies come from %T, not the reply ring", w.fr.src)
	}
}
