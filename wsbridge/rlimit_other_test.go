//go:build !unix

package wsbridge

// openFileLimit reports no limit on open descriptors: this OS has no
// RLIMIT_NOFILE.
func openFileLimit() (uint64, bool) { return 0, false }
