package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/directory"
	"github.com/lockdown/lockdown/pkg/platform/retry"
)

// Config is what the domain needs from the service's configuration.
type Config struct {
	From string // the From address; its domain also ends each Message-ID
	// InFlight is how long a claimed, unfinished send is presumed to be
	// in progress elsewhere (the consumer's ack wait): a redelivery within
	// it waits, one after it sends again with the same Message-ID.
	InFlight time.Duration
	// CredentialsURL is where a tenant finds its new SMTP credentials (the
	// notice names it; empty: "your dashboard").
	CredentialsURL string
	// TenantDeadline bounds how long one tenant's undelivered notice may
	// hold the plan's completion (and so the restore of the platform's
	// access), counted from its rotation's completion: past it the tenant
	// is recorded late and the delivery goes on. 0: no deadline.
	TenantDeadline time.Duration
}

// Notifier tells tenants, once per incident and channel.
type Notifier struct {
	cfg       Config
	store     Store
	mailer    Mailer
	webhooks  WebhookSender
	templates *Templates
	pub       Publisher
	limiter   Limiter
	tracer    trace.Tracer
	logger    *slog.Logger
	now       func() time.Time
}

// New builds a Notifier.
func New(cfg Config, store Store, mailer Mailer, webhooks WebhookSender, templates *Templates, pub Publisher, limiter Limiter, tracer trace.Tracer, logger *slog.Logger) *Notifier {
	return &Notifier{cfg: cfg, store: store, mailer: mailer, webhooks: webhooks, templates: templates, pub: pub,
		limiter: limiter, tracer: tracer, logger: logger, now: time.Now}
}

// Planned records the plan's size and announces completion if every
// tenant already has an outcome (events can arrive in any order).
func (n *Notifier) Planned(ctx context.Context, d events.RotationPlannedData) error {
	if err := n.store.Plan(ctx, d.IncidentID, d.Tenants); err != nil {
		return err
	}
	return n.announceIfComplete(ctx, d.IncidentID)
}

// RotationFailed tells a tenant whose rotation failed what happened (the
// step it stopped at: some secrets may be new, some API keys gone), what
// to do meanwhile and what comes next — never that it was rotated. The
// notice is recorded apart from the rotated one, which a retry
// (`lockdown retry`) sends later; a second failure does not repeat it.
// The tenant counts as not notified of a rotation; the failure is the
// operator's to mend. Errors are as for Rotated.
func (n *Notifier) RotationFailed(ctx context.Context, d events.RotationTenantFailedData) error {
	tenant, err := n.store.Tenant(ctx, d.TenantID)
	var permanent []error
	switch {
	case errors.Is(err, directory.ErrUnknownTenant):
		// Not in the directory (that is often why it failed): no address.
	case err != nil:
		return err
	default:
		content := NewIncompleteContent(tenant, d)
		for _, ch := range channelsOf(tenant) {
			if _, err := n.deliver(ctx, ch, content); err != nil {
				if !errors.Is(err, ErrPermanent) {
					return err
				}
				permanent = append(permanent, fmt.Errorf("%s: %w", ch, err))
			}
		}
	}
	if err := n.store.Outcome(ctx, d.IncidentID, d.TenantID, StateFailed, "rotation failed at "+d.Step); err != nil {
		return err
	}
	return errors.Join(errors.Join(permanent...), n.announceIfComplete(ctx, d.IncidentID))
}

// channelsOf are the channels a tenant is told on: email, and its webhook
// when it has one.
func channelsOf(t directory.Tenant) []string {
	if t.WebhookURL != "" {
		return []string{ChannelEmail, ChannelWebhook}
	}
	return []string{ChannelEmail}
}

// incompleteSuffix keeps the records, event ids and Message-ID of the
// incomplete-rotation notice apart from the rotated notice that may
// follow it after a retry.
const incompleteSuffix = "-incomplete"

// recordKey is the channel under which c's delivery is recorded.
func recordKey(channel string, c Content) string {
	if c.Incomplete {
		return channel + incompleteSuffix
	}
	return channel
}

