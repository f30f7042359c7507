package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lockdown/lockdown/cmd/lockdown/internal/cli"
	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/stream"
	"github.com/lockdown/lockdown/pkg/platform/localstack"
	"github.com/lockdown/lockdown/pkg/platform/natsconn"
)

func run(ctx context.Context, args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := cli.Main(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestCLI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("bad usage exits 2 with a message", func(t *testing.T) {
		for _, args := range [][]string{{}, {"nope"}, {"trigger", "--severity", "high"}, {"trigger", "--summary", "x", "--severity", "loud"}, {"status"}} {
			code, _, errOut := run(ctx, args...)
			if code != cli.ExitUsage || errOut == "" {
				t.Errorf("%v: exit %d, stderr %q", args, code, errOut)
			}
		}
	})

	s, err := localstack.Start(ctx, localstack.Options{NATS: true, NATSAuth: true, Postgres: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	t.Setenv("LOCKDOWN_NATS_URL", s.NATS.URL)
	// Lockdown's services create the streams at start; do what they do.
	conn, err := natsconn.Connect(ctx, natsconn.Options{URL: s.NATS.URL, User: events.ServiceContainment, Password: s.NATS.Password(events.ServiceContainment)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := stream.EnsureTopology(ctx, conn.JS); err != nil {
		t.Fatal(err)
	}

	t.Run("trigger publishes a breach with the SIEM's credentials, and the same id again is a duplicate", func(t *testing.T) {
		t.Setenv("LOCKDOWN_NATS_USER", events.UserSIEM)
		t.Setenv("LOCKDOWN_NATS_PASSWORD", s.NATS.Password(events.UserSIEM))
		code, out, errOut := run(ctx, "trigger", "--summary", "drill", "--severity", "critical", "--indicator", "ip:192.0.2.1", "--id", "fixed-id-1", "--json")
		var res struct {
			EventID   string `json:"event_id"`
			Stream    string `json:"stream"`
			Duplicate bool   `json:"duplicate"`
		}
		if code != cli.ExitOK || json.Unmarshal([]byte(out), &res) != nil || res.EventID != "fixed-id-1" || res.Stream != events.StreamEvents || res.Duplicate {
			t.Fatalf("exit %d, out %s, err %s", code, out, errOut)
		}
		code, out, _ = run(ctx, "trigger", "--summary", "drill", "--severity", "critical", "--id", "fixed-id-1")
		if code != cli.ExitOK || !strings.Contains(out, "duplicate id") {
			t.Fatalf("exit %d, out %s", code, out)
		}
	})

	t.Run("trigger as the operator is refused by NATS", func(t *testing.T) {
		t.Setenv("LOCKDOWN_NATS_USER", events.UserOperator)
		t.Setenv("LOCKDOWN_NATS_PASSWORD", s.NATS.Password(events.UserOperator))
		code, _, errOut := run(ctx, "trigger", "--summary", "forged", "--severity", "low")
		if code != cli.ExitFailure || errOut == "" {
			t.Fatalf("exit %d, stderr %q", code, errOut)
		}
	})

	t.Run("status without a database says how to name one", func(t *testing.T) {
		t.Setenv("LOCKDOWN_DATABASE_URL", "")
		code, _, errOut := run(ctx, "status", "some-id")
		if code != cli.ExitFailure || !strings.Contains(errOut, "LOCKDOWN_DATABASE_URL") {
			t.Fatalf("exit %d, stderr %q", code, errOut)
		}
	})
}
