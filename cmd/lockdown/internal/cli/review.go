package cli

import (
	"bufio"
	"context"

	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/lockdown/lockdown/pkg/events"
)

// reviewFlags are `lockdown review`'s own flags: the review by flags, or
// in $EDITOR with --edit (the current review from the report filled in).
type reviewFlags struct {
	rootCause         string
	lessons, measures listFlag
	final, edit       bool
	nats              natsFlags
}

func (r *reviewFlags) register(fs *flag.FlagSet, nf natsFlags) {
	fs.StringVar(&r.rootCause, "root-cause", "", "review: the root cause")
	fs.Var(&r.lessons, "lesson", "review: a lesson learned (repeat the flag for each; replaces the recorded list)")
	fs.Var(&r.measures, "measure", "review: a preventive measure (repeat the flag for each; replaces the recorded list)")
	fs.BoolVar(&r.final, "final", false, "review: mark the review final (no later change is taken)")
	fs.BoolVar(&r.edit, "edit", false, "review: edit the review in $EDITOR, starting from the recorded one (read from the report)")
	r.nats = nf
}

// data is the review request the flags (or the edited file) describe.
func (r *reviewFlags) data(ctx context.Context, id, by string) (events.IncidentReviewData, error) {
	d := events.IncidentReviewData{IncidentID: id, RequestedBy: by, RootCause: r.rootCause, LessonsLearned: r.lessons, PreventiveMeasures: r.measures, Final: r.final}
	if r.edit {
		var err error
		if d, err = r.editReview(ctx, d); err != nil {
			return d, err
		}
	}
	return d, d.Validate()
}

// reviewTemplate is the file --edit opens: three headed sections, items as
// "- " lines.
const (
	headRootCause = "# Root cause"
	headLessons   = "# Lessons learned (one per line, starting with -)"
	headMeasures  = "# Preventive measures (one per line, starting with -)"
)

// editReview writes the recorded review (overridden by any flag given) to
// a private temporary file, runs $EDITOR on it and reads it back.
func (r *reviewFlags) editReview(ctx context.Context, d events.IncidentReviewData) (events.IncidentReviewData, error) {
	rm, err := openReadModel(ctx, r.nats)
	if err != nil {
		return d, err
	}
	rep, err := rm.Report(ctx, d.IncidentID)
	rm.Close()
	if err != nil {
		return d, fmt.Errorf("read the recorded review: %w", err)
	}
	root, lessons, measures := rep.RootCause, rep.LessonsLearned, rep.PreventiveMeasures
	if d.RootCause != "" {
		root = d.RootCause
	}
	if len(d.LessonsLearned) > 0 {
		lessons = d.LessonsLearned
	}
	if len(d.PreventiveMeasures) > 0 {
		measures = d.PreventiveMeasures
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n%s\n\n%s\n", headRootCause, root, headLessons)
	for _, l := range lessons {
		fmt.Fprintf(&b, "- %s\n", l)
	}
	fmt.Fprintf(&b, "\n%s\n", headMeasures)
	for _, m := range measures {
		fmt.Fprintf(&b, "- %s\n", m)
	}
	dir, err := os.MkdirTemp("", "lockdown-review-")
	if err != nil {
		return d, err
	}
	defer func() { _ = os.RemoveAll(dir) }() // best effort: a temporary directory
	file := filepath.Join(dir, "review.md")
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		return d, err
	}
	editor := strings.Fields(envOrPlain("EDITOR", "vi"))
	cmd := exec.CommandContext(ctx, editor[0], append(editor[1:], file)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return d, fmt.Errorf("$EDITOR: %w", err)
	}
	f, err := os.Open(file)
	if err != nil {
		return d, err
	}
	defer func() { _ = f.Close() }() // read only
	d.RootCause, d.LessonsLearned, d.PreventiveMeasures = parseReview(bufio.NewScanner(f))
	return d, nil
}

// parseReview reads the --edit file back: the root cause is the text of
// its section, the lists the "- " lines of theirs.
func parseReview(sc *bufio.Scanner) (rootCause string, lessons, measures []string) {
	section := ""
	var root []string
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "# "):
			section = line
		case line == "":
		case section == headRootCause:
			root = append(root, line)
		case section == headLessons && strings.HasPrefix(line, "- "):
			lessons = append(lessons, strings.TrimSpace(line[2:]))
		case section == headMeasures && strings.HasPrefix(line, "- "):
			measures = append(measures, strings.TrimSpace(line[2:]))
		}
	}
	return strings.Join(root, " "), lessons, measures
}

// envOrPlain reads an unprefixed variable ($EDITOR is not Lockdown's).
func envOrPlain(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
