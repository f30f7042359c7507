package cli

import (
	"context"
	"io"
	"os"
	"os/user"
	"time"

	"github.com/google/uuid"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/stream"
)

// controlResult is what `resume`, `abort` and `retry` print with --json.
type controlResult struct {
	IncidentID  string `json:"incident_id"`
	EventID     string `json:"event_id"`
	Type        string `json:"type"`
	RequestedBy string `json:"requested_by"`
	Reason      string `json:"reason,omitempty"`
	TenantID    string `json:"tenant_id,omitempty"`
}

func runResume(ctx context.Context, args []string, out, errOut io.Writer) int {
	return runControl(ctx, "resume", events.IncidentResumeRequested, args, out, errOut)
}

func runAbort(ctx context.Context, args []string, out, errOut io.Writer) int {
	return runControl(ctx, "abort", events.IncidentAbortRequested, args, out, errOut)
}

func runConfirm(ctx context.Context, args []string, out, errOut io.Writer) int {
	return runControl(ctx, "confirm", events.IncidentConfirmRequested, args, out, errOut)
}

func runRetry(ctx context.Context, args []string, out, errOut io.Writer) int {
	return runControl(ctx, "retry", events.RotationRetryRequested, args, out, errOut)
}

func runReview(ctx context.Context, args []string, out, errOut io.Writer) int {
	return runControl(ctx, "review", events.IncidentReviewRequested, args, out, errOut)
}

// runControl publishes an operator's request about an incident as the
// operator NATS user: confirm, resume and abort go to containment, retry
// to the rotator; the incident's timeline records each with who asked.
func runControl(ctx context.Context, name string, ev events.Name, args []string, out, errOut io.Writer) int {
	fs := NewFlags(name, errOut)
	nf := addNATSFlags(fs, events.UserOperator)
	by := fs.String("as", EnvOr("OPERATOR", defaultOperator()), "who asks, as recorded in the timeline (LOCKDOWN_OPERATOR; default login@host)")
	reason := fs.String("reason", "", "why (required to abort; recorded in the report)")
	tenant := fs.String("tenant", "", "retry: the one tenant to rotate again (default: every tenant whose rotation failed)")
	var rv reviewFlags
	if ev == events.IncidentReviewRequested {
		rv.register(fs, nf)
	}
	asJSON := fs.Bool("json", false, "print the result as JSON")
	id, code, ok := parseWithID(fs, args, "usage: lockdown "+name+" <incident> [flags]", errOut)
	if !ok {
		return code
	}
	if _, err := uuid.Parse(id); err != nil {
		Writef(errOut, "lockdown %s: %q is not an incident id\n", name, id)
		return ExitUsage
	}
	if ev == events.IncidentAbortRequested && *reason == "" {
		Writef(errOut, "lockdown abort: --reason is required: the report says why the incident was closed as failed\n")
		return ExitUsage
	}
	var review events.IncidentReviewData
	if ev == events.IncidentReviewRequested {
		var err error
		if review, err = rv.data(ctx, id, *by); err != nil {
			Writef(errOut, "lockdown review: %v\n", err)
			return ExitUsage
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := nf.connect(cctx)
	if err != nil {
		Writef(errOut, "lockdown %s: %v\n", name, err)
		return ExitFailure
	}
	defer CloseNATS(conn)
	var data any = events.IncidentControlData{IncidentID: id, RequestedBy: *by, Reason: *reason}
	switch ev {
	case events.RotationRetryRequested:
		data = events.RotationRetryData{IncidentID: id, TenantID: *tenant, RequestedBy: *by}
	case events.IncidentReviewRequested:
		data = review
	}
	published, err := stream.NewPublisher(conn.JS, events.SourceOf(events.ServiceCLI), nil).Publish(cctx, ev, data)
	if err != nil {
		Writef(errOut, "lockdown %s: %v\n", name, err)
		return ExitFailure
	}
	res := controlResult{IncidentID: id, EventID: published.ID(), Type: published.Type(), RequestedBy: *by, Reason: *reason, TenantID: *tenant}
	if *asJSON {
		ShowJSON(out, res)
		return ExitOK
	}
	Writef(out, "%s of incident %s requested as %s (event %s); follow it with: lockdown status %s\n", name, id, *by, res.EventID, id)
	return ExitOK
}

// defaultOperator is login@host: who ran the command, for the timeline.
func defaultOperator() string {
	name := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}
