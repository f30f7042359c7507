package cli

import (
	"io"
	"strings"
	"unicode"
)

// terminalSafe wraps a writer for people's terminals: text that came from
// outside (a breach summary is whatever the SIEM, or anyone holding its
// credential, sent; a failure reason quotes a server) must not move the
// cursor, clear the screen, retitle the window or hide a line. It drops
// every control character but newline and tab — C0, DEL, C1 (so a lone
// carriage return cannot overwrite a line either) — and passes the rest.
// JSON output needs none of it: the encoder escapes them.
func TerminalSafe(w io.Writer) io.Writer { return safeWriter{w} }

type safeWriter struct{ w io.Writer }

func (s safeWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(s.w, stripControl(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// stripControl removes control characters but newline and tab.
func stripControl(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' || !unicode.IsControl(r) {
			return r
		}
		return -1
	}, s)
}
