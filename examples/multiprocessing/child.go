package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
)

// roleEnv marks a child process of lessons 1 and 2, started by hand: the
// program re-executes itself with this variable set to the child's role.
// (procpool does the same with a variable of its own; see procpool.Main.)
const roleEnv = "MULTIPROCESSING_ROLE"

// childMain runs a hand-started child and exits, if this process is one;
// in the parent it returns at once. Like procpool.Main, it must run before
// flag parsing (main, TestMain).
func childMain() {
	role, ok := os.LookupEnv(roleEnv)
	if !ok {
		return
	}
	os.Exit(runChild(role, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// runChild is the body of a child process: its role, its arguments, its
// standard streams; it returns the exit code.
func runChild(role string, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	switch role {
	case "fib":
		return fibChild(stdin, stdout, stderr)
	case "producer":
		return producer(args, stdout, stderr)
	case "consumer":
		return consumer(stdin, stdout, stderr)
	}
	fmt.Fprintf(stderr, "child: unknown role %q\n", role)
	return 2
}

// childCmd prepares this very binary as a child with a role: the Go
// analogue of mp.Process(target=role, args=args) before start(). The child
// is killed if ctx ends first (Ctrl-C).
func childCmd(ctx context.Context, role string, args ...string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = append(os.Environ(), roleEnv+"="+role)
	return cmd, nil
}
