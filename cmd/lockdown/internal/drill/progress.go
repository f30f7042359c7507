package drill

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lockdown/lockdown/cmd/lockdown/internal/cli"
	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// showProgress prints the rotation's and the notifications' progress while
// the drill waits for them: a line whenever the counts change, at most
// every interval (done, failed, rate, ETA — `lockdown status`'s view, from
// the read model as containment updates it). It returns the function that
// stops it. Progress is best effort: the drill's own waits decide.
func showProgress(ctx context.Context, rm *cli.ReadModel, incidentID string, interval time.Duration, say func(string, ...any)) (stop func()) {
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		docs, _, err := rm.Watch(pctx, incidentID)
		if err != nil {
			return
		}
		last, pending, lastAt := "", "", time.Time{}
		// The counts of a change held back by the interval are printed
		// when the drill stops waiting, so the last line is the final one.
		defer func() {
			if pending != last {
				say("%s", pending)
			}
		}()
		for doc := range docs {
			if doc.Rotation == nil {
				continue
			}
			pending = cli.ProgressSummary(doc)
			if pending != last && time.Since(lastAt) >= interval {
				say("%s", pending)
				last, lastAt = pending, time.Now()
			}
		}
	}()
	return func() { cancel(); <-done }
}

// keptStackEnv writes, for --keep, the environment that points the CLI at
// the kept stack (NATS as the operator) into a file only this user may read, and returns its path:
// the passwords are the disposable stack's own, and still not printed.
func keptStackEnv(stack *localstack.Stack) (string, error) {
	lines := []string{
		"# lockdown-drill --keep: source this file, then use lockdown incidents / status / report / dlq against the kept stack",
		"# (the CLI reads the read model in NATS as the operator: no database access)",
		"export LOCKDOWN_NATS_URL='" + stack.NATS.URL + "'",
		"export LOCKDOWN_NATS_USER='" + events.UserOperator + "'",
		"export LOCKDOWN_NATS_PASSWORD='" + stack.NATS.Password(events.UserOperator) + "'",
	}
	if stack.Jaeger != nil {
		lines = append(lines, "export LOCKDOWN_JAEGER_URL='"+stack.Jaeger.QueryURL+"'")
	}
	path := filepath.Join(stack.Dir, "cli.env")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("kept stack's CLI environment: %w", err)
	}
	return path, nil
}

// incidentID is the drilled incident's id ("" before the breach).
func (r drillReport) incidentID() string {
	if r.Breach == nil {
		return ""
	}
	return r.Breach.IncidentID
}

// keepConsole serves the console for a kept stack until ctx ends: on
// 127.0.0.1:8090 (LOCKDOWN_CONSOLE_ADDR), or on a free loopback port when
// that one is taken (another console, another kept stack).
func keepConsole(ctx context.Context, tgt *target) (stop func(), url string, err error) {
	rm, err := cli.OpenReadModel(ctx, tgt.operator())
	if err != nil {
		return nil, "", err
	}
	ln, err := net.Listen("tcp", cli.EnvOr("CONSOLE_ADDR", "127.0.0.1:8090"))
	if err != nil {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			rm.Close()
			return nil, "", err
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = cli.ServeConsole(cctx, rm, ln, tgt.jaegerQuery) }() // a convenience: the drill goes on without it
	return func() { cancel(); <-done; rm.Close() }, "http://" + ln.Addr().String() + "/", nil
}
