package app_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/stream"
	"github.com/lockdown/lockdown/pkg/platform/config"
	"github.com/lockdown/lockdown/pkg/platform/localstack"
	"github.com/lockdown/lockdown/pkg/platform/natsconn"
	"github.com/lockdown/lockdown/pkg/platform/runner"
	"github.com/lockdown/lockdown/pkg/platform/testwait"
	"github.com/lockdown/lockdown/services/assessor/internal/app"
	"github.com/lockdown/lockdown/services/assessor/internal/store"
)

// TestAssessment runs the real Vault with its socket audit device pointed
// at the assessor, plays a normal service and an intruder, and checks the
// assessment of the incident.
func TestAssessment(t *testing.T) {
	for _, tc := range []struct {
		name      string
		intruded  int
		wantScope string
	}{
		{"an intruder reading 12 of 30 tenants is a widespread breach attributed to its accessor", 12, "widespread"},
		{"an intruder reading 5 tenants is a limited breach", 5, "limited"},
	} {
		t.Run(tc.name, func(t *testing.T) { runScenario(t, tc.intruded, tc.wantScope) })
	}
}

func runScenario(t *testing.T, intruded int, wantScope string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := localstack.Start(ctx, localstack.Options{NATS: true, NATSAuth: true, Postgres: true, Vault: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	a, db, stop := startAssessor(t, ctx, s)
	defer stop()

	root, err := s.Vault.Client()
	must(t, err)
	must(t, root.Sys().EnableAuditWithOptionsWithContext(ctx, "socket", &vault.EnableAuditOptions{Type: "socket",
		Options: map[string]string{"address": a.Listener.Addr(), "socket_type": "tcp"}}))

	// 30 tenants, each with SSH and SMTP secrets; the mailer's own config.
	kv := root.KVv2("secret")
	for i := range 30 {
		for _, kind := range []string{"ssh", "smtp"} {
			_, err := kv.Put(ctx, fmt.Sprintf("tenants/t%02d/%s", i, kind), map[string]any{"value": "seed"})
			must(t, err)
		}
	}
	_, err = kv.Put(ctx, "config/mailer", map[string]any{"relay": "smtp.internal"})
	must(t, err)
	must(t, root.Sys().PutPolicyWithContext(ctx, "mailer", `
path "secret/data/config/mailer" { capabilities = ["read"] }
path "secret/data/tenants/t29/smtp" { capabilities = ["read"] }`))
	must(t, root.Sys().PutPolicyWithContext(ctx, "leaked", `path "secret/data/tenants/*" { capabilities = ["read"] }`))
	mailer := tokenWith(t, ctx, root, "mailer")
	intruder := tokenWith(t, ctx, root, "leaked")

	// The normal service reads its own few paths.
	for range 3 {
		readAs(ctx, s.Vault.Addr, mailer.Auth.ClientToken, "secret/data/config/mailer")
		readAs(ctx, s.Vault.Addr, mailer.Auth.ClientToken, "secret/data/tenants/t29/smtp")
	}
	// The intruder reads the first tenants' secrets and probes elsewhere.
	var want []string
	for i := range intruded {
		tenant := fmt.Sprintf("t%02d", i)
		want = append(want, tenant)
		for _, kind := range []string{"ssh", "smtp"} {
			if err := readAs(ctx, s.Vault.Addr, intruder.Auth.ClientToken, "secret/data/tenants/"+tenant+"/"+kind); err != nil {
				t.Fatal(err)
			}
		}
	}
	denied := 0
	for _, p := range []string{"secret/data/config/mailer", "sys/policies/acl/root-like", "secret/data/api_keys/t01/k1", "sys/mounts"} {
		if err := readAs(ctx, s.Vault.Addr, intruder.Auth.ClientToken, p); err != nil && strings.Contains(err.Error(), "permission denied") {
			denied++
		}
	}
	if denied != 4 {
		t.Fatalf("the intruder's probes: %d permission denied, want 4", denied)
	}
	lastPath := "secret/data/config/mailer"
	testwait.For(t, 20*time.Second, "the audit log to reach PostgreSQL", func() bool {
		var n int
		db.Pool().QueryRow(ctx, `SELECT count(*) FROM assessor.audit_entries WHERE type = 'response' AND error <> '' AND path = $1`, lastPath).Scan(&n)
		var probes int
		db.Pool().QueryRow(ctx, `SELECT count(*) FROM assessor.audit_entries WHERE type = 'response' AND path = 'sys/mounts'`).Scan(&probes)
		return n == 1 && probes == 1
	})

	incidentID := fmt.Sprintf("inc-%d", intruded)
	publishIncident(t, ctx, s, incidentID, time.Now().Add(time.Second))
	got := awaitAssessment(t, ctx, s, incidentID)

	if !slices.Equal(got.AffectedTenants, want) {
		t.Fatalf("affected tenants %v, want exactly %v", got.AffectedTenants, want)
	}
	if got.Scope != wantScope {
		t.Fatalf("scope %s, want %s", got.Scope, wantScope)
	}
	hmacIntruder, err := root.Sys().AuditHashWithContext(ctx, "socket", intruder.Auth.Accessor)
	must(t, err)
	hmacMailer, err := root.Sys().AuditHashWithContext(ctx, "socket", mailer.Auth.Accessor)
	must(t, err)
	lead := got.Actors[0]
	if lead.Accessor != hmacIntruder || !slices.Equal(lead.Tenants, want) || lead.Denied != denied || lead.Reads != 2*intruded {
		t.Fatalf("the leading actor %+v is not the intruder (%s) with %d tenants, %d reads, %d denied", lead, hmacIntruder, intruded, 2*intruded, denied)
	}
	if got.SuspiciousEvents < denied {
		t.Fatalf("suspicious events %d < %d permission denied", got.SuspiciousEvents, denied)
	}
	var m *events.Actor
	for i := range got.Actors {
		if got.Actors[i].Accessor == hmacMailer {
			m = &got.Actors[i]
		}
	}
	if m == nil || m.Reads != 3 || !slices.Equal(m.Tenants, []string{"t29"}) || m.Denied != 0 {
		t.Fatalf("the mailer's reads are not attributed to it: %+v", m)
	}
	if strings.Contains(fmt.Sprint(got), intruder.Auth.ClientToken) || strings.Contains(fmt.Sprint(got), intruder.Auth.Accessor) {
		t.Fatal("a token or a clear accessor is in the assessment")
	}
	if a.Pipeline.Stats.Malformed.Load() != 0 || a.Pipeline.Stats.Dropped.Load() != 0 {
		t.Fatalf("stats: malformed %d dropped %d", a.Pipeline.Stats.Malformed.Load(), a.Pipeline.Stats.Dropped.Load())
	}
}

func startAssessor(t *testing.T, ctx context.Context, s *localstack.Stack) (*app.Assessor, *store.Store, func()) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	conn, err := natsconn.Connect(ctx, natsconn.Options{URL: s.NATS.URL, User: events.ServiceAssessor, Password: s.NATS.Password(events.ServiceAssessor)})
	must(t, err)
	must(t, stream.EnsureTopology(ctx, conn.JS))
	cfg := &app.Config{}
	must(t, config.LoadFrom(cfg, func(k string) (string, bool) {
		switch k {
		case "LOCKDOWN_DATABASE_URL":
			return s.Postgres.URL, true
		case "LOCKDOWN_AUDIT_LISTEN":
			return "127.0.0.1:0", true
		case "LOCKDOWN_AUDIT_FLUSH":
			return "50ms", true
		}
		return "", false
	}))
	db, err := store.Open(ctx, cfg.DatabaseURL)
	must(t, err)
	rt := &runner.Runtime{Service: events.ServiceAssessor, Logger: logger, NATS: conn}
	a, err := app.New(ctx, rt, cfg, db)
	must(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	return a, db, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("assessor: %v", err)
		}
		conn.Close(context.Background())
		db.Close()
	}
}

