package recovery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lockdown/lockdown/pkg/events/credentials"
)

// Verification modes (LOCKDOWN_VERIFY_ROTATION).
const (
	// VerifyAll: every tenant with secrets in Vault must have been
	// rotated since the revocation, or be reported failed (the runbook's
	// "rotate every credential"; the rotator's default policy all).
	VerifyAll = "all"
	// VerifyClaimed: the tenants claimed rotated must show it in Vault
	// (a rotator planning the affected tenants only).
	VerifyClaimed = "claimed"
	// VerifyOff trusts the claims (not recommended).
	VerifyOff = "off"
)

// ErrRotationUnproven is returned by VerifyRotation when what the rotator
// announced is not borne out by Vault: access stays closed, the step is
// retried (a late write or a late event mends it) and the incident shows
// as stuck with the reason.
var ErrRotationUnproven = errors.New("restore withheld: the rotation's claims are not borne out by Vault")

// RotationClaims is what the incident's timeline says the rotation did —
// the claims of whoever holds the rotator's NATS credential.
type RotationClaims struct {
	// Since is the first revocation's time: a rotated secret was written
	// after it (every older token was revoked then, the intruder's too).
	Since time.Time
	// Completed is the latest rotation.completed's count of tenants rotated.
	Completed int
	// Rotated are the tenants with a rotation.tenant.completed; Failed
	// those with a rotation.tenant.failed and none.
	Rotated, Failed []string
	// Notified is how many tenants the latest notifications.completed
	// accounts for (sent, failed or late): the notifier plans from
	// rotation.planned, which a stolen rotator credential can announce
	// first with a smaller count.
	Notified int
}

// clockSkew allows for Vault's clock (updated_time) running behind
// containment's (the revocation's event time).
const clockSkew = time.Minute

// VerifyRotation checks the rotation's claims against Vault's own metadata
// before access is restored: the count announced matches the tenants
// announced; each tenant announced rotated has its secrets written after
// the revocation (KV metadata: updated_time, no secret value is read);
// with VerifyAll every tenant folder in Vault is rotated or reported
// failed. A stolen rotator credential can announce a completion; it
// cannot make Vault show writes (its Vault token was swept).
func (r *Recoverer) VerifyRotation(ctx context.Context, c RotationClaims) error {
	if r.cfg.VerifyRotation == VerifyOff {
		return nil
	}
	var problems []string
	if c.Completed != len(c.Rotated) {
		problems = append(problems, fmt.Sprintf("rotation.completed counts %d tenants rotated, %d rotation.tenant.completed are recorded", c.Completed, len(c.Rotated)))
	}
	if outcomes := len(c.Rotated) + len(c.Failed); c.Notified < outcomes {
		problems = append(problems, fmt.Sprintf("notifications.completed accounts for %d tenants, the rotation for %d", c.Notified, outcomes))
	}
	if r.cfg.VerifyRotation != VerifyClaimed {
		inVault, err := r.vault.TenantFolders(ctx, r.cfg.KVMount)
		if err != nil {
			return fmt.Errorf("verify rotation: list tenants: %w", err)
		}
		var missing []string
		for _, t := range inVault {
			if !slices.Contains(c.Rotated, t) && !slices.Contains(c.Failed, t) {
				missing = append(missing, t)
			}
		}
		if len(missing) > 0 {
			problems = append(problems, fmt.Sprintf("%d tenants have secrets in Vault and no rotation outcome (%s)", len(missing), firstFew(missing)))
		}
	}
	stale, err := r.staleSecrets(ctx, c)
	if err != nil {
		return fmt.Errorf("verify rotation: %w", err)
	}
	if len(stale) > 0 {
		problems = append(problems, fmt.Sprintf("%d tenants announced rotated have a secret not written since the revocation at %s (%s)",
			len(stale), c.Since.UTC().Format(time.RFC3339), firstFew(stale)))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrRotationUnproven, strings.Join(problems, "; "))
	}
	return nil
}

// staleSecrets reads the metadata of every announced tenant's rotated
// secrets, 16 at a time, and returns "tenant/secret" for each not written
// since the revocation.
func (r *Recoverer) staleSecrets(ctx context.Context, c RotationClaims) ([]string, error) {
	since := c.Since.Add(-clockSkew)
	var mu sync.Mutex
	var stale []string
	var firstErr error
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, t := range c.Rotated {
		// The per-tenant secrets every rotation writes (the contract's:
		// not the DKIM key, which may wait for the tenant's DNS, nor API
		// keys, which are destroyed): each must show a version written
		// after the revocation.
		for kind, path := range credentials.TenantSecrets(t, true) {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				written, found, err := r.vault.SecretWritten(ctx, r.cfg.KVMount, path)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					if firstErr == nil {
						firstErr = err
					}
				case !found || written.Before(since):
					stale = append(stale, t+"/"+string(kind))
				}
			}()
		}
	}
	wg.Wait()
	slices.Sort(stale)
	return stale, firstErr
}

// firstFew names at most five items and counts the rest.
func firstFew(items []string) string {
	slices.Sort(items)
	if len(items) <= 5 {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:5], ", "), len(items)-5)
}
