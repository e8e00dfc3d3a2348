package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// fibChild is lesson 1's child: it reads n from stdin, writes fib(n) to
// stdout, and exits with status 0, or 2 on bad input.
func fibChild(stdin io.Reader, stdout, stderr io.Writer) int {
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && err != io.EOF {
		fmt.Fprintf(stderr, "child: read stdin: %v\n", err)
		return 2
	}
	n, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || n < 0 || n > 45 {
		fmt.Fprintf(stderr, "child: bad input %q, want a number from 0 to 45\n", strings.TrimSpace(line))
		return 2
	}
	start := time.Now()
	v := fib(n)
	fmt.Fprintf(stdout, "fib(%d) = %d (pid %d, %v)\n", n, v, os.Getpid(), round(time.Since(start)))
	return 0
}

// byHand is lesson 1: one child process started and joined by hand, what
// procpool automates. Python:
//
//	p = mp.Process(target=fib_child, args=(n,))
//	p.start()
//	p.join()
//	print(p.exitcode)
func byHand(ctx context.Context, w io.Writer, cfg config) error {
	fmt.Fprintf(w, "1. One process by hand: os/exec and pipes (mp.Process: start, join, exitcode)\n")
	if err := handChild(ctx, w, cfg, strconv.Itoa(cfg.fibN)); err != nil {
		return err
	}
	fmt.Fprintf(w, "   again, with bad input:\n")
	return handChild(ctx, w, cfg, "fib please")
}

// handChild starts one fib child, writes input to its stdin, reads its
// stdout, and waits for it.
func handChild(ctx context.Context, w io.Writer, cfg config, input string) error {
	cmd, err := childCmd(ctx, "fib")
	if err != nil {
		return err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil { // p.start()
		return err
	}
	cfg.debug("multiprocessing: child started", "role", "fib", "pid", cmd.Process.Pid)
	fmt.Fprintf(w, "   parent pid %d started child pid %d (this binary again, %s=fib)\n",
		os.Getpid(), cmd.Process.Pid, roleEnv)
	_, werr := io.WriteString(stdin, input+"\n")
	stdin.Close() // the child reads to the end of its input
	if werr != nil {
		return werr
	}
	fmt.Fprintf(w, "   parent → child stdin: %q, then closed it\n", input+"\n")
	out, err := io.ReadAll(stdout) // every read before Wait
	if err != nil {
		return err
	}
	if len(out) > 0 {
		fmt.Fprintf(w, "   child → parent stdout: %q\n", strings.TrimSpace(string(out)))
	}
	werr = cmd.Wait() // p.join()
	took := time.Since(start)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if stderr.Len() > 0 {
		fmt.Fprintf(w, "   child → parent stderr: %q\n", strings.TrimSpace(stderr.String()))
	}
	// A non-zero exit comes back from Wait as an *exec.ExitError: here a
	// result to show, not a failure of the lesson.
	st := cmd.ProcessState
	how := "returned nil"
	if werr != nil {
		how = fmt.Sprintf("returned %T", werr)
	}
	fmt.Fprintf(w, "   cmd.Wait (join) %s: %v, ExitCode() %d (p.exitcode), %v after Start\n",
		how, st, st.ExitCode(), round(took))
	cfg.debug("multiprocessing: child exited", "pid", st.Pid(), "status", st.String())
	return nil
}
