package cputime

import (
	"runtime"
	"testing"
	"time"
)

func TestSelfGrows(t *testing.T) {
	a, ok := Self()
	if !ok {
		t.Skipf("no CPU time counter on %s", runtime.GOOS)
	}
	for end := time.Now().Add(20 * time.Millisecond); time.Now().Before(end); {
	}
	b, _ := Self()
	if b <= a {
		t.Fatalf("CPU time did not grow over a busy loop: %v then %v", a, b)
	}
}
