package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockdown/lockdown/pkg/events/report"
)

// runReport prints the post-incident report: the one containment stored
// when the incident resolved, or, while it is still open, a draft built
// the same way from the timeline so far (outcome "open").
func runReport(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := newFlags("report", errOut)
	db := dbFlag(fs)
	format := fs.String("format", "md", "md (Markdown) or json")
	jaeger := jaegerFlag(fs)
	id, code, ok := parseWithID(fs, args, "usage: lockdown report <incident-id> [--format md|json]", errOut)
	if !ok {
		return code
	}
	if *format != "md" && *format != "json" {
		fmt.Fprintf(errOut, "lockdown report: --format %q is not md or json\n", *format)
		return ExitUsage
	}
	conn, err := connectDB(ctx, *db)
	if err != nil {
		fmt.Fprintf(errOut, "lockdown report: %v\n", err)
		return ExitFailure
	}
	defer conn.Close(context.Background())
	r, err := loadReport(ctx, conn, id, *jaeger)
	if errors.Is(err, pgx.ErrNoRows) {
		fmt.Fprintf(errOut, "lockdown report: no incident %s\n", id)
		return ExitFailure
	}
	if err != nil {
		fmt.Fprintf(errOut, "lockdown report: %v\n", err)
		return ExitFailure
	}
	if *format == "json" {
		printJSON(out, r)
		return ExitOK
	}
	if err := r.Markdown(out); err != nil {
		fmt.Fprintf(errOut, "lockdown report: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}

// loadReport returns the stored report, or a draft of an open incident.
// A stored report keeps the link containment gave it; jaegerURL links one
// that has none, and the draft.
func loadReport(ctx context.Context, conn *pgx.Conn, id, jaegerURL string) (report.Report, error) {
	var r report.Report
	var raw []byte
	err := conn.QueryRow(ctx, `SELECT report FROM containment.reports WHERE incident_id::text = $1`, id).Scan(&raw)
	if err == nil {
		err = json.Unmarshal(raw, &r)
		if r.TraceURL == "" {
			r.TraceURL = report.TraceLink(jaegerURL, r.TraceID)
		}
		return r, err
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return r, err
	}
	v, err := scanView(conn.QueryRow(ctx, incidentSelect+` WHERE id::text = $1`, id))
	if err != nil {
		return r, err
	}
	entries, err := timelineOf(ctx, conn, id)
	if err != nil {
		return r, err
	}
	return report.Build(v.reportIncident(jaegerURL), entries, "open", "not resolved yet: a draft", time.Now()), nil
}
