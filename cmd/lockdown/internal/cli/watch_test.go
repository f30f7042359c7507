package cli

import (
	"strings"
	"testing"
	"time"
)

func TestProgress(t *testing.T) {
	t.Run("the bar shows done, failed and in flight in proportion, with rate and ETA", func(t *testing.T) {
		p := progressView{Planned: 100, Completed: 50, Failed: 10, InFlight: 10, Since: time.Unix(0, 0)}
		p.settle(time.Unix(10, 0))
		got := bar(p, 20)
		if !strings.HasPrefix(got, "[##########xx>>......]") || !strings.Contains(got, "6.0/s") || !strings.Contains(got, "ETA 7s") || p.Remaining != 30 {
			t.Fatalf("bar %q, remaining %d", got, p.Remaining)
		}
	})
	t.Run("an empty plan draws an empty bar without dividing by zero", func(t *testing.T) {
		if got := bar(progressView{}, 10); !strings.HasPrefix(got, "[..........]") {
			t.Fatalf("bar %q", got)
		}
	})
	t.Run("a buffer is not a terminal", func(t *testing.T) {
		if isTerminal(&strings.Builder{}) {
			t.Fatal("a strings.Builder is a terminal?")
		}
	})
}
