package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/readmodel"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/pkg/platform/stream"
)

// The status commands show containment's incident documents (the read
// model); --watch follows a document as containment rewrites it.

// jaegerFlag is the Jaeger UI the incident's trace is linked in.
func jaegerFlag(fs *flag.FlagSet) *string {
	return fs.String("jaeger-url", EnvOr("JAEGER_URL", ""), "the Jaeger UI, to link the incident's trace (LOCKDOWN_JAEGER_URL)")
}

func runIncidents(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := NewFlags("incidents", errOut)
	nf := addNATSFlags(fs, events.UserOperator)
	asJSON := fs.Bool("json", false, "print as JSON")
	if code, ok := Parse(fs, args); !ok {
		return code
	}
	rm, err := openReadModel(ctx, nf)
	if err != nil {
		Writef(errOut, "lockdown incidents: %v\n", err)
		return ExitFailure
	}
	defer rm.Close()
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	list, err := rm.Incidents(lctx)
	if err != nil {
		Writef(errOut, "lockdown incidents: %v\n", err)
		return ExitFailure
	}
	if *asJSON {
		if list == nil {
			list = []readmodel.Incident{}
		}
		ShowJSON(out, list)
		return ExitOK
	}
	tw := tabwriter.NewWriter(TerminalSafe(out), 0, 4, 2, ' ', 0)
	Writeln(tw, "INCIDENT\tPHASE\tSEVERITY\tAGE\tSUMMARY")
	for _, v := range list {
		Writef(tw, "%s\t%s\t%s\t%s\t%s\n", v.ID, v.Phase, v.Severity, time.Since(v.OpenedAt).Round(time.Second), v.Summary)
	}
	flushTable(tw)
	return ExitOK
}

func runStatus(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := NewFlags("status", errOut)
	nf := addNATSFlags(fs, events.UserOperator)
	asJSON := fs.Bool("json", false, "print as JSON")
	watch := fs.Bool("watch", false, "follow the incident until it ends, as containment updates it: progress bars on a terminal, a line per change otherwise")
	jaeger := jaegerFlag(fs)
	id, code, ok := parseWithID(fs, args, "usage: lockdown status <incident-id> [--json] [--watch]", errOut)
	if !ok {
		return code
	}
	if _, err := events.IncidentKey(id); err != nil {
		Writef(errOut, "lockdown status: %v\n", err)
		return ExitUsage
	}
	open := openReadModel
	if *watch {
		open = openReadModelUntil // the room's watch waits for NATS
	}
	rm, err := open(ctx, nf)
	if err != nil {
		Writef(errOut, "lockdown status: %v\n", err)
		return ExitFailure
	}
	defer rm.Close()
	show := func(v readmodel.Incident) {
		v.TraceURL = report.TraceLink(*jaeger, v.TraceID)
		v.Settle(time.Now())
		if *asJSON {
			ShowJSON(out, v)
		} else {
			printStatus(out, v)
		}
	}
	if !*watch {
		v, err := rm.Incident(ctx, id)
		if errors.Is(err, stream.ErrNoIncident) {
			Writef(errOut, "lockdown status: no incident %s\n", id)
			return ExitFailure
		}
		if err != nil {
			Writef(errOut, "lockdown status: %v\n", err)
			return ExitFailure
		}
		show(v)
		return ExitOK
	}
	return WatchStatus(ctx, rm, id, out, errOut, *asJSON, *jaeger)
}

