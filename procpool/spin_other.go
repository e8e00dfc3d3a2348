//go:build !linux

package procpool

// yield does nothing here: the rings are Linux-only (see mapShared).
func yield() {}
