//go:build !race

package procpool_test

// raceEnabled: the tests run under the race detector.
const raceEnabled = false