// watchStatus follows the incident's document: every write containment
// makes reaches it as it happens (a key-value watch, not polling). On a
// terminal the view is redrawn in place; elsewhere (a log, a pipe) it
// prints one line per change, each stamped with the time it was seen.
func WatchStatus(ctx context.Context, rm *ReadModel, id string, out, errOut io.Writer, asJSON bool, jaegerURL string) int {
	docs, errs, err := rm.Watch(ctx, id)
	if err != nil {
		Writef(errOut, "lockdown status: %v\n", err)
		return ExitFailure
	}
	tty := isTerminal(out)
	last := ""
	for {
		var v readmodel.Incident
		select {
		case <-ctx.Done():
			return ExitOK
		case err := <-errs:
			Writef(errOut, "lockdown status: %v\n", err)
			return ExitFailure
		case doc, ok := <-docs:
			if !ok {
				return ExitOK
			}
			v = doc
		}
		v.TraceURL = report.TraceLink(jaegerURL, v.TraceID)
		v.Settle(time.Now())
		switch {
		case asJSON:
			ShowJSON(out, v)
		case tty:
			Writef(out, "\x1b[H\x1b[2J") // home and clear: redraw in place
			printStatus(out, v)
			Writeln(out)
			printBars(out, v)
		default:
			if line := progressLine(v); line != last {
				Writef(TerminalSafe(out), "%s  %s\n", time.Now().UTC().Format("15:04:05.000"), line)
				last = line
			}
		}
		if v.Closed() {
			return ExitOK
		}
	}
}

