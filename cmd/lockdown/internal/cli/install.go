package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/stream"
	"github.com/lockdown/lockdown/pkg/platform/natsconn"
)

// runInstall provisions what the services need and may not create
// themselves. Today that is NATS: the streams and durable consumers the
// contract declares, created or brought up to date with the admin
// identity. It is idempotent, so deployments run it on every release
// (a compose one-shot, a Kubernetes Job) and services wait for it.
func runInstall(ctx context.Context, args []string, out, errOut io.Writer) int {
	if len(args) == 0 || args[0] != "nats" {
		fmt.Fprintln(errOut, "usage: lockdown install nats [--nats-url URL] [--nats-user admin]")
		return ExitUsage
	}
	fs := newFlags("install nats", errOut)
	natsURL := fs.String("nats-url", envOr("NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL(s), comma-separated (LOCKDOWN_NATS_URL)")
	user := fs.String("nats-user", envOr("NATS_USER", events.UserAdmin), "NATS user allowed to manage JetStream (LOCKDOWN_NATS_USER); its password comes from LOCKDOWN_NATS_PASSWORD")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long (a cluster may still be electing its JetStream leader)")
	if code, ok := parse(fs, args[1:]); !ok {
		return code
	}
	ictx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	conn, err := natsconn.Connect(ictx, natsconn.Options{URL: *natsURL, User: *user, Password: envOr("NATS_PASSWORD", ""), Name: "lockdown-install"})
	if err != nil {
		fmt.Fprintf(errOut, "lockdown install nats: %v\n", err)
		return ExitFailure
	}
	defer conn.Close(context.Background())
	if err := stream.EnsureTopology(ictx, conn.JS); err != nil {
		fmt.Fprintf(errOut, "lockdown install nats: %v\n", err)
		return ExitFailure
	}
	for _, s := range events.Streams() {
		fmt.Fprintf(out, "stream %s: %d subjects\n", s.Name, len(s.Subjects))
	}
	for _, c := range events.Consumers() {
		fmt.Fprintf(out, "consumer %s on %s for %s\n", c.Durable, c.Stream, c.Service)
	}
	return ExitOK
}
