// Package app is the notifier's composition root: it reads the rotation's
// events from the durable consumer `notifier` and tells each rotated
// tenant, by email and (when the directory has a URL) signed webhook,
// exactly once per incident and channel.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"net/netip"
	"strings"
	"text/template"
	"time"

	"go.opentelemetry.io/otel/trace/noop"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/config"
	"github.com/lockdown/lockdown/pkg/platform/runner"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/services/notifier/internal/notify"
	"github.com/lockdown/lockdown/services/notifier/internal/smtpmail"
	"github.com/lockdown/lockdown/services/notifier/internal/store"
	"github.com/lockdown/lockdown/services/notifier/internal/webhookpost"
)

// Config is the notifier's configuration.
type Config struct {
	config.Common
	DatabaseURL    string        `env:"DATABASE_URL" secret:"true" doc:"PostgreSQL connection string (schemas notifier and directory are created at start)."`
	SMTPAddr       string        `env:"SMTP_ADDR" doc:"host:port of the platform's SMTP relay."`
	SMTPTLS        string        `env:"SMTP_TLS" default:"starttls" doc:"starttls (required, the server's name verified) or none (a local relay only)."`
	SMTPUsername   string        `env:"SMTP_USERNAME" doc:"SMTP AUTH PLAIN user; empty sends without AUTH."`
	SMTPPassword   string        `env:"SMTP_PASSWORD" secret:"true" doc:"SMTP AUTH password."`
	SMTPTimeout    time.Duration `env:"SMTP_TIMEOUT" default:"15s" doc:"Bound on one message's SMTP session; with WEBHOOK_TIMEOUT it must stay under the consumer's 30 s ack wait."`
	MailFrom       string        `env:"MAIL_FROM" default:"Security Team <security@localhost>" doc:"From address; its domain ends every Message-ID."`
	CredentialsURL string        `env:"CREDENTIALS_URL" doc:"Where tenants find their new SMTP credentials (the notice names it; they are never sent). Empty: the notice says their dashboard."`
	Subject        string        `env:"SUBJECT" default:"URGENT: Security Incident - API Keys Revoked" doc:"Subject line (a text/template over the message's content)."`
	TemplateDir    string        `env:"TEMPLATE_DIR" doc:"Folder with affected.txt.tmpl, affected.html.tmpl, precautionary.txt.tmpl and precautionary.html.tmpl; empty uses the built-in ones (services/notifier/internal/notify/templates)."`
	Rate           float64       `env:"NOTIFY_RATE" default:"20" doc:"Messages per second (email and webhooks) one process starts an incident's notices at. The rate follows what the relay accepts: it doubles each second the relay refuses nothing, up to NOTIFY_RATE_MAX, and halves when it answers a 4xx (try again later), so a large incident is told fast without getting the platform's mail server blocked."`
	RateMax        float64       `env:"NOTIFY_RATE_MAX" default:"200" doc:"The most messages per second one process sends, however much the relay accepts; a NOTIFY_RATE above it is the most (a rate an operator set for a relay known to take it, as before the pace followed the relay). 200/s tells 10,000 tenants in under a minute; lower it to a relay's published limit."`
	Burst          int           `env:"NOTIFY_BURST" default:"5" doc:"Messages that may go at once above the rate."`
	Concurrency    int           `env:"NOTIFY_CONCURRENCY" default:"8" doc:"Tenants one process notifies at once."`
	WebhookSecret  string        `env:"WEBHOOK_SECRET" secret:"true" doc:"Master secret of webhook signatures (at least 32 characters); each tenant's signing key is derived from it."`
	WebhookAllow   []string      `env:"WEBHOOK_ALLOW" doc:"Networks (CIDR) a webhook may reach over plain http and despite being private; empty in production."`
	WebhookTimeout time.Duration `env:"WEBHOOK_TIMEOUT" default:"10s" doc:"Bound on one webhook request."`
	TenantDeadline time.Duration `env:"NOTIFY_TENANT_DEADLINE" default:"15m" doc:"How long one tenant's undelivered notice (a webhook answering 503, a relay refusing it for now) may hold notifications.completed, and so the restore of access, after its rotation: past it the tenant is recorded late, the plan completes, and the delivery goes on (a later send or failure corrects the totals). 0: no deadline."`
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	errs := []error{c.Common.Validate()}
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(config.Prefix+format, a...)) }
	if c.DatabaseURL == "" {
		bad("DATABASE_URL is required")
	}
	if c.SMTPAddr == "" {
		bad("SMTP_ADDR is required")
	}
	if c.SMTPTLS != smtpmail.TLSNone && c.SMTPTLS != smtpmail.TLSStartTLS {
		bad("SMTP_TLS %q is not starttls or none", c.SMTPTLS)
	}
	if (c.SMTPUsername == "") != (c.SMTPPassword == "") {
		bad("SMTP_USERNAME and SMTP_PASSWORD go together")
	}
	if _, err := mail.ParseAddress(c.MailFrom); err != nil {
		bad("MAIL_FROM %q: %v", c.MailFrom, err)
	}
	if _, err := template.New("subject").Parse(c.Subject); err != nil {
		bad("SUBJECT: %v", err)
	} else if _, err := notify.LoadTemplates(c.TemplateDir, c.Subject); err != nil {
		bad("TEMPLATE_DIR: %v", err)
	}
	if c.Rate <= 0 || c.RateMax <= 0 || c.Burst < 1 || c.Concurrency < 1 {
		bad("NOTIFY_RATE and NOTIFY_RATE_MAX must be positive, NOTIFY_BURST and NOTIFY_CONCURRENCY at least 1")
	}
	if len(c.WebhookSecret) < 32 {
		bad("WEBHOOK_SECRET is required and must be at least 32 characters")
	}
	if _, err := c.allow(); err != nil {
		bad("WEBHOOK_ALLOW: %v", err)
	}
	spec, _ := events.ConsumerOf(events.ConsumerNotifier)
	if c.SMTPTimeout <= 0 || c.WebhookTimeout <= 0 || c.SMTPTimeout+c.WebhookTimeout >= spec.AckWait {
		// Both channels of a tenant are sent in one delivery: past the ack
		// wait JetStream would hand it to another process meanwhile.
		bad("SMTP_TIMEOUT and WEBHOOK_TIMEOUT must be positive and together under the %s ack wait", spec.AckWait)
	}
	return errors.Join(errs...)
}

