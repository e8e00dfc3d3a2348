package monitor

import (
	"io"
	"os"
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
	// A terminal is a character device (so is /dev/null, where escape
	// codes do no harm); a pipe or a regular file is not.
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
