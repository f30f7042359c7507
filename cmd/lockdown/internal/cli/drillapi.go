package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"

	"github.com/lockdown/lockdown/pkg/events/readmodel"
	"github.com/lockdown/lockdown/pkg/events/report"
)

// The drill is its own binary (lockdown-drill, cmd/lockdown/drill): it
// links the local stack's servers, which the operator's lockdown must not.
// What it shares with the CLI — the flag and output conventions above, the
// operator's read model, the plan, the status view, the console — it
// reaches through the exported names here and in cli.go: one place for
// each, not a copy.

// NATS is a NATS identity given by value: the drill knows its stack's
// address and passwords, an operator gives them in flags.
type NATS struct{ URL, User, Password string }

func (n NATS) flags() natsFlags { return natsFlags{url: &n.URL, user: &n.User, password: n.Password} }

// OpenReadModel connects as n and binds to the read model's buckets,
// giving up after 15 s.
func OpenReadModel(ctx context.Context, n NATS) (*ReadModel, error) {
	return openReadModel(ctx, n.flags())
}

// StoredReport waits for the report containment stored when it resolved
// the incident, as the read model serves it.
func StoredReport(ctx context.Context, n NATS, incidentID string) (report.Report, error) {
	rm, err := OpenReadModel(ctx, n)
	if err != nil {
		return report.Report{}, err
	}
	defer rm.Close()
	return FinalReport(ctx, rm, incidentID)
}

// CeremonyNonce waits until containment has opened the rekey ceremony and
// returns its nonce, as `lockdown status` shows it to the key holders.
func CeremonyNonce(ctx context.Context, rm *ReadModel, incidentID string) (string, error) {
	docs, errs, err := rm.Watch(ctx, incidentID)
	if err != nil {
		return "", err
	}
	for {
		select {
		case err := <-errs:
			return "", err
		case doc, ok := <-docs:
			if !ok {
				return "", fmt.Errorf("the rekey ceremony did not open: %w", ctx.Err())
			}
			if doc.Recovery != nil && doc.Recovery.Ceremony.Nonce != "" {
				return doc.Recovery.Ceremony.Nonce, nil
			}
		}
	}
}

// ProgressSummary is one line of the rotation's and the notifications'
// progress bars (`lockdown status`'s, narrower).
func ProgressSummary(v readmodel.Incident) string {
	var parts []string
	for _, p := range progresses(v) {
		parts = append(parts, p.name+" "+bar(*p.v, 20))
	}
	return strings.Join(parts, "  |  ")
}

// ServeConsole serves the web console on ln from rm until ctx ends, on
// loopback without a token (the drill's kept stack), logging nowhere.
func ServeConsole(ctx context.Context, rm *ReadModel, ln net.Listener, jaegerURL string) error {
	return newConsole(rm, jaegerURL, "", slog.New(slog.NewTextHandler(io.Discard, nil))).serve(ctx, ln)
}
