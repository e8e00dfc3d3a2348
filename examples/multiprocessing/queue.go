package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// message is what the producer puts on the queue. Python's mp.Queue
// pickles any object; here a JSON-encoded struct. A message with Stop set
// is the sentinel that ends the stream, Python's q.put(None).
type message struct {
	Seq  int       `json:"seq"`
	N    int       `json:"n"`              // the consumer computes fib(N)
	Sent time.Time `json:"sent"`           // when the producer put it
	Stop bool      `json:"stop,omitempty"` // the sentinel
}

// maxMessage bounds a frame's length, checked before anything is allocated.
const maxMessage = 1 << 20

// putMessage writes m as one frame: a 4-byte big-endian length, then the
// JSON. Python's Connection.send does the same with pickle bytes, and
// mp.Queue sends through a Connection. The frame goes out in one write,
// which a pipe keeps whole (under PIPE_BUF bytes, atomic on Unix).
func putMessage(w io.Writer, m message) (int, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return 0, err
	}
	frame := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(body)), uint32(len(body)))
	frame = append(frame, body...)
	return w.Write(frame)
}

// getMessage reads one frame written by putMessage: q.get().
func getMessage(r io.Reader) (message, error) {
	var m message
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return m, err // io.EOF: the producer ended without a sentinel
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxMessage {
		return m, fmt.Errorf("message of %d bytes, limit %d", n, maxMessage)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return m, fmt.Errorf("message cut short: %w", err)
	}
	err := json.Unmarshal(body, &m)
	return m, err
}

// producer is lesson 2's first child: it puts args[0] messages on its
// stdout, the queue, then the sentinel, and reports each on stderr.
func producer(args []string, queue, log io.Writer) int {
	count, base := 0, 0
	if len(args) == 2 {
		count, _ = strconv.Atoi(args[0])
		base, _ = strconv.Atoi(args[1])
	}
	if count <= 0 || base < 0 {
		fmt.Fprintf(log, "producer: want a message count and a base n, got %q\n", args)
		return 2
	}
	for i := 1; i <= count; i++ {
		m := message{Seq: i, N: base + i - 1, Sent: time.Now()}
		k, err := putMessage(queue, m)
		if err != nil {
			fmt.Fprintf(log, "producer: put #%d: %v\n", i, err)
			return 1
		}
		fmt.Fprintf(log, "pid %d sent #%d n=%d as a %d-byte frame\n", os.Getpid(), m.Seq, m.N, k)
	}
	k, err := putMessage(queue, message{Stop: true, Sent: time.Now()})
	if err != nil {
		fmt.Fprintf(log, "producer: put the sentinel: %v\n", err)
		return 1
	}
	fmt.Fprintf(log, "pid %d sent the sentinel as a %d-byte frame, and exits\n", os.Getpid(), k)
	return 0
}

// consumer is lesson 2's second child: it gets messages from its stdin,
// the queue, until the sentinel, and reports each on stdout.
func consumer(queue io.Reader, log, errs io.Writer) int {
	r := bufio.NewReader(queue)
	for got := 0; ; got++ {
		m, err := getMessage(r)
		if err != nil {
			fmt.Fprintf(errs, "consumer: get after %d messages: %v\n", got, err)
			return 1
		}
		wait := time.Since(m.Sent)
		if m.Stop {
			fmt.Fprintf(log, "pid %d received the sentinel after %d messages (%v in the queue), and exits\n",
				os.Getpid(), got, round(wait))
			return 0
		}
		fmt.Fprintf(log, "pid %d received #%d n=%d after %v in the queue: fib(%d) = %d\n",
			os.Getpid(), m.Seq, m.N, round(wait), m.N, fib(m.N))
	}
}

// queueLesson is lesson 2: two child processes, a producer and a
// consumer, joined by a pipe the parent never reads. Python:
//
//	q = mp.Queue()
//	prod = mp.Process(target=producer, args=(q,))
//	cons = mp.Process(target=consumer, args=(q,))
//	prod.start(); cons.start()
//	prod.join(); cons.join()
func queueLesson(ctx context.Context, w io.Writer, cfg config) error {
	fmt.Fprintf(w, "\n2. Two processes and a queue: a pipe of length-prefixed JSON messages (mp.Queue)\n")
	qr, qw, err := os.Pipe() // the queue: its buffer (64 KiB on Linux) is its capacity
	if err != nil {
		return err
	}
	prod, err := childCmd(ctx, "producer", strconv.Itoa(cfg.messages), strconv.Itoa(cfg.fibN))
	if err != nil {
		return errors.Join(err, qr.Close(), qw.Close())
	}
	cons, err := childCmd(ctx, "consumer")
	if err != nil {
		return errors.Join(err, qr.Close(), qw.Close())
	}
	var prodLog, consLog, consErr bytes.Buffer
	prod.Stdout, prod.Stderr = qw, &prodLog
	cons.Stdin, cons.Stdout, cons.Stderr = qr, &consLog, &consErr
	start := time.Now()
	err = prod.Start()
	if err == nil {
		if err = cons.Start(); err != nil {
			prod.Process.Kill()
			prod.Wait()
		}
	}
	// The children hold their own copies of the two ends now. Closing the
	// parent's makes the consumer see the end of the queue if the producer
	// dies without its sentinel.
	qr.Close()
	qw.Close()
	if err != nil {
		return err
	}
	cfg.debug("multiprocessing: children started", "producer", prod.Process.Pid, "consumer", cons.Process.Pid)
	fmt.Fprintf(w, "   producer pid %d writes the queue on its stdout; consumer pid %d reads it on its stdin\n",
		prod.Process.Pid, cons.Process.Pid)
	perr, cerr := prod.Wait(), cons.Wait() // prod.join(); cons.join()
	took := time.Since(start)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	for _, c := range []struct {
		name string
		log  *bytes.Buffer
	}{{"producer", &prodLog}, {"consumer", &consLog}, {"consumer", &consErr}} {
		for line := range strings.Lines(c.log.String()) {
			fmt.Fprintf(w, "   %s: %s", c.name, line)
		}
	}
	fmt.Fprintf(w, "   joined both after %v: producer %v, consumer %v\n",
		round(took), prod.ProcessState, cons.ProcessState)
	if perr != nil || cerr != nil {
		return fmt.Errorf("queue lesson: producer: %v, consumer: %v", perr, cerr)
	}
	return nil
}