func printStatus(out io.Writer, v readmodel.Incident) {
	out = TerminalSafe(out) // the summary, reasons and names came from outside
	Writef(out, "incident %s  phase %s  severity %s  detections %d\n  %s (from %s)\n", v.ID, v.Phase, v.Severity, v.Detections, v.Summary, v.Source)
	Writef(out, "  detected %s  opened %s  (as of %s)\n", v.DetectedAt.Format(time.RFC3339), v.OpenedAt.Format(time.RFC3339), v.UpdatedAt.Format(time.RFC3339))
	if v.TraceID != "" {
		Writef(out, "  trace %s  %s\n", v.TraceID, v.TraceURL)
	}
	if v.StuckReason != "" {
		since := ""
		if v.StuckSince != nil {
			since = " since " + v.StuckSince.Format(time.RFC3339)
		}
		Writef(out, "  STUCK%s: %s (it moves on once the dependency answers; lockdown resume %s drives it now)\n", since, v.StuckReason, v.ID)
	}
	if v.FailureReason != "" {
		Writef(out, "  closed as failed: %s\n", v.FailureReason)
	}
	if v.Phase == "awaiting_confirmation" {
		Writef(out, "  AWAITING CONFIRMATION: this breach may not seal Vault by itself (LOCKDOWN_AUTO_SEAL_*); lockdown confirm %s seals now\n", v.ID)
	}
	Writeln(out, "\nphases:")
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	Writeln(tw, "  PHASE\tSTART\tEND\tDURATION\tRUNBOOK TARGET\tLOCKDOWN TARGET")
	for _, p := range v.Phases {
		Writef(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", p.Name, stamp(p.Start), stamp(p.End), p.Duration.Round(time.Millisecond), targetOr(p.RunbookTarget, "—"), targetOr(p.LockdownTarget, "human"))
	}
	flushTable(tw)
	if len(v.Seals) > 0 {
		Writeln(out, "\nseals:")
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		for _, s := range v.Seals {
			Writef(tw, "  round %d\t%s\t%s\tconfirmed %s\n", s.Round, s.Address, s.Method, s.ConfirmedAt.Format(time.RFC3339Nano))
		}
		flushTable(tw)
	}
	if len(v.Gate) > 0 && v.Phase == "sealed" {
		Writeln(out, "\nunseal gate (key holders: `vault operator unseal` on an isolated network):")
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		for _, g := range v.Gate {
			Writef(tw, "  %s\t%s\tshares %d of %d (awaiting %d more)\n", g.Address, g.State(), g.Progress, g.Threshold, max(g.Threshold-g.Progress, 0))
		}
		flushTable(tw)
	}
	if r := v.Recovery; r != nil {
		printRecovery(out, r)
	}
	for _, p := range progresses(v) {
		Writef(out, "\n%s: %d planned, %d done, %d failed, %d remaining, %.1f/s, ETA %s\n",
			p.name, p.v.Planned, p.v.Completed, p.v.Failed, p.v.Remaining, p.v.Rate, orDash(p.v.ETA))
	}
	if v.FailuresTotal > 0 {
		Writef(out, "\nfailures (%d; the report lists all):\n", v.FailuresTotal)
		for _, f := range v.Failures {
			Writef(out, "  %s  %s %s: %s\n", stamp(f.Time), f.What, f.TenantID, f.Reason)
		}
	}
}

type namedProgress struct {
	name string
	v    *readmodel.Progress
}

// progresses are the incident's rotation and notification progress, in
// that order, where it has them.
func progresses(v readmodel.Incident) []namedProgress {
	var out []namedProgress
	for _, p := range []namedProgress{{"rotation", v.Rotation}, {"notification", v.Notification}} {
		if p.v != nil {
			out = append(out, p)
		}
	}
	return out
}

// printBars draws the rotation and notification progress bars.
func printBars(out io.Writer, v readmodel.Incident) {
	for _, p := range progresses(v) {
		Writef(out, "%-13s %s\n", p.name, bar(*p.v, 40))
	}
}

// bar renders done (#), failed (x) and in flight (>) over the plan.
func bar(p readmodel.Progress, width int) string {
	cells := func(n int) int {
		if p.Planned == 0 {
			return 0
		}
		return n * width / p.Planned
	}
	done, failed, flight := cells(p.Completed), cells(p.Failed), cells(p.InFlight)
	rest := max(width-done-failed-flight, 0)
	return fmt.Sprintf("[%s%s%s%s] %d/%d done, %d failed, %d remaining, %.1f/s, ETA %s",
		strings.Repeat("#", done), strings.Repeat("x", failed), strings.Repeat(">", flight), strings.Repeat(".", rest),
		p.Completed, p.Planned, p.Failed, p.Remaining, p.Rate, orDash(p.ETA))
}

// progressLine is --watch's plain output: one line with the phase and the
// counts.
func progressLine(v readmodel.Incident) string {
	line := "phase " + v.Phase
	for _, p := range progresses(v) {
		line += fmt.Sprintf("  %s %d/%d done %d failed %d remaining", p.name, p.v.Completed, p.v.Planned, p.v.Failed, p.v.Remaining)
	}
	if v.StuckReason != "" {
		line += "  STUCK: " + v.StuckReason
	}
	return line
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

func targetOr(d time.Duration, none string) string {
	if d == 0 {
		return none
	}
	return d.String()
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func printRecovery(out io.Writer, r *readmodel.Recovery) {
	if !r.AccessRevokedAt.IsZero() {
		Writef(out, "\naccess revoked %s: auth methods disabled %v, %d tokens revoked, %d kept %v, leases %v, key term %d\n",
			r.AccessRevokedAt.Format(time.RFC3339), r.Revoked.AuthMethodsDisabled, r.Revoked.TokensRevoked, r.Revoked.TokensKept, r.KeptReasons,
			r.Revoked.LeasePrefixes, r.Revoked.KeyTerm)
	}
	c := r.Ceremony
	if c.Nonce != "" || c.Phase != "" {
		kind := "unseal"
		if c.RecoveryKeys {
			kind = "recovery"
		}
		Writef(out, "\nrekey ceremony (%s keys, %d shares / threshold %d): %s\n", kind, c.N, c.T, c.Phase)
		for _, cmd := range c.Commands() {
			progress := fmt.Sprintf("%d of %d current shares submitted", c.Progress, c.T)
			if c.Phase == "verifying_new_shares" {
				progress = fmt.Sprintf("%d of %d new shares verified", c.VerifyProgress, c.T)
			}
			Writef(out, "  key holders: %s   (%s)\n", cmd, progress)
		}
		if c.Phase == "completed" {
			Writef(out, "  completed %s, confirmed by %s; holders' PGP fingerprints %v\n", c.CompletedAt.Format(time.RFC3339), c.ConfirmedBy, c.Fingerprints)
		}
		if c.Restarts > 0 {
			Writef(out, "  restarted %d time(s): %s\n", c.Restarts, c.Note)
		}
	}
	if !r.RestoredAt.IsZero() {
		Writef(out, "\naccess restored %s\n", r.RestoredAt.Format(time.RFC3339))
	} else if !r.AccessRevokedAt.IsZero() {
		Writef(out, "\naccess restore waits for: rotation %v, notifications %v\n", doneWord(r.RotationDone), doneWord(r.NotifiedDone))
	}
}

func doneWord(b bool) string {
	if b {
		return "done"
	}
	return "pending"
}
