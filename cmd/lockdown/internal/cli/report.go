package cli

import (
	"context"
	"errors"
	"io"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/pkg/platform/stream"
)

// runReport prints the post-incident report from the read model: the
// final one containment wrote when the incident closed, or, while it is
// open, the latest draft (outcome "open", rewritten at least every 10 s
// while the incident changes).
func runReport(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := NewFlags("report", errOut)
	nf := addNATSFlags(fs, events.UserOperator)
	format := fs.String("format", "md", "md (Markdown) or json")
	jaeger := jaegerFlag(fs)
	id, code, ok := parseWithID(fs, args, "usage: lockdown report <incident-id> [--format md|json]", errOut)
	if !ok {
		return code
	}
	if *format != "md" && *format != "json" {
		Writef(errOut, "lockdown report: --format %q is not md or json\n", *format)
		return ExitUsage
	}
	if _, err := events.IncidentKey(id); err != nil {
		Writef(errOut, "lockdown report: %v\n", err)
		return ExitUsage
	}
	rm, err := openReadModel(ctx, nf)
	if err != nil {
		Writef(errOut, "lockdown report: %v\n", err)
		return ExitFailure
	}
	defer rm.Close()
	r, err := rm.Report(ctx, id)
	if errors.Is(err, stream.ErrNoIncident) {
		Writef(errOut, "lockdown report: no report of incident %s (yet)\n", id)
		return ExitFailure
	}
	if err != nil {
		Writef(errOut, "lockdown report: %v\n", err)
		return ExitFailure
	}
	if r.TraceURL == "" {
		r.TraceURL = report.TraceLink(*jaeger, r.TraceID)
	}
	withLastPlan(ctx, rm.conn.JS, &r)
	if *format == "json" {
		ShowJSON(out, r)
		return ExitOK
	}
	if err := r.Markdown(TerminalSafe(out)); err != nil {
		Writef(errOut, "lockdown report: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}
