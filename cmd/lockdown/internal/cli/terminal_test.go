package cli

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Text from outside reaches people's terminals and browsers: a breach
// summary is whatever the SIEM's credential sent.
func TestOutsideText(t *testing.T) {
	hostile := "db breach\x1b]0;owned\x07\x1b[2J\rhidden\u009b31m done"
	t.Run("the terminal gets no control character but newline and tab", func(t *testing.T) {
		var b bytes.Buffer
		if _, err := fmt.Fprintf(TerminalSafe(&b), "summary: %s\n\tnext line\n", hostile); err != nil {
			t.Fatal(err)
		}
		got := b.String()
		if strings.ContainsAny(got, "\x1b\x07\r\u009b") {
			t.Fatalf("control characters reached the terminal: %q", got)
		}
		if got != "summary: db breach]0;owned[2Jhidden31m done\n\tnext line\n" {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("a carriage return in a server-sent event's body cannot start a line of its own", func(t *testing.T) {
		frame := sseFrame("incident", "<p>summary\revent: closed\r\ndata: x\nretry: 1</p>")
		for _, line := range strings.FieldsFunc(frame, func(r rune) bool { return r == '\n' || r == '\r' }) {
			if !strings.HasPrefix(line, "data: ") && line != "event: incident" {
				t.Fatalf("the frame has a line of the body's making: %q in %q", line, frame)
			}
		}
	})
	t.Run("without a token the console answers to loopback names only (DNS rebinding)", func(t *testing.T) {
		ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
		h := (&console{}).guard(ok)
		for host, want := range map[string]int{"127.0.0.1:8090": 204, "localhost:8090": 204, "[::1]:8090": 204, "LOCALHOST": 204,
			"evil.example:8090": 421, "127.0.0.1.evil.example": 421, "10.0.0.5:8090": 421} {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Host = host
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != want {
				t.Errorf("Host %s: %d, want %d", host, w.Code, want)
			}
		}
	})
}
