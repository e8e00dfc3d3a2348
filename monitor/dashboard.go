package monitor

import "context"

// DashboardSystem is what the CPU panel of the wsbridge dashboard draws,
// sent in its stats messages: usage ratios from 0 to 1.
type DashboardSystem struct {
	CPU        float64   `json:"cpu"`         // all cores
	Cores      []float64 `json:"cores"`       // one per core, in CPU order
	MemoryUsed float64   `json:"memory_used"` // used memory / total
	Load1      float64   `json:"load1"`       // one-minute load average
}

// DashboardStats adapts s to wsbridge.Config.SystemStats: each call takes
// a Sample and returns a DashboardSystem. An error that leaves the CPU
// figures intact (memory or load could not be read) is dropped so the bars
// keep drawing; with no CPU figures the error is returned.
func DashboardStats(s *Sampler) func(context.Context) (any, error) {
	return func(ctx context.Context) (any, error) {
		snap, err := s.Sample(ctx)
		if len(snap.Cores) == 0 {
			return nil, err
		}
		v := DashboardSystem{CPU: snap.CPU, MemoryUsed: snap.Memory.UsedRatio, Load1: snap.Load.Load1}
		for _, c := range snap.Cores {
			v.Cores = append(v.Cores, c.Usage)
		}
		return v, nil
	}
}
