package procpool

import (
	"bytes"
	"io"
	"strconv"
	"sync"
)

const (
	tailSize    = 4 << 10
	maxLineSize = 64 << 10
)

// lineWriter forwards a worker's output to the pool's writer line by line,
// each line prefixed with the worker's slot, and keeps the last tailSize
// bytes for crash reports. exec.Cmd's copying goroutine is its only writer;
// Flush and Tail are called after cmd.Wait.
type lineWriter struct {
	mu      *sync.Mutex // shared by all workers of a pool: serializes out
	out     io.Writer
	prefix  []byte
	partial []byte
	line    []byte

	tailMu sync.Mutex
	tail   []byte
	cause  string // the last line that looks like the runtime's reason to die
}

// causePrefixes begin the lines in which the Go runtime says why a process
// dies.
var causePrefixes = [][]byte{[]byte("fatal error: "), []byte("panic: "), []byte("runtime: out of memory")}

// maxCause bounds a kept cause line.
const maxCause = 512

func newLineWriter(mu *sync.Mutex, out io.Writer, id int) *lineWriter {
	return &lineWriter{mu: mu, out: out, prefix: []byte("worker " + strconv.Itoa(id) + ": ")}
}

// Write forwards every complete line of b and keeps the rest for later.
func (l *lineWriter) Write(b []byte) (int, error) {
	n := len(b)
	l.keepTail(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			l.partial = append(l.partial, b...)
			if len(l.partial) >= maxLineSize {
				l.emit(l.partial)
				l.partial = l.partial[:0]
			}
			break
		}
		if len(l.partial) > 0 {
			l.partial = append(l.partial, b[:i]...)
			l.emit(l.partial)
			l.partial = l.partial[:0]
		} else {
			l.emit(b[:i])
		}
		b = b[i+1:]
	}
	return n, nil
}

// Flush forwards a last line that had no newline.
func (l *lineWriter) Flush() {
	if len(l.partial) > 0 {
		l.emit(l.partial)
		l.partial = l.partial[:0]
	}
}

func (l *lineWriter) emit(line []byte) {
	for _, p := range causePrefixes {
		if bytes.HasPrefix(line, p) {
			l.tailMu.Lock()
			l.cause = string(line[:min(len(line), maxCause)])
			l.tailMu.Unlock()
			break
		}
	}
	l.line = append(append(append(l.line[:0], l.prefix...), line...), '\n')
	l.mu.Lock()
	l.out.Write(l.line)
	l.mu.Unlock()
}

func (l *lineWriter) keepTail(b []byte) {
	l.tailMu.Lock()
	defer l.tailMu.Unlock()
	if len(b) >= tailSize {
		l.tail = append(l.tail[:0], b[len(b)-tailSize:]...)
		return
	}
	if over := len(l.tail) + len(b) - tailSize; over > 0 {
		l.tail = append(l.tail[:0], l.tail[over:]...)
	}
	l.tail = append(l.tail, b...)
}

// Cause returns the last line written that begins like the Go runtime's
// reason to die ("fatal error: ", "panic: "), or "".
func (l *lineWriter) Cause() string {
	l.tailMu.Lock()
	defer l.tailMu.Unlock()
	return l.cause
}

// Tail returns the last bytes written.
func (l *lineWriter) Tail() string {
	l.tailMu.Lock()
	defer l.tailMu.Unlock()
	return string(l.tail)
}
