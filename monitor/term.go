package monitor

import (
	"io"
	"os"

	"github.com/mattn/go-isatty"
)

// styled reports whether output to w may carry escape codes (colour, cursor
// moves): only when w is a terminal, NO_COLOR is unset or empty
// (https://no-color.org) and TERM is not "dumb".
func styled(w io.Writer) bool {
	if os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return false
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fd := f.Fd()
	return isatty.IsTerminal(fd) || isatty.IsCygwinTerminal(fd)
}
