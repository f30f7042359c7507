// Package notify is the notifier's domain: what a tenant is told after its
// secrets were rotated, on which channels, and the rule that each tenant
// hears it exactly once per incident and channel. It knows no transport:
// SMTP, HTTP, PostgreSQL and NATS are behind the small interfaces below.
package notify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/directory"
)

// Channels.
const (
	ChannelEmail   = "email"
	ChannelWebhook = "webhook"
)

// Delivery states recorded per incident, tenant and channel.
const (
	StateSending = "sending" // claimed; the send may or may not have happened
	StateSent    = "sent"
	StateFailed  = "failed"
	// StateLate is a tenant's outcome when its notice was still not
	// delivered at the tenant deadline (a webhook that never answers): the
	// plan may complete without it, and its delivery goes on.
	StateLate = "late"
)

// ErrPermanent marks a failure that retrying cannot mend (a refused
// address, a 4xx from a webhook, a bad URL). Adapters wrap it with %w.
var ErrPermanent = errors.New("permanent notification failure")

// ErrThrottled is returned (wrapped) by a Mailer when the relay refused
// for the moment (SMTP 4xx, "try again later": relays say so when a
// sender goes too fast): the message is retried, and the pace slows down.
var ErrThrottled = errors.New("the relay refused for now")

// ErrInFlight is returned when another delivery of the same notification
// claimed it moments ago; the message is retried later.
var ErrInFlight = errors.New("notification being sent by another delivery")

// Permanent wraps err as a permanent failure.
func Permanent(err error) error { return fmt.Errorf("%w: %w", ErrPermanent, err) }

// Email is one rendered message.
type Email struct {
	From, To, Subject string
	MessageID         string // stable per incident and tenant, with angle brackets
	Text, HTML        string
	IncidentID        string
}

// Mailer sends email.
type Mailer interface {
	Send(ctx context.Context, m Email) error
}

// WebhookSender posts a signed notification to a tenant's URL.
type WebhookSender interface {
	Post(ctx context.Context, url, tenantID, deliveryID string, body []byte) error
}

// Store keeps the delivery records and the plan's progress.
type Store interface {
	// Tenant returns the directory entry (directory.ErrUnknownTenant when absent).
	Tenant(ctx context.Context, id string) (directory.Tenant, error)
	// Claim records an attempt on one channel. owned says the caller must
	// send now: no record yet (prev ""), or a send claimed longer than
	// staleAfter ago that never finished (prev "sending": the earlier
	// delivery died, and the send is repeated with the same Message-ID).
	// When not owned, prev is the final state, or "sending" while another
	// delivery is at it.
	Claim(ctx context.Context, incidentID, tenantID, channel string, staleAfter time.Duration) (prev string, owned bool, err error)
	// Release gives back a claim whose send failed before anything was
	// accepted, so a redelivery may send at once.
	Release(ctx context.Context, incidentID, tenantID, channel string) error
	// Finish records a channel's final state unless it already has one;
	// recorded says whether it did.
	Finish(ctx context.Context, incidentID, tenantID, channel, state, reason string) (recorded bool, err error)
	// Outcome records the tenant's final state for the incident, once —
	// except that a tenant recorded failed and later told (its rotation
	// retried with lockdown retry) becomes sent, and a tenant recorded late
	// becomes sent or failed when its delivery ends.
	Outcome(ctx context.Context, incidentID, tenantID, state, reason string) error
	// Plan records how many tenants the incident's rotation planned.
	Plan(ctx context.Context, incidentID string, tenants int) error
	// Progress reports the plan's size (0 when not yet known), the tenants
	// with a final outcome, and the totals notifications.completed last
	// announced (nil when it was not announced).
	Progress(ctx context.Context, incidentID string) (Progress, error)
	// Announced records the totals notifications.completed published.
	Announced(ctx context.Context, incidentID string, sent, failed int) error
}

// Progress is a plan's notification progress.
type Progress struct {
	Planned, Sent, Failed int
	// Late counts tenants recorded late (StateLate): they count towards
	// completion, and a later sent or failed corrects the totals.
	Late int
	// Announced holds the totals last announced ([sent, failed]), nil
	// before the first announcement.
	Announced *[2]int
}

// Publisher emits events with a de-duplication id.
type Publisher interface {
	PublishWithID(ctx context.Context, name events.Name, id string, data any) error
}

// Limiter paces sends (messages per second across the process) and
// learns from their outcome (Pace).
type Limiter interface {
	Wait(ctx context.Context) error
	// Accepted records a send the receiver took.
	Accepted()
	// Refused records a refusal for load (ErrThrottled).
	Refused()
}

// deliveryID is the stable identity of one tenant's notification for an
// incident: the Message-ID's local part and the webhook delivery header.
// Hashed so that ids with any characters make a valid header.
func deliveryID(incidentID, tenantID string) string {
	sum := sha256.Sum256([]byte(incidentID + "\x00" + tenantID))
	return hex.EncodeToString(sum[:16])
}

// MessageID is the stable Message-ID of one tenant's email for an incident.
func MessageID(incidentID, tenantID, domain string) string {
	return "<lockdown." + deliveryID(incidentID, tenantID) + "@" + domain + ">"
}
