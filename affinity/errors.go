package affinity

import (
	"errors"
	"fmt"
)

// ErrUnsupported is returned by every OS-specific function on systems where
// this package has no implementation (every OS but Linux).
// errors.Is(err, errors.ErrUnsupported) also holds for it.
var ErrUnsupported = fmt.Errorf("affinity: %w", errors.ErrUnsupported)

// ErrNotAllowed is returned (wrapped) by [PinThread] and [Start] when a
// requested CPU is outside the set this process may run on (see [Allowed]).
var ErrNotAllowed = errors.New("affinity: CPU not in the allowed set")
