// Package vaulttoken keeps Lockdown's install-time Vault tokens alive. They
// are periodic tokens: each lives as long as it is renewed within its
// period (768 h as docs/operations.md issues them), so a service that
// never renewed would find its seal token expired on the day a breach
// needs it. Each service renews its own tokens and reports in readiness
// when one is close to expiry.
package vaulttoken

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/pkg/platform/health"
	"github.com/lockdown/lockdown/pkg/platform/vaultclient"
)

// ErrExpiring is returned by Check when the token expires within the
// warning window: renewals have been failing.
var ErrExpiring = errors.New("vault token expires soon")

// Renewer renews one token.
type Renewer struct {
	name    string
	clients []*vault.Client // one per node: the first that answers renews
	logger  *slog.Logger
	// Warn is how long before expiry Check starts failing. Default 24h.
	Warn time.Duration

	mu      sync.Mutex
	expires time.Time // zero until the first successful renewal
	lastErr error
}

// New returns a renewer for the token of src, following it when it is
// replaced; name labels it in logs and checks (never the token itself).
// It asks the nodes at addrs in turn until one renews: a standby forwards
// the renewal to the active node, and a sealed node answers nothing, so
// the token is renewed as long as any node of the cluster is unsealed.
func New(name string, addrs []string, src *Source, timeout time.Duration, logger *slog.Logger) (*Renewer, error) {
	if len(addrs) == 0 {
		return nil, fmt.Errorf("vault token %s: no Vault node", name)
	}
	r := &Renewer{name: name, logger: logger, Warn: 24 * time.Hour}
	for _, addr := range addrs {
		c, err := newClient(addr, timeout)
		if err != nil {
			return nil, fmt.Errorf("vault token %s: %w", name, err)
		}
		c.SetToken(src.Token())
		src.OnChange(c.SetToken)
		r.clients = append(r.clients, c)
	}
	return r, nil
}

func newClient(addr string, timeout time.Duration) (*vault.Client, error) {
	return vaultclient.New(vaultclient.Options{Address: addr, Timeout: timeout})
}

// Reachable returns a readiness check that the Vault node at addr answers
// at all (sealed is fine), with the TLS settings the services' Vault
// clients use.
func Reachable(addr string, timeout time.Duration) (health.Check, error) {
	c, err := newClient(addr, timeout)
	if err != nil {
		return nil, err
	}
	return reachable(c), nil
}

func reachable(c *vault.Client) health.Check {
	return health.ReachableWith(c.CloneConfig().HttpClient, strings.TrimSuffix(c.Address(), "/")+"/v1/sys/seal-status")
}

// Reachable is a readiness check that Vault answers at all (sealed is
// fine), through this renewer's first client and so with the same TLS
// settings.
func (r *Renewer) Reachable() health.Check { return reachable(r.clients[0]) }

// RenewOnce renews the token through the first node that does and returns
// its new lifetime.
func (r *Renewer) RenewOnce(ctx context.Context) (time.Duration, error) {
	var s *vault.Secret
	var err error
	for _, c := range r.clients {
		s, err = c.Auth().Token().RenewSelfWithContext(ctx, 0)
		if err == nil && (s == nil || s.Auth == nil) {
			err = errors.New("renewal returned no auth")
		}
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastErr = err
	if err != nil {
		return 0, err
	}
	ttl := time.Duration(s.Auth.LeaseDuration) * time.Second
	r.expires = time.Now().Add(ttl)
	return ttl, nil
}

// Run renews at half the token's lifetime (at most hourly) until ctx ends.
// Failures — a sealed Vault answers 503 during an incident — are retried
// every 30 s and logged; the token outlives a long incident.
func (r *Renewer) Run(ctx context.Context) error {
	for {
		ttl, err := r.RenewOnce(ctx)
		next := min(max(ttl/2, 10*time.Second), time.Hour)
		if err != nil {
			next = 30 * time.Second
			if ctx.Err() == nil {
				r.logger.WarnContext(ctx, "vault token not renewed; retrying", slog.String("token", r.name), slog.Any("error", err))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(next):
		}
	}
}

// Check is a readiness check: it fails once the token is within Warn of
// its expiry (renewals keep failing), and passes before the first renewal
// (a sealed Vault cannot be asked).
func (r *Renewer) Check(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.expires.IsZero() && time.Until(r.expires) < r.Warn {
		return fmt.Errorf("%w: %s in %s (last renewal: %v)", ErrExpiring, r.name, time.Until(r.expires).Round(time.Second), r.lastErr)
	}
	return nil
}
