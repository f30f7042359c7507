package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/localstack"
	"github.com/lockdown/lockdown/pkg/platform/pgroles"
)

// showProgress prints the rotation's and the notifications' progress while
// the drill waits for them: a line whenever the counts change, at most
// every interval (done, failed, in flight, rate, ETA — `lockdown status`'s
// view). It returns the function that stops it. Progress is best effort: a
// failed read is skipped, the drill's own waits decide.
func showProgress(ctx context.Context, dbURL, incidentID string, interval time.Duration, say func(string, ...any)) (stop func()) {
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := connectDB(pctx, dbURL)
		if err != nil {
			return
		}
		defer conn.Close(context.Background())
		last := ""
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case <-tick.C:
			}
			v, err := loadView(pctx, conn, incidentID, time.Now())
			if err != nil || v.Rotation == nil {
				continue
			}
			line := progressSummary(v)
			if line != last {
				say("%s", line)
				last = line
			}
		}
	}()
	return func() { cancel(); <-done }
}

// progressSummary is one line of rotation and notification progress.
func progressSummary(v incidentView) string {
	var parts []string
	for _, p := range []struct {
		name string
		v    *progressView
	}{{"rotation", v.Rotation}, {"notification", v.Notification}} {
		if p.v != nil {
			parts = append(parts, p.name+" "+bar(*p.v, 20))
		}
	}
	return strings.Join(parts, "  |  ")
}

// keptStackEnv writes, for --keep, the environment that points the CLI at
// the kept stack (its database with the CLI's read-only role, NATS as the
// operator) into a file only this user may read, and returns its path:
// the passwords are the disposable stack's own, and still not printed.
func keptStackEnv(stack *localstack.Stack) (string, error) {
	lines := []string{
		"# lockdown drill --keep: source this file, then use lockdown incidents / status / report / dlq against the kept stack",
		"export LOCKDOWN_DATABASE_URL='" + stack.Postgres.RoleURL(pgroles.CLIRole) + "'",
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
