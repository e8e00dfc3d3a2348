package jetstream

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

func TestBufConn(t *testing.T) {
	server, client := net.Pipe()
	c := newBufConn(client)
	// Writes do not wait for the other side to read.
	for i := 0; i < 100; i++ {
		if _, err := c.Write([]byte("0123456789")); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, 1000)
	if _, err := io.ReadFull(server, got); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = server.Write([]byte("hello")) }()
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past its deadline = %v", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close = %v", err)
	}
	_ = server.Close()
}
