//go:build !linux

package procpool_test

const helperEnv = "PROCPOOL_TEST_HELPER"

func helperParent() int { return 0 }

func children() []string { return nil }

const isLinux = false
