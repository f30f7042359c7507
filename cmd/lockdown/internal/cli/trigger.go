package cli

import (
	"context"
	"io"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/natsconn"
	"github.com/lockdown/lockdown/pkg/platform/stream"
)

// triggerResult is what `trigger --json` prints.
type triggerResult struct {
	EventID   string `json:"event_id"`
	Type      string `json:"type"`
	Subject   string `json:"subject"`
	Stream    string `json:"stream"`
	Sequence  uint64 `json:"sequence"`
	Duplicate bool   `json:"duplicate"`
}

func runTrigger(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := NewFlags("trigger", errOut)
	natsURL := fs.String("nats-url", EnvOr("NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL (LOCKDOWN_NATS_URL)")
	user := fs.String("nats-user", EnvOr("NATS_USER", ""), "NATS user (LOCKDOWN_NATS_USER); the SIEM user may publish breaches")
	summary := fs.String("summary", "", "what was detected (required)")
	severity := fs.String("severity", "", "critical, high, medium or low (required)")
	source := fs.String("source", "/lockdown/cli", "CloudEvents source naming the detector")
	id := fs.String("id", "", "event id (default: a new UUID); reuse one to test idempotency")
	cluster := fs.String("vault-cluster", "", "Vault cluster concerned (optional)")
	var indicators listFlag
	fs.Var(&indicators, "indicator", "indicator of compromise (repeatable)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if code, ok := Parse(fs, args); !ok {
		return code
	}
	ev, err := events.New(events.BreachDetected, *source, events.BreachDetectedData{
		Summary: *summary, Severity: events.Severity(*severity), Indicators: indicators, VaultCluster: *cluster,
	})
	if err != nil {
		Writef(errOut, "lockdown trigger: %v\n", err)
		return ExitUsage
	}
	if *id != "" {
		ev.SetID(*id)
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := natsconn.Connect(cctx, natsconn.Options{URL: *natsURL, User: *user, Password: EnvOr("NATS_PASSWORD", ""), Name: "lockdown-cli"})
	if err != nil {
		Writef(errOut, "lockdown trigger: %v\n", err)
		return ExitFailure
	}
	defer CloseNATS(conn)
	ack, err := stream.NewPublisher(conn.JS, *source, nil).Unchecked().PublishEvent(cctx, ev)
	if err != nil {
		Writef(errOut, "lockdown trigger: %v\n", err)
		return ExitFailure
	}
	res := triggerResult{EventID: ev.ID(), Type: ev.Type(), Subject: events.BreachDetected.Subject(), Stream: ack.Stream, Sequence: ack.Sequence, Duplicate: ack.Duplicate}
	if *asJSON {
		ShowJSON(out, res)
		return ExitOK
	}
	note := ""
	if res.Duplicate {
		note = " (duplicate id: JetStream kept the first)"
	}
	Writef(out, "breach %s published on %s (stream %s, seq %d)%s\n", res.EventID, res.Subject, res.Stream, res.Sequence, note)
	return ExitOK
}
