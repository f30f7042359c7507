package rotation

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/pkg/platform/dkimdns"
	"github.com/lockdown/lockdown/services/rotator/internal/keys"
)

// A new DKIM key goes from staged to active the way email platforms roll
// keys over, so that the key the platform signs with always has its record
// published:
//
//  1. staged: the key is written to tenants/{id}/dkim-pending (Steps.DKIM);
//     tenants/{id}/dkim, which the platform signs with, still holds the
//     old key;
//  2. published: for a tenant whose selectors are delegated into the
//     platform's DKIM zone, the new selector's record is published there
//     (RFC 2136) and read back from the authoritative server; for any
//     other tenant, its own DNS must show the record — the tenant is told
//     it, and the cut-over waits (Recheck) however long that takes;
//  3. active: the staged key is copied to tenants/{id}/dkim (check-and-set,
//     under the staged write id, so a retry adopts a copy already made);
//  4. revoked: a delegated tenant's previous selector gets a revoked record
//     (p=, RFC 6376 §3.6.1), so the leaked key no longer verifies;
//  5. the staged copy is destroyed.
//
// The staging is recorded before the next step (its write id before the
// write, so a process killed in between has the staged key adopted, not
// made anew); the later steps are idempotent — publishing makes the record
// the only one, the activation adopts a copy already made under the staged
// write id, a destroyed staged copy is found active — and are recorded
// with the job's end, so a process killed anywhere after the staging
// resumes by doing them again.

// Cutover states reported in rotation.tenant.completed (dkim_state).
const (
	// DKIMActive: published (delegated), verified at the authoritative
	// server, active, the old selector revoked.
	DKIMActive = "active"
	// DKIMAwaitingDNS: staged; the tenant must publish the record, and the
	// old key signs until its DNS shows it.
	DKIMAwaitingDNS = "awaiting_dns"
	// DKIMUnverified: no DNS is configured; the key is active at once and
	// the tenant is told the record (the old behaviour).
	DKIMUnverified = "unverified"
)

// cutoverAwaiting is Cutover.Awaiting's JSON name.
const cutoverAwaiting = "awaiting"

// Cutover records the DKIM key's progress from staged to active.
type Cutover struct {
	// Direct: no DNS was configured, and the key was written straight to
	// tenants/{id}/dkim (active at once, nothing staged).
	Direct    bool `json:"direct,omitempty"`
	Delegated bool `json:"delegated,omitempty"`
	// Published: the record was read back from the authoritative server.
	Published bool `json:"published,omitempty"`
	Active    bool `json:"active,omitempty"`
	// Revoked is the delegated selector given a revoked record.
	Revoked string `json:"revoked,omitempty"`
	// Awaiting: the tenant's own DNS did not show the record yet (its
	// JSON name is cutoverAwaiting: the store queries it).
	Awaiting bool `json:"awaiting,omitempty"`
	// CheckedAt is the last look at the tenant's DNS.
	CheckedAt time.Time `json:"checked_at,omitzero"`
	// Cleaned: the staged copy is destroyed.
	Cleaned bool `json:"cleaned,omitempty"`
}

// Result is the cut-over as a result state of the DKIM kind.
// Only an active key counts as rotated (or unverified): a staged one
// signs nothing yet.
func (c *Cutover) Result() credentials.State {
	switch {
	case c == nil:
		return credentials.Pending
	case c.Awaiting:
		return credentials.AwaitingDNS
	case !c.Active:
		return credentials.Pending
	case c.State() == DKIMActive:
		return credentials.Rotated
	}
	return credentials.Unverified
}

// State is the cut-over as reported to the tenant.
func (c *Cutover) State() string {
	switch {
	case c == nil:
		return ""
	case c.Awaiting:
		return DKIMAwaitingDNS
	case c.Published && !c.Direct:
		return DKIMActive
	default:
		return DKIMUnverified
	}
}

func (c *Cutover) revoked() string {
	if c == nil {
		return ""
	}
	return c.Revoked
}

// ErrStagedChanged is returned when the staged DKIM key is not the one
// whose record was published: someone wrote tenants/{id}/dkim-pending
// meanwhile. Its record is never made active.
var ErrStagedChanged = errors.New("the staged DKIM key is not the one published")

// stagedSecret is the staged key's secret name under tenants/{id}/ (the
// contract declares it as the DKIM kind's second path).
const stagedSecret credentials.Kind = credentials.DKIM + "-pending"

// DKIMName is where a tenant's DKIM record lives in its own DNS.
func DKIMName(selector, domain string) string { return selector + "._domainkey." + domain }

// delegatedName is a delegated selector's name in the platform's zone.
func delegatedName(selector, delegation string) string {
	return selector + "." + strings.TrimSuffix(delegation, ".")
}