// splitKey reads a record key back: the channel, and the notice
// ("incomplete", or "" for the rotated one).
func splitKey(key string) (channel, notice string) {
	if ch, ok := strings.CutSuffix(key, incompleteSuffix); ok {
		return ch, "incomplete"
	}
	return key, ""
}

// Rotated notifies one rotated tenant on every channel it has.
//
// A returned error wrapping ErrPermanent means at least one channel failed
// for good (recorded, and notification.failed emitted); any other error
// means try again later — without limit: a relay or a webhook host that is
// away delays the message, it never fails it — and channels already sent
// are not sent again.
//
// rotatedAt is when the tenant's rotation completed (the event's time): a
// notice still undelivered TenantDeadline after it makes the tenant late.
func (n *Notifier) Rotated(ctx context.Context, d events.RotationTenantCompletedData, rotatedAt time.Time) error {
	tenant, err := n.store.Tenant(ctx, d.TenantID)
	if errors.Is(err, directory.ErrUnknownTenant) {
		// The rotator rotated a tenant the directory no longer has: no
		// address to write to.
		if ferr := n.fail(ctx, d.IncidentID, d.TenantID, ChannelEmail, err.Error()); ferr != nil {
			return ferr
		}
		if ferr := n.store.Outcome(ctx, d.IncidentID, d.TenantID, StateFailed, err.Error()); ferr != nil {
			return ferr
		}
		return errors.Join(Permanent(err), n.announceIfComplete(ctx, d.IncidentID))
	}
	if err != nil {
		return err
	}
	content := NewContent(tenant, d, n.cfg.CredentialsURL)
	var permanent, transient []error
	sent := 0
	for _, ch := range channelsOf(tenant) {
		state, err := n.deliver(ctx, ch, content)
		if err != nil && !errors.Is(err, ErrPermanent) {
			// Transient: the message comes back (sent channels are
			// skipped); the other channels are tried meanwhile.
			transient = append(transient, fmt.Errorf("%s: %w", ch, err))
			continue
		}
		if err != nil {
			permanent = append(permanent, fmt.Errorf("%s: %w", ch, err))
		}
		if state == StateSent {
			sent++
		}
	}
	if len(transient) > 0 {
		return errors.Join(append(transient, n.lateIfDue(ctx, d, rotatedAt, sent, errors.Join(transient...)))...)
	}
	// The tenant was told if any channel reached it; failed channels are
	// reported on their own (notification.failed, dead letter).
	outcome, reason := StateSent, ""
	if sent == 0 {
		// Every channel failed: now, or in an earlier delivery (then
		// permanent is empty and the reasons are in the delivery rows).
		outcome, reason = StateFailed, "every channel failed"
		if len(permanent) > 0 {
			reason = errors.Join(permanent...).Error()
		}
	}
	if err := n.store.Outcome(ctx, d.IncidentID, d.TenantID, outcome, reason); err != nil {
		return err
	}
	if err := n.announceIfComplete(ctx, d.IncidentID); err != nil {
		return err
	}
	return errors.Join(permanent...)
}

// lateIfDue records a tenant whose notice is still undelivered past the
// deadline: sent when another channel reached it, late otherwise; then
// the plan may complete without waiting for it. The delivery goes on (the
// caller returns the transient error): a later send or failure corrects
// the totals.
func (n *Notifier) lateIfDue(ctx context.Context, d events.RotationTenantCompletedData, rotatedAt time.Time, sent int, cause error) error {
	if n.cfg.TenantDeadline <= 0 || rotatedAt.IsZero() || n.now().Sub(rotatedAt) < n.cfg.TenantDeadline {
		return nil
	}
	state, reason := StateLate, fmt.Sprintf("not delivered %s after the rotation (still trying): %v", n.cfg.TenantDeadline, cause)
	if sent > 0 {
		state = StateSent // told on another channel; the failing one is still tried
	}
	if err := n.store.Outcome(ctx, d.IncidentID, d.TenantID, state, reason); err != nil {
		return err
	}
	n.logger.WarnContext(ctx, "tenant notice past its deadline: the plan completes without it, delivery goes on", slog.String("incident_id", d.IncidentID),
		slog.String("tenant_id", d.TenantID), slog.String("outcome", state), slog.Duration("deadline", n.cfg.TenantDeadline))
	return n.announceIfComplete(ctx, d.IncidentID)
}

