package monitor_test

import (
	"context"
	"testing"

	"github.com/corework/corework/monitor"
)

func TestDashboardStats(t *testing.T) {
	s, err := monitor.NewSampler(monitor.WithMinWindow(0))
	if err != nil {
		t.Fatal(err)
	}
	v, err := monitor.DashboardStats(s)(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sys, ok := v.(monitor.DashboardSystem)
	if !ok {
		t.Fatalf("got %T", v)
	}
	if len(sys.Cores) == 0 || sys.CPU < 0 || sys.CPU > 1 || sys.MemoryUsed <= 0 || sys.MemoryUsed > 1 {
		t.Fatalf("implausible figures: %+v", sys)
	}
	for _, u := range sys.Cores {
		if u < 0 || u > 1 {
			t.Fatalf("core usage %v out of 0-1", u)
		}
	}
}