// selectorFor picks a delegated tenant's new selector from the platform's
// pair: the one that carries no live key now (none, or revoked), so the
// live one keeps verifying mail in flight; the first when both are free.
// Without delegation, a new selector per incident.
func (w *Worker) selectorFor(ctx context.Context, job events.RotationJobData, t TenantDNS) (string, error) {
	if t.Delegation == "" || w.dns == nil {
		return Selector(job.IncidentID, time.Now()), nil
	}
	pair := w.cfg.DKIMSelectors
	live := [2]bool{}
	for i, s := range pair {
		recs, err := w.dns.Authoritative(ctx, delegatedName(s, t.Delegation))
		if err != nil {
			return "", err
		}
		for _, r := range recs {
			if p, ok := dkimdns.PublicKey(r); ok && p != "" {
				live[i] = true
			}
		}
	}
	if live[0] && !live[1] {
		return pair[1], nil
	}
	return pair[0], nil
}

// stage writes a new DKIM key to tenants/{id}/dkim-pending under the
// selector chosen now, its write id recorded first (as every secret's, by
// saveIntent, with the job's steps so far) and returns the cut-over it starts
// and the data it wrote (what the activation copies, when the same attempt
// gets there; nil when it adopted a key an earlier attempt staged, which
// the activation then reads back). Without DNS there is nothing to wait
// for: the key is written straight to tenants/{id}/dkim (the old
// behaviour, and four Vault calls fewer per tenant).
func (w *Worker) stage(ctx context.Context, job events.RotationJobData, t TenantDNS, pre keys.Set, havePre bool, saveIntent func(map[string]SecretStep) error) (SecretStep, *Cutover, map[string]any, error) {
	cut := &Cutover{Delegated: t.Delegation != "" && w.dns != nil}
	secret := stagedSecret
	if w.dns == nil {
		cut = &Cutover{Direct: true, Active: true, Cleaned: true}
		secret = credentials.DKIM
	}
	selector, err := w.selectorFor(ctx, job, t)
	if err != nil {
		return SecretStep{}, nil, nil, fmt.Errorf("dkim selector: %w", err)
	}
	var from *keys.Set
	if havePre {
		from = &pre
	}
	data, record, err := w.cfg.DKIM.New(selector, from)
	if err != nil {
		return SecretStep{}, nil, nil, err
	}
	sw := secretWrite{secret: secret, step: SecretStep{Selector: selector, Record: record}, data: data}
	if err := stamp(job, &sw); err != nil {
		return SecretStep{}, nil, nil, err
	}
	if err := saveIntent(map[string]SecretStep{sw.id: sw.step}); err != nil {
		return SecretStep{}, nil, nil, err
	}
	step, wrote, err := w.write(ctx, job, sw)
	if err != nil {
		return SecretStep{}, nil, nil, fmt.Errorf("dkim: %w", err)
	}
	if !wrote {
		// An earlier attempt's key, adopted: its data is Vault's, not sw's.
		return step, cut, nil, nil
	}
	return step, cut, sw.data, nil
}

// other is the delegated pair's selector that is not s.
func (w *Worker) other(s string) string {
	if s == w.cfg.DKIMSelectors[0] {
		return w.cfg.DKIMSelectors[1]
	}
	return w.cfg.DKIMSelectors[0]
}

// cutover takes a job's staged DKIM key as far as it can go now; done is
// told of each step taken (the steps are recorded by the caller: each is
// idempotent). It returns with c.Awaiting set when the tenant's DNS does
// not show the record yet. staged is the data this attempt wrote to
// dkim-pending (nil when an earlier attempt or process staged it: it is
// then read back).
func (w *Worker) cutover(ctx context.Context, job events.RotationJobData, t TenantDNS, steps *Steps, staged map[string]any, done func()) error {
	if steps.Cutover == nil {
		// Recorded before keys were staged: written straight to dkim.
		steps.Cutover = &Cutover{Direct: true, Active: true, Cleaned: true}
	}
	c := steps.Cutover
	step := steps.DKIM
	switch {
	case c.Direct:
		return nil // written active, nothing staged
	case w.dns == nil && !c.Active:
		// Staged by a process with DNS, resumed by one without: nothing to
		// publish in or check here; made active as without DNS.
	case c.Delegated && !c.Published:
		name := delegatedName(step.Selector, t.Delegation)
		if err := w.dns.Publish(ctx, name, step.Record); err != nil {
			return fmt.Errorf("dkim publish: %w", err)
		}
		w.cfg.Failpoints.Hit("rotator.dkim.published")
		ok, err := shows(ctx, w.dns.Authoritative, name, step.Record)
		if err != nil {
			return fmt.Errorf("dkim verify: %w", err)
		}
		if !ok {
			return fmt.Errorf("dkim verify: %s does not show the published record yet", name)
		}
		c.Published = true
		done()
	case !c.Delegated && !c.Active:
		ok, err := shows(ctx, w.dns.Resolve, DKIMName(step.Selector, t.Domain), step.Record)
		c.CheckedAt = time.Now().UTC()
		if err != nil || !ok {
			// The tenant's DNS is the tenant's: a failure to read it is not
			// the job's. The job completes and Recheck looks again.
			c.Awaiting = true
			return nil
		}
		c.Awaiting, c.Published = false, true
	}
	if !c.Active {
		if err := w.activate(ctx, job, *step, staged); err != nil {
			return err
		}
		c.Active = true
		done()
	}
	if c.Delegated && c.Revoked == "" {
		old := w.other(step.Selector)
		if err := w.dns.Publish(ctx, delegatedName(old, t.Delegation), dkimdns.RevokedRecord); err != nil {
			return fmt.Errorf("dkim revoke %s: %w", old, err)
		}
		c.Revoked = old
		done()
	}
	if !c.Cleaned {
		if err := w.vault.Destroy(ctx, w.path(job.TenantID, stagedSecret)); err != nil {
			return fmt.Errorf("dkim staged copy: %w", err)
		}
		c.Cleaned = true
		done()
	}
	return nil
}

