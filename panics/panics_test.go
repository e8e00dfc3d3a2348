package panics_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/corework/corework/panics"
)

func recovered(v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = panics.New("pool", "", r)
		}
	}()
	boom(v)
	return nil
}

func boom(v any) { panic(v) }

func TestNew(t *testing.T) {
	err := recovered("bad")
	var pe *panics.Error
	if !errors.As(err, &pe) {
		t.Fatalf("errors.As(%v) = false", err)
	}
	if pe.Value != "bad" || pe.Source != "pool" {
		t.Fatalf("got %+v", pe)
	}
	if got, want := err.Error(), "pool: task panicked: bad"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	first, _, _ := bytes.Cut(pe.Stack, []byte("\n"))
	if !bytes.HasPrefix(first, []byte("goroutine ")) {
		t.Fatalf("stack starts with %q", first)
	}
	if !bytes.Contains(pe.Stack, []byte("panics_test.boom")) {
		t.Fatalf("stack lacks the panicking frame:\n%s", pe.Stack)
	}
	if bytes.Contains(pe.Stack, []byte("panics.New")) || bytes.Contains(pe.Stack, []byte("debug.Stack")) {
		t.Fatalf("stack keeps the recovery frames:\n%s", pe.Stack)
	}
}

func TestUnwrap(t *testing.T) {
	err := recovered(io.EOF)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("errors.Is(%v, io.EOF) = false", err)
	}
	named := &panics.Error{Source: "procpool", Task: "resize", Value: "x"}
	if got, want := named.Error(), "procpool: task resize panicked: x"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if named.Unwrap() != nil {
		t.Fatal("Unwrap of a non-error value is not nil")
	}
}