func tokenWith(t *testing.T, ctx context.Context, root *vault.Client, policy string) *vault.Secret {
	t.Helper()
	tok, err := root.Auth().Token().CreateWithContext(ctx, &vault.TokenCreateRequest{Policies: []string{policy}, DisplayName: policy})
	must(t, err)
	return tok
}

func readAs(ctx context.Context, addr, token, path string) error {
	c, err := vault.NewClient(&vault.Config{Address: addr})
	if err != nil {
		return err
	}
	c.SetToken(token)
	_, err = c.Logical().ReadWithContext(ctx, path)
	return err
}

func publishIncident(t *testing.T, ctx context.Context, s *localstack.Stack, id string, detected time.Time) {
	t.Helper()
	conn, err := natsconn.Connect(ctx, natsconn.Options{URL: s.NATS.URL, User: events.ServiceContainment, Password: s.NATS.Password(events.ServiceContainment)})
	must(t, err)
	defer conn.Close(context.Background())
	must(t, stream.NewPublisher(conn.JS, events.SourceOf(events.ServiceContainment), nil).PublishWithID(ctx, events.IncidentOpened, id+"/incident.opened",
		events.IncidentOpenedData{IncidentID: id, BreachEventID: "b-" + id, DetectedAt: detected, Severity: events.SeverityCritical, Summary: "test"}))
}

func awaitAssessment(t *testing.T, ctx context.Context, s *localstack.Stack, id string) events.AssessmentCompletedData {
	t.Helper()
	conn, err := natsconn.Connect(ctx, natsconn.Options{URL: s.NATS.URL, User: events.UserOperator, Password: s.NATS.Password(events.UserOperator)})
	must(t, err)
	defer conn.Close(context.Background())
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, d, err := stream.Await(wctx, conn.JS, events.AssessmentCompleted, func(_ event.Event, d events.AssessmentCompletedData) bool { return d.IncidentID == id })
	must(t, err)
	sort.Strings(d.AffectedTenants)
	return d
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
