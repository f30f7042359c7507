// Package webhookpost delivers the notifier's signed webhooks over HTTP.
// Tenants choose the URL, so it is guarded like any server-side request to
// a user-supplied address: https only, no private, loopback or link-local
// destination (checked on the address actually dialled, so DNS cannot
// redirect it), no redirects, a bounded time. An allow-list of networks
// lifts the first two rules for tests and for receivers inside the
// platform's own network.
package webhookpost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"github.com/lockdown/lockdown/pkg/events/webhook"
	"github.com/lockdown/lockdown/services/notifier/internal/notify"
)

// ErrBlockedAddress is returned when a webhook URL leads to an address the
// guard refuses.
var ErrBlockedAddress = errors.New("webhook destination not allowed")

// Options configure the sender.
type Options struct {
	// Secret is the platform's master signing secret; each tenant's key is
	// derived from it (webhook.TenantSecret).
	Secret []byte
	// Allow lists networks that may be reached over plain http and despite
	// being private. Empty in production.
	Allow []netip.Prefix
	// Timeout bounds one request. Default 10s.
	Timeout time.Duration
}

// Sender implements notify.WebhookSender.
type Sender struct {
	opts   Options
	client *http.Client
}

// New returns a sender with a guarded HTTP client.
func New(opts Options) *Sender {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	s := &Sender{opts: opts}
	dialer := &net.Dialer{Timeout: opts.Timeout, Control: s.control}
	s.client = &http.Client{
		Timeout: opts.Timeout,
		Transport: &http.Transport{
			DialContext:         dialer.DialContext,
			Proxy:               nil, // a proxy would hide the destination from the guard
			TLSHandshakeTimeout: opts.Timeout,
			MaxIdleConnsPerHost: 2,
		},
		// A redirect could lead anywhere; a tenant's receiver answers
		// itself.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return s
}

// control runs on every address the client dials, after DNS.
func (s *Sender) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrBlockedAddress, address)
	}
	ip := ap.Addr().Unmap()
	if s.allowed(ip) {
		return nil
	}
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast() || sharedAddressSpace.Contains(ip) {
		return fmt.Errorf("%w: %s is not a public address", ErrBlockedAddress, ip)
	}
	return nil
}

// sharedAddressSpace (RFC 6598, carrier-grade NAT) is not covered by IsPrivate.
var sharedAddressSpace = netip.MustParsePrefix("100.64.0.0/10")

func (s *Sender) allowed(ip netip.Addr) bool {
	for _, p := range s.opts.Allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// CheckURL refuses a URL the sender would never post to: not absolute,
// not https (unless its host is a literal address on the allow-list),
// or carrying credentials.
func (s *Sender) CheckURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("webhook URL does not parse") // the URL itself may hold a token: never echoed
	}
	if u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("webhook URL to %s: needs a host and no credentials", where(u))
	}
	switch u.Scheme {
	case "https":
		return u, nil
	case "http":
		if ip, err := netip.ParseAddr(u.Hostname()); err == nil && s.allowed(ip.Unmap()) {
			return u, nil
		}
	}
	return nil, fmt.Errorf("%w: %s is not https", ErrBlockedAddress, where(u))
}

// where names a webhook destination in errors, logs and events: scheme and
// host only, since tenants put tokens in paths and queries.
func where(u *url.URL) string { return u.Scheme + "://" + u.Host }

// Post implements notify.WebhookSender: sign and send, and sort the
// answer. 2xx is delivered; 408, 425, 429 and 5xx are retried; any other
// answer (4xx, a redirect) and a refused URL are permanent.
func (s *Sender) Post(ctx context.Context, rawURL, tenantID, deliveryID string, body []byte) error {
	u, err := s.CheckURL(rawURL)
	if err != nil {
		return notify.Permanent(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return notify.Permanent(err)
	}
	now := time.Now()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Lockdown-Notifier/1")
	req.Header.Set(webhook.HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	req.Header.Set(webhook.HeaderSignature, webhook.Sign(webhook.TenantSecret(s.opts.Secret, tenantID), now, body))
	req.Header.Set(webhook.HeaderDelivery, deliveryID)
	resp, err := s.client.Do(req)
	if err != nil {
		// *url.Error repeats the whole URL: keep only its cause.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		if errors.Is(err, ErrBlockedAddress) {
			return notify.Permanent(err)
		}
		return fmt.Errorf("webhook to %s: %w", where(u), err)
	}
	// Closing a response body has nothing to lose.
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return nil
	case c == http.StatusRequestTimeout || c == http.StatusTooEarly || c == http.StatusTooManyRequests || c >= 500:
		return fmt.Errorf("webhook: %s answered %s", u.Host, resp.Status)
	default:
		return notify.Permanent(fmt.Errorf("webhook: %s answered %s", u.Host, resp.Status))
	}
}
