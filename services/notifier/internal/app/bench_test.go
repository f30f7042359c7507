package app_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/config"
	"github.com/lockdown/lockdown/pkg/platform/directory"
	"github.com/lockdown/lockdown/pkg/platform/runner"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/services/notifier/internal/app"
	"github.com/lockdown/lockdown/services/notifier/internal/notify"
	"github.com/lockdown/lockdown/services/notifier/internal/smtpmail"
	"github.com/lockdown/lockdown/services/notifier/internal/store"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// BenchmarkNotification sends 1,000 tenants' notifications through the
// notifier (rate limit lifted) to Mailpit, beside three baselines in the
// same run: the same messages sent by the SMTP adapter in a plain loop
// with a connection per message, from 8 goroutines (the notifier's
// concurrency) with a connection per message, and from 8 goroutines on
// kept connections — what the relay takes, the figure Lockdown is held
// to. The difference is Lockdown's own cost: the exactly-once records,
// events and spans.
//
//	go test -run '^$' -bench BenchmarkNotification -benchtime 1x ./services/notifier/internal/app
func BenchmarkNotification(b *testing.B) {
	const tenants = 1000
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	s := localstack.StartTest(b, ctx, localstack.Options{NATS: true, NATSAuth: true, Postgres: true, Mailpit: true})
	pool, err := pgxpool.New(ctx, s.Postgres.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	if err := directory.Migrate(ctx, pool); err != nil {
		b.Fatal(err)
	}
	for i := range tenants {
		id := fmt.Sprintf("tenant-%04d", i)
		if _, err := pool.Exec(ctx, `INSERT INTO directory.tenants (id, name, domain, contact_email) VALUES ($1, $1, $1 || '.example.com', 'security@' || $1 || '.example.com')`, id); err != nil {
			b.Fatal(err)
		}
	}
	templates, err := notify.LoadTemplates("", notify.DefaultSubject)
	if err != nil {
		b.Fatal(err)
	}
	perMessage := smtpmail.New(smtpmail.Options{Addr: s.Mailpit.SMTPAddr, TLS: smtpmail.TLSNone, MaxIdle: -1})
	kept := smtpmail.New(smtpmail.Options{Addr: s.Mailpit.SMTPAddr, TLS: smtpmail.TLSNone, MaxIdle: 8})
	defer kept.Close()
	data := func(incident string, i int) events.RotationTenantCompletedData {
		return events.RotationTenantCompletedData{IncidentID: incident, TenantID: fmt.Sprintf("tenant-%04d", i), SSHFingerprint: "SHA256:x",
			DKIMSelector: "ld20261126-bench", DKIMRecord: "v=DKIM1; k=rsa; p=MIIB", APIKeysDestroyed: 2, SMTPPasswordRotate: true, Affected: i%10 == 0}
	}
	send := func(mailer *smtpmail.Mailer, incident string, i int) {
		d := data(incident, i)
		c := notify.NewContent(directory.Tenant{ID: d.TenantID, Name: d.TenantID, Domain: d.TenantID + ".example.com", ContactEmail: "security@" + d.TenantID + ".example.com"}, d, "")
		subject, text, html, err := templates.Render(c)
		if err == nil {
			err = mailer.Send(ctx, notify.Email{From: "security@localhost", To: c.Tenant.ContactEmail, Subject: subject,
				MessageID: notify.MessageID(incident, d.TenantID, "localhost"), Text: text, HTML: html, IncidentID: incident})
		}
		if err != nil {
			b.Error(err)
		}
	}
	rate := func(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }

	start := time.Now()
	for i := range tenants {
		send(perMessage, "bench-sequential", i)
	}
	sequential := time.Since(start)

	parallelly := func(mailer *smtpmail.Mailer, incident string) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		next := make(chan int)
		for range 8 {
			wg.Go(func() {
				for i := range next {
					send(mailer, incident, i)
				}
			})
		}
		for i := range tenants {
			next <- i
		}
		close(next)
		wg.Wait()
		return time.Since(start)
	}
	parallelPerMessage := parallelly(perMessage, "bench-parallel-per-message")
	parallel := parallelly(kept, "bench-parallel-kept")

	// Lockdown: the notifier in this process, rate limit lifted.
	env := map[string]string{}
	for _, kv := range append(s.Env(events.ServiceNotifier), "LOCKDOWN_NOTIFY_RATE=100000", "LOCKDOWN_NOTIFY_BURST=100") {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	cfg := &app.Config{}
	if err := config.LoadFrom(cfg, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		b.Fatal(err)
	}
	db, err := store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	conn := connect(b, ctx, s, events.ServiceNotifier)
	if err := stream.VerifyTopology(ctx, conn.JS, events.ServiceNotifier); err != nil {
		b.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- app.Serve(runCtx, runner.NewRuntime(events.ServiceNotifier, slog.New(slog.NewJSONHandler(io.Discard, nil)), nil, nil, conn), cfg, app.Adapters{Store: db})
	}()
	defer func() {
		stop()
		if err := <-done; err != nil { // RunWith fails only when it cannot bind
			b.Error(err)
		}
	}()
	rot := connect(b, ctx, s, events.ServiceRotator)
	pub := stream.NewPublisher(rot.JS, events.SourceOf(events.ServiceRotator), nil)
	operator := connect(b, ctx, s, events.UserOperator)
	incident := "bench-lockdown"
	b.ResetTimer()
	start = time.Now()
	if err := pub.PublishWithID(ctx, events.RotationPlanned, incident+"/planned", events.RotationPlannedData{IncidentID: incident, Policy: "all", Tenants: tenants}); err != nil {
		b.Fatal(err)
	}
	for i := range tenants {
		if err := pub.PublishWithID(ctx, events.RotationTenantCompleted, fmt.Sprintf("%s/%d", incident, i), data(incident, i)); err != nil {
			b.Fatal(err)
		}
	}
	_, res, err := stream.Await(ctx, operator.JS, events.NotificationsCompleted, func(_ event.Event, d events.NotificationsCompletedData) bool { return d.IncidentID == incident })
	lockdown := time.Since(start)
	b.StopTimer()
	if err != nil || res.Sent != tenants {
		b.Fatalf("notifications.completed %+v: %v", res, err)
	}
	b.ReportMetric(rate(tenants, sequential), "sequential-msgs/s")
	b.ReportMetric(rate(tenants, parallelPerMessage), "parallel8-conn-per-msg-msgs/s")
	b.ReportMetric(rate(tenants, parallel), "parallel8-kept-conns-msgs/s")
	b.ReportMetric(rate(tenants, lockdown), "lockdown-msgs/s")
	b.ReportMetric(100*parallel.Seconds()/lockdown.Seconds(), "%-of-parallel")
}