// activate copies the staged key to tenants/{id}/dkim under its staged
// write id (so w.write adopts a copy an earlier attempt made), after
// checking it is the key whose record was published. written is what this
// attempt staged, when it did: it is copied as it is (one Vault read fewer
// per tenant, and whatever was written to dkim-pending meanwhile is not
// what becomes active); otherwise the staged key is read back.
func (w *Worker) activate(ctx context.Context, job events.RotationJobData, staged SecretStep, written map[string]any) error {
	data := written
	if data == nil {
		var err error
		if data, err = w.vault.ReadStaged(ctx, w.path(job.TenantID, stagedSecret)); err != nil {
			return fmt.Errorf("dkim staged read: %w", err)
		}
	}
	if data == nil {
		// Gone: either destroyed after an activation whose record was lost
		// (the active key carries its write id) or never there.
		_, writeID, err := w.vault.Latest(ctx, w.path(job.TenantID, credentials.DKIM))
		if err != nil {
			return err
		}
		// Only this incident's write ids can be this job's: another's costs
		// no lookup.
		if strings.HasPrefix(writeID, job.IncidentID+"/") {
			if _, ok, err := w.store.Write(ctx, job.IncidentID, job.TenantID, writeID); err == nil && ok {
				return nil
			}
		}
		return fmt.Errorf("%w: tenants/%s/%s is empty", ErrStagedChanged, job.TenantID, stagedSecret)
	}
	if rec, _ := data["dns_record"].(string); rec != staged.Record {
		return fmt.Errorf("%w (tenant %s)", ErrStagedChanged, job.TenantID)
	}
	ids, _ := data[WriteKey].(map[string]any)
	writeID := ""
	for id := range ids {
		writeID = id
	}
	if len(ids) != 1 || !strings.HasPrefix(writeID, job.IncidentID+"/") {
		return fmt.Errorf("%w (tenant %s: no write id of this incident)", ErrStagedChanged, job.TenantID)
	}
	_, _, err := w.write(ctx, job, secretWrite{secret: credentials.DKIM, id: writeID, data: data, step: staged})
	return err
}

// shows reports whether lookup finds record at name.
func shows(ctx context.Context, lookup func(context.Context, string) ([]string, error), name, record string) (bool, error) {
	recs, err := lookup(ctx, name)
	if err != nil {
		return false, err
	}
	want, _ := dkimdns.PublicKey(record)
	return slices.ContainsFunc(recs, func(r string) bool { p, ok := dkimdns.PublicKey(r); return ok && p == want && p != "" }), nil
}

// Recheck looks at the DNS of tenants whose DKIM key waits for it (up to
// limit jobs, each checked at most once per interval) and makes the key
// active where the record shows; each activation emits
// rotation.dkim.activated in the same transaction. It returns how many
// were activated.
func (w *Worker) Recheck(ctx context.Context, limit int, interval time.Duration) (int, error) {
	activated := 0
	_, err := w.store.Awaiting(ctx, limit, func(a Awaiting) (*Steps, []events.Outgoing, error) {
		c := a.Steps.Cutover
		if c == nil || a.Steps.DKIM == nil || time.Since(c.CheckedAt) < interval {
			return nil, nil, nil
		}
		job := events.RotationJobData{IncidentID: a.IncidentID, TenantID: a.TenantID}
		steps := a.Steps
		if err := w.cutover(ctx, job, TenantDNS{Known: true, Domain: a.Domain}, &steps, nil, func() {}); err != nil {
			return nil, nil, err
		}
		if steps.Cutover.Awaiting {
			return &steps, nil, nil // checked: the time is recorded
		}
		activated++
		return &steps, []events.Outgoing{{Name: eventsDKIMActivated, ID: a.IncidentID + "/" + a.TenantID + "/dkim.activated",
			Data: events.RotationDKIMActivatedData{IncidentID: a.IncidentID, TenantID: a.TenantID, Selector: steps.DKIM.Selector,
				Name: DKIMName(steps.DKIM.Selector, a.Domain), ActivatedBy: w.cfg.Instance}}}, nil
	})
	return activated, err
}
