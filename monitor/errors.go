package monitor

import (
	"errors"
	"fmt"
)

// ErrUnsupported is returned (wrapped) when a feature is asked for on an OS
// that lacks it, such as [WithThreads] outside Linux.
// errors.Is(err, errors.ErrUnsupported) also holds for it.
var ErrUnsupported = fmt.Errorf("monitor: %w", errors.ErrUnsupported)

// ErrInterval is returned by [Watch] when the interval is not positive.
var ErrInterval = errors.New("monitor: interval must be positive")
