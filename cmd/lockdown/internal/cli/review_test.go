package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/testkit/testwait"
)

// TestReview records a resolved incident's review the ways an operator
// would: by flags, in $EDITOR (a script standing in for the person), then
// final; each change lands in the stored report with who made it, and a
// change after the review is final is refused.
func TestReview(t *testing.T) {
	s := newSystem(t, 15*time.Minute, 2)
	s.startAll(nil)
	id, _ := s.runIncident(s.breach("an incident to review"))
	t.Setenv("LOCKDOWN_NATS_URL", s.stack.NATS.URL)
	t.Setenv("LOCKDOWN_NATS_PASSWORD", s.stack.NATS.Password(events.UserOperator))
	review := func(args ...string) (int, string) {
		var out, errOut bytes.Buffer
		code := Main(s.ctx, append([]string{"review", id}, args...), &out, &errOut)
		return code, errOut.String()
	}
	stored := func(t *testing.T, cond func(report.Report) bool) report.Report {
		t.Helper()
		var r report.Report
		testwait.For(t, time.Minute, "the stored report to show the review", func() bool {
			var err error
			r, err = s.report(id)
			return err == nil && cond(r)
		})
		return r
	}

	t.Run("a request with nothing to record is refused before it is sent", func(t *testing.T) {
		if code, msg := review("--as", "alice@soc"); code != ExitUsage || !strings.Contains(msg, "nothing to record") {
			t.Fatalf("exit %d: %s", code, msg)
		}
	})

	t.Run("by flags: the root cause and the lessons, with who recorded them", func(t *testing.T) {
		if code, msg := review("--root-cause", "a CI token with the root policy leaked in a build log", "--lesson", "CI tokens were long-lived",
			"--lesson", "nobody watched the audit log", "--as", "alice@soc"); code != ExitOK {
			t.Fatalf("exit %d: %s", code, msg)
		}
		r := stored(t, func(r report.Report) bool { return len(r.ReviewHistory) == 1 })
		if r.RootCause != "a CI token with the root policy leaked in a build log" || len(r.LessonsLearned) != 2 || r.ReviewState != report.ReviewDraft ||
			r.ReviewHistory[0].By != "alice@soc" {
			t.Fatalf("review %q %v %s %+v", r.RootCause, r.LessonsLearned, r.ReviewState, r.ReviewHistory)
		}
	})

	t.Run("in $EDITOR, starting from what is recorded", func(t *testing.T) {
		editor := filepath.Join(t.TempDir(), "editor.sh")
		// The "person": keeps what is there and adds a preventive measure.
		script := "#!/bin/sh\nprintf -- '- CI tokens expire after one hour\\n' >> \"$1\"\n"
		if err := os.WriteFile(editor, []byte(script), 0o700); err != nil {
			t.Fatal(err)
		}
		t.Setenv("EDITOR", editor)
		if code, msg := review("--edit", "--as", "bob@soc"); code != ExitOK {
			t.Fatalf("exit %d: %s", code, msg)
		}
		r := stored(t, func(r report.Report) bool { return len(r.ReviewHistory) == 2 })
		if !slices.Equal(r.PreventiveMeasures, []string{"CI tokens expire after one hour"}) || len(r.LessonsLearned) != 2 ||
			r.RootCause != "a CI token with the root policy leaked in a build log" || r.ReviewHistory[1].By != "bob@soc" {
			t.Fatalf("after the edit: %q %v %v %+v", r.RootCause, r.LessonsLearned, r.PreventiveMeasures, r.ReviewHistory)
		}
	})

	t.Run("final: later changes are refused and the report stays as it was", func(t *testing.T) {
		if code, msg := review("--final", "--as", "carol@soc"); code != ExitOK {
			t.Fatalf("exit %d: %s", code, msg)
		}
		r := stored(t, func(r report.Report) bool { return r.ReviewState == report.ReviewFinal })
		before := s.deadLetters()
		if code, msg := review("--root-cause", "something else", "--as", "mallory@soc"); code != ExitOK {
			t.Fatalf("exit %d: %s", code, msg)
		}
		testwait.For(t, time.Minute, "the late change to be dead-lettered", func() bool { return s.deadLetters() > before })
		after, err := s.report(id)
		must(t, err)
		if after.RootCause != r.RootCause || len(after.ReviewHistory) != 3 {
			t.Fatalf("a change after the final review reached the report: %q, %d changes", after.RootCause, len(after.ReviewHistory))
		}
		var md bytes.Buffer
		must(t, after.Markdown(&md))
		for _, want := range []string{"## Review (final)", "alice@soc", "bob@soc", "carol@soc", "CI tokens expire after one hour"} {
			if !strings.Contains(md.String(), want) {
				t.Errorf("the Markdown report lacks %q", want)
			}
		}
	})
}