// GiveUp records a tenant as not notified when its message failed for good
// on something other than a send (bad data, a panic): without an outcome
// the plan would never complete. A channel already final keeps its state.
func (n *Notifier) GiveUp(ctx context.Context, d events.RotationTenantCompletedData, cause error) error {
	reason := "failed for good: " + cause.Error()
	if err := n.fail(ctx, d.IncidentID, d.TenantID, ChannelEmail, reason); err != nil {
		return err
	}
	if err := n.store.Outcome(ctx, d.IncidentID, d.TenantID, StateFailed, reason); err != nil {
		return err
	}
	return n.announceIfComplete(ctx, d.IncidentID)
}

// deliver sends one channel once: it claims the record, skips a channel
// already final, sends, and records the result. It returns the final state
// (sent or failed) or an error to retry.
func (n *Notifier) deliver(ctx context.Context, channel string, c Content) (string, error) {
	key := recordKey(channel, c)
	prev, owned, err := n.store.Claim(ctx, c.IncidentID, c.Tenant.ID, key, n.cfg.InFlight)
	switch {
	case err != nil:
		return "", err
	case !owned && (prev == StateSent || prev == StateFailed):
		// Already final: this is a redelivery. Say so again (the event id
		// de-duplicates) in case the first run stopped before publishing.
		return prev, n.announce(ctx, key, c, prev)
	case !owned:
		return "", ErrInFlight
	case prev == StateSending:
		n.logger.WarnContext(ctx, "sending again after an unfinished attempt (same Message-ID)", slog.String("incident_id", c.IncidentID),
			slog.String("tenant_id", c.Tenant.ID), slog.String("channel", channel))
	}
	ctx, span := n.tracer.Start(ctx, "notify "+channel, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("lockdown.incident_id", c.IncidentID), attribute.String("lockdown.tenant_id", c.Tenant.ID),
		attribute.String("lockdown.channel", channel), attribute.Bool("lockdown.affected", c.Affected)))
	defer span.End()
	if err := n.limiter.Wait(ctx); err != nil {
		return "", err
	}
	err = n.send(ctx, channel, c)
	switch {
	case err == nil:
		n.limiter.Accepted()
		// The relay has the message: record it before anything else, and
		// keep trying while the database is away (the message stays in
		// progress meanwhile). Returning instead would let the claim go
		// stale and the message be sent a second time.
		if err := retry.Do(ctx, retry.Default(), func(ctx context.Context) error {
			_, err := n.store.Finish(ctx, c.IncidentID, c.Tenant.ID, key, StateSent, "")
			return err
		}, func(err error, _ time.Duration) {
			n.logger.WarnContext(ctx, "sent, not yet recorded (database away); retrying the record", slog.String("incident_id", c.IncidentID),
				slog.String("tenant_id", c.Tenant.ID), slog.String("channel", channel), slog.Any("error", err))
		}); err != nil {
			return "", err
		}
		return StateSent, n.announce(ctx, key, c, StateSent)
	case errors.Is(err, ErrPermanent):
		span.SetStatus(codes.Error, err.Error())
		if ferr := n.fail(ctx, c.IncidentID, c.Tenant.ID, key, err.Error()); ferr != nil {
			return "", ferr
		}
		return StateFailed, err
	default:
		if errors.Is(err, ErrThrottled) {
			n.limiter.Refused()
		}
		span.SetStatus(codes.Error, err.Error())
		n.logger.WarnContext(ctx, "notification delayed", slog.String("incident_id", c.IncidentID),
			slog.String("tenant_id", c.Tenant.ID), slog.String("channel", channel), slog.Any("error", err))
		// Nothing was accepted: give the claim back so the next delivery
		// sends at once instead of waiting out the in-flight window.
		if rerr := n.store.Release(ctx, c.IncidentID, c.Tenant.ID, key); rerr != nil {
			return "", errors.Join(err, rerr)
		}
		return "", err
	}
}