func (c *Config) allow() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range c.WebhookAllow {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Run opens the notifier's adapters and serves until ctx ends.
func Run(ctx context.Context, rt *runner.Runtime, cfg *Config) error {
	return runner.OpenAndServe(ctx, rt, cfg, Open, Serve)
}

// Adapters are what the notifier's work needs from outside and is not
// made from the configuration alone: its store. (The SMTP relay and the
// webhooks' HTTP client are made from the configuration by Serve.)
type Adapters struct {
	Store notify.Store
}

// Open builds the notifier's adapters from the configuration and registers
// their readiness checks; closeAdapters releases them.
func Open(ctx context.Context, rt *runner.Runtime, cfg *Config) (Adapters, func(), error) {
	db, err := store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return Adapters{}, nil, err
	}
	rt.AddCheck("postgres", db.Ping)
	rt.AddCheck("dependencies", rt.DependenciesReady)
	return Adapters{Store: db}, db.Close, nil
}

// Serve runs the consumer over the adapters, with the real SMTP and HTTP
// clients, until ctx ends.
func Serve(ctx context.Context, rt *runner.Runtime, cfg *Config, a Adapters) error {
	db := a.Store
	tp := rt.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	templates, err := notify.LoadTemplates(cfg.TemplateDir, cfg.Subject)
	if err != nil {
		return err
	}
	allow, _ := cfg.allow() // validated
	spec, _ := events.ConsumerOf(events.ConsumerNotifier)
	// One kept relay connection per message in flight.
	mailer := smtpmail.New(smtpmail.Options{Addr: cfg.SMTPAddr, TLS: cfg.SMTPTLS, Username: cfg.SMTPUsername, Password: cfg.SMTPPassword,
		Timeout: cfg.SMTPTimeout, MaxIdle: cfg.Concurrency})
	defer mailer.Close()
	n := notify.New(
		notify.Config{From: cfg.MailFrom, InFlight: spec.AckWait, CredentialsURL: cfg.CredentialsURL, TenantDeadline: cfg.TenantDeadline},
		db,
		mailer,
		webhookpost.New(webhookpost.Options{Secret: []byte(cfg.WebhookSecret), Allow: allow, Timeout: cfg.WebhookTimeout}),
		templates,
		stream.NewPublisher(rt.NATS.JS, events.SourceOf(events.ServiceNotifier), tp),
		notify.NewPace(cfg.Rate, cfg.RateMax, cfg.Burst, func(from, to float64) {
			level := slog.LevelDebug // growing while the relay takes everything: routine
			if to < from {
				level = slog.LevelWarn // the relay refused for load
			}
			rt.Logger.Log(ctx, level, "notification rate changed", slog.Float64("from_per_second", from), slog.Float64("to_per_second", to))
		}),
		tp.Tracer("github.com/lockdown/lockdown/services/notifier"),
		rt.Logger,
	)
	handler := stream.Route(map[events.Name]stream.Handler{
		events.RotationPlanned: stream.Decoded(func(ctx context.Context, _ *stream.Delivery, d events.RotationPlannedData) error {
			return n.Planned(ctx, d)
		}),
		events.RotationTenantFailed: stream.Decoded(func(ctx context.Context, _ *stream.Delivery, d events.RotationTenantFailedData) error {
			return n.RotationFailed(ctx, d)
		}),
		events.RotationTenantCompleted: stream.Decoded(func(ctx context.Context, dl *stream.Delivery, d events.RotationTenantCompletedData) error {
			err := n.Rotated(ctx, d, dl.Event.Time())
			if errors.Is(err, notify.ErrPermanent) {
				return stream.Permanent(err) // recorded; terminated, and a dead-letter record for `lockdown dlq`
			}
			return err // an outage (the relay, PostgreSQL, a webhook host) is retried without limit
		}),
	})
	// A tenant's message that fails for good before its channels recorded
	// anything (bad data, a panic) still ends the tenant as not notified,
	// so the plan completes.
	giveUp := func(ctx context.Context, dl *stream.Delivery, cause error) error {
		if dl == nil || dl.Spec.Name != events.RotationTenantCompleted {
			return nil
		}
		d, err := events.DataAs[events.RotationTenantCompletedData](dl.Event)
		if err != nil {
			return nil
		}
		return n.GiveUp(ctx, d, cause)
	}
	return rt.Serve(ctx, cfg.ShutdownTimeout, runner.Wiring{Consumers: map[string]runner.Consumer{
		events.ConsumerNotifier: {Handler: handler, Tune: func(o *stream.ConsumerOptions) { o.Concurrency, o.OnPermanent = cfg.Concurrency, giveUp }},
	}})
}
