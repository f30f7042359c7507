package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/lockdown/lockdown/cmd/lockdown/internal/cli"
	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/natsconn"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/testkit/localstack"
	"github.com/lockdown/lockdown/testkit/testwait"
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

	s := localstack.StartTest(t, ctx, localstack.Options{NATS: true, NATSAuth: true, Postgres: true})
	t.Setenv("LOCKDOWN_NATS_URL", s.NATS.URL)
	// The stack ran the install step: the streams and consumers exist.
	conn, err := natsconn.Connect(ctx, natsconn.Options{URL: s.NATS.URL, User: events.ServiceContainment, Password: s.NATS.Password(events.ServiceContainment)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(context.Background()) }()

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

	t.Run("install nats is refused to anyone but the admin, and the admin brings back a lost consumer", func(t *testing.T) {
		admin, err := natsconn.Connect(ctx, natsconn.Options{URL: s.NATS.URL, User: events.UserAdmin, Password: s.NATS.Password(events.UserAdmin)})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = admin.Close(context.Background()) }()
		if err := admin.JS.DeleteConsumer(ctx, events.StreamEvents, events.ConsumerNotifier); err != nil {
			t.Fatal(err)
		}
		t.Setenv("LOCKDOWN_NATS_USER", events.UserOperator)
		t.Setenv("LOCKDOWN_NATS_PASSWORD", s.NATS.Password(events.UserOperator))
		code, _, errOut := run(ctx, "install", "nats", "--timeout", "30s")
		if code != cli.ExitFailure || !strings.Contains(errOut, "Permissions Violation") {
			t.Fatalf("install as operator: exit %d, stderr %s", code, errOut)
		}
		t.Setenv("LOCKDOWN_NATS_USER", events.UserAdmin)
		t.Setenv("LOCKDOWN_NATS_PASSWORD", s.NATS.Password(events.UserAdmin))
		code, out, errOut := run(ctx, "install", "nats")
		if code != cli.ExitOK || !strings.Contains(out, "consumer "+events.ConsumerNotifier) {
			t.Fatalf("install as admin: exit %d, out %s, stderr %s", code, out, errOut)
		}
		if _, err := admin.JS.Consumer(ctx, events.StreamEvents, events.ConsumerNotifier); err != nil {
			t.Fatalf("the install step did not bring the consumer back: %v", err)
		}
	})

	t.Run("status refuses what is not an incident id, and says when the read model has no such incident", func(t *testing.T) {
		code, _, errOut := run(ctx, "status", "some-id")
		if code != cli.ExitUsage || !strings.Contains(errOut, "not an incident id") {
			t.Fatalf("exit %d, stderr %q", code, errOut)
		}
		t.Setenv("LOCKDOWN_NATS_USER", events.UserOperator)
		t.Setenv("LOCKDOWN_NATS_PASSWORD", s.NATS.Password(events.UserOperator))
		code, _, errOut = run(ctx, "status", "7f0c2a56-0d4e-4f7e-9d43-1b7a3c0e5a11")
		if code != cli.ExitFailure || !strings.Contains(errOut, "no incident 7f0c2a56-0d4e-4f7e-9d43-1b7a3c0e5a11") {
			t.Fatalf("exit %d, stderr %q", code, errOut)
		}
	})

	t.Run("dlq list shows a dead letter with its reason, and replay puts the original back once", func(t *testing.T) {
		// A consumer refuses a vault.unsealed on purpose: the stream
		// library dead-letters it, as any service would.
		pub := stream.NewPublisher(conn.JS, events.SourceOf(events.ServiceContainment), nil)
		original, err := pub.Publish(ctx, events.VaultUnsealed, events.VaultUnsealedData{IncidentID: "inc-dlq", Address: "http://127.0.0.1:1", GateMS: 1})
		if err != nil {
			t.Fatal(err)
		}
		spec, _ := events.ConsumerOf(events.ConsumerContainmentRecovery)
		cctx, stop := context.WithCancel(ctx)
		replayed := make(chan string, 4)
		refuse := true
		consumer := stream.NewConsumer(conn.JS, spec, func(_ context.Context, d *stream.Delivery) error {
			if refuse {
				refuse = false
				return stream.Permanent(errors.New("refused on purpose by the test"))
			}
			replayed <- d.Event.ID()
			return nil
		}, stream.ConsumerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		go func() { _ = consumer.Run(cctx) }() // ends with cctx
		defer stop()
		t.Setenv("LOCKDOWN_NATS_USER", events.UserOperator)
		t.Setenv("LOCKDOWN_NATS_PASSWORD", s.NATS.Password(events.UserOperator))
		var letters []struct {
			Sequence uint64
			Consumer string
			Subject  string
			EventID  string `json:"event_id"`
			Reason   string
		}
		testwait.For(t, 30*time.Second, "the dead letter", func() bool {
			code, out, _ := run(ctx, "dlq", "list", "--json", "--consumer", events.ConsumerContainmentRecovery)
			return code == cli.ExitOK && json.Unmarshal([]byte(out), &letters) == nil && len(letters) == 1
		})
		l := letters[0]
		if l.EventID != original.ID() || l.Subject != events.VaultUnsealed.Subject() || !strings.Contains(l.Reason, "refused on purpose") {
			t.Fatalf("dead letter %+v", l)
		}
		// The operator reads dead letters but may not publish events: the
		// server refuses its replay.
		if code, _, errOut := run(ctx, "dlq", "replay", fmt.Sprint(l.Sequence), "--nats-user", events.UserOperator, "--timeout", "3s"); code != cli.ExitFailure || !strings.Contains(errOut, "Permissions Violation") {
			t.Fatalf("replay as the operator: exit %d, stderr %s", code, errOut)
		}
		t.Setenv("LOCKDOWN_NATS_USER", events.UserReplayer)
		t.Setenv("LOCKDOWN_NATS_PASSWORD", s.NATS.Password(events.UserReplayer))
		code, out, errOut := run(ctx, "dlq", "replay", fmt.Sprint(l.Sequence), "--json")
		var res struct{ Duplicate bool }
		if code != cli.ExitOK || json.Unmarshal([]byte(out), &res) != nil || res.Duplicate {
			t.Fatalf("replay: exit %d, out %s, stderr %s", code, out, errOut)
		}
		select {
		case id := <-replayed:
			if id != original.ID() {
				t.Fatalf("replayed event %s, want %s", id, original.ID())
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the replayed event never reached the consumer")
		}
		code, out, _ = run(ctx, "dlq", "replay", fmt.Sprint(l.Sequence), "--json")
		if code != cli.ExitOK || json.Unmarshal([]byte(out), &res) != nil || !res.Duplicate {
			t.Fatalf("second replay: exit %d, out %s (want a duplicate)", code, out)
		}
		if code, _, errOut := run(ctx, "dlq", "replay", "999999"); code != cli.ExitFailure || !strings.Contains(errOut, "no dead letter") {
			t.Fatalf("unknown sequence: exit %d, %s", code, errOut)
		}
	})

	t.Run("a dead letter its consumer could not have written is not replayed", func(t *testing.T) {
		// Containment's credential may publish dead letters of its own
		// durables only; one claiming to be the notifier's, carrying a
		// rotation.tenant.completed, is refused by the replayer.
		msg, err := stream.NewPublisher(conn.JS, events.SourceOf(events.ServiceContainment), nil).Prepare(ctx, events.DeadLetter, "forged-1",
			events.DeadLetterData{Consumer: events.ConsumerNotifier, Reason: "forged", Subject: events.RotationTenantCompleted.Subject(),
				OriginalData: []byte(`{}`), FailedAt: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		msg.Subject = events.DeadLetterSubject(events.ConsumerContainmentRecovery)
		ack, err := conn.JS.PublishMsg(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv("LOCKDOWN_NATS_USER", events.UserReplayer)
		t.Setenv("LOCKDOWN_NATS_PASSWORD", s.NATS.Password(events.UserReplayer))
		code, _, errOut := run(ctx, "dlq", "replay", fmt.Sprint(ack.Sequence))
		if code != cli.ExitFailure || !strings.Contains(errOut, "refusing to replay") {
			t.Fatalf("forged dead letter: exit %d, stderr %s", code, errOut)
		}
	})
}

// TestCompletion checks the generated help and shell completion: the
// commands are listed, and a command's flags complete from the flags the
// command itself declares.
func TestCompletion(t *testing.T) {
	ctx := context.Background()
	t.Run("help lists every command and exits 0", func(t *testing.T) {
		code, out, _ := run(ctx, "--help")
		for _, c := range []string{"console", "status", "drill", "dlq", "completion"} {
			if !strings.Contains(out, c) {
				t.Errorf("help does not list %s", c)
			}
		}
		if code != cli.ExitOK {
			t.Fatalf("exit %d", code)
		}
	})
	t.Run("bash completion is generated", func(t *testing.T) {
		code, out, errOut := run(ctx, "completion", "bash")
		if code != cli.ExitOK || !strings.Contains(out, "__start_lockdown") {
			t.Fatalf("exit %d: %.200s %s", code, out, errOut)
		}
	})
	t.Run("a command's flags and a subcommand complete", func(t *testing.T) {
		_, out, _ := run(ctx, "__complete", "status", "--w")
		if !strings.Contains(out, "--watch") || strings.Contains(out, "--format") {
			t.Fatalf("status --w completes to %q", out)
		}
		_, out, _ = run(ctx, "__complete", "dlq", "")
		if !strings.Contains(out, "list") || !strings.Contains(out, "replay") {
			t.Fatalf("dlq completes to %q", out)
		}
		_, out, _ = run(ctx, "__complete", "dlq", "list", "--c")
		if !strings.Contains(out, "--consumer") {
			t.Fatalf("dlq list --c completes to %q", out)
		}
	})
	t.Run("every flag a command declares completes, read from its flag set", func(t *testing.T) {
		_, out, _ := run(ctx, "__complete", "report", "--nats-")
		for _, f := range []string{"--nats-url", "--nats-user", "--nats-password-file"} {
			if !strings.Contains(out, f) {
				t.Errorf("report --nats- completes to %q, without %s", out, f)
			}
		}
	})
}