func (n *Notifier) send(ctx context.Context, channel string, c Content) error {
	if channel == ChannelWebhook {
		body, err := json.Marshal(c.Webhook(n.now()))
		if err != nil {
			return Permanent(err)
		}
		return n.webhooks.Post(ctx, c.Tenant.WebhookURL, c.Tenant.ID, deliveryID(c.IncidentID, c.deliveryKey()), body)
	}
	subject, text, html, err := n.templates.Render(c)
	if err != nil {
		return Permanent(err)
	}
	return n.mailer.Send(ctx, Email{From: n.cfg.From, To: c.Tenant.ContactEmail, Subject: subject,
		MessageID: MessageID(c.IncidentID, c.deliveryKey(), domainOf(n.cfg.From)), Text: text, HTML: html, IncidentID: c.IncidentID})
}

// fail records a channel's permanent failure and emits notification.failed,
// unless the channel already ended (sent, say, before GiveUp).
func (n *Notifier) fail(ctx context.Context, incidentID, tenantID, key, reason string) error {
	recorded, err := n.store.Finish(ctx, incidentID, tenantID, key, StateFailed, reason)
	if err != nil || !recorded {
		return err
	}
	channel, notice := splitKey(key)
	n.logger.ErrorContext(ctx, "notification failed", slog.String("incident_id", incidentID),
		slog.String("tenant_id", tenantID), slog.String("channel", channel), slog.String("notice", notice), slog.String("reason", reason))
	return n.pub.PublishWithID(ctx, events.NotificationFailed, eventID(incidentID, tenantID, key, StateFailed),
		events.NotificationFailedData{IncidentID: incidentID, TenantID: tenantID, Channel: channel, Notice: notice, Reason: reason})
}

// announce emits the channel's final state again (redeliveries).
func (n *Notifier) announce(ctx context.Context, key string, c Content, state string) error {
	if state == StateFailed {
		return nil // its notification.failed went out with the failure record
	}
	channel, notice := splitKey(key)
	data := events.NotificationSentData{IncidentID: c.IncidentID, TenantID: c.Tenant.ID, Channel: channel, Notice: notice}
	if channel == ChannelEmail {
		data.MessageID = MessageID(c.IncidentID, c.deliveryKey(), domainOf(n.cfg.From))
	}
	return n.pub.PublishWithID(ctx, events.NotificationSent, eventID(c.IncidentID, c.Tenant.ID, key, state), data)
}

// announceIfComplete emits notifications.completed once every planned
// tenant has an outcome. Concurrent callers may both publish: the event id
// de-duplicates them.
func (n *Notifier) announceIfComplete(ctx context.Context, incidentID string) error {
	p, err := n.store.Progress(ctx, incidentID)
	if err != nil || p.Planned == 0 || p.Sent+p.Failed+p.Late < p.Planned {
		return err
	}
	id := incidentID + "/" + string(events.NotificationsCompleted)
	if p.Announced != nil {
		if *p.Announced == [2]int{p.Sent, p.Failed} {
			return nil
		}
		// Totals changed after the announcement (tenants retried and told
		// since, a late tenant's delivery ended): a corrected completion,
		// its id derived from its totals.
		id = fmt.Sprintf("%s/corrected-%d-%d", id, p.Sent, p.Failed)
	}
	if err := n.pub.PublishWithID(ctx, events.NotificationsCompleted, id,
		events.NotificationsCompletedData{IncidentID: incidentID, Sent: p.Sent, Failed: p.Failed, Late: p.Late, Corrected: p.Announced != nil}); err != nil {
		return err
	}
	n.logger.InfoContext(ctx, "every tenant notified", slog.String("incident_id", incidentID), slog.Int("sent", p.Sent), slog.Int("failed", p.Failed),
		slog.Int("late", p.Late), slog.Bool("corrected", p.Announced != nil))
	return n.store.Announced(ctx, incidentID, p.Sent, p.Failed)
}

func eventID(incidentID, tenantID, channel, state string) string {
	return incidentID + "/" + tenantID + "/" + channel + "/" + state
}

func domainOf(addr string) string {
	addr = strings.TrimSuffix(strings.TrimSpace(addr), ">")
	if i := strings.LastIndex(addr, "@"); i >= 0 {
		return addr[i+1:]
	}
	return "localhost"
}
