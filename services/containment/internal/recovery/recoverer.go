package recovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/vaultdecl"
)

// Recoverer runs phases 4, 5 and 8 against Vault with the recovery token.
type Recoverer struct {
	cfg     Config
	vault   Vault
	witness *Witness
	log     *slog.Logger
}

// New wires a Recoverer. witness is fed by Vault's log stream (see
// Witness); nil when nothing watches it, and then only a ceremony with PGP
// keys and without verification can be proven and started.
func New(cfg Config, vault Vault, witness *Witness, log *slog.Logger) *Recoverer {
	if cfg.VerifyRotation == "" {
		cfg.VerifyRotation = VerifyAll
	}
	if cfg.KVMount == "" {
		cfg.KVMount = "secret"
	}
	return &Recoverer{cfg: cfg, vault: vault, witness: witness, log: log}
}

// NeedsWitness says whether completion can only be proven through Vault's
// log: every ceremony except one with PGP keys and without verification.
func (r *Recoverer) NeedsWitness() bool {
	return len(r.cfg.PGPKeys) == 0 || r.cfg.RequireVerification
}

// witnessWait bounds how long a ceremony seen ended waits for the log line
// of its end (the status read can overtake it); witnessOpen how long a new
// ceremony waits for the stream to open before that is an error.
const (
	witnessWait = 3 * time.Second
	witnessOpen = 15 * time.Second
)

// Revoke runs phase 4 and returns what it did. Each of its steps is
// idempotent (a disabled method is skipped, a revoked token is gone), so
// running it again after a crash or a failure half-way is safe. What it
// removes from Vault is listed before anything is removed: save records
// that plan, and prior is the plan an earlier attempt of the same round
// recorded, so a run cut short after a removal still reports it (the
// removed mount or policy is no longer there for the next run to find).
func (r *Recoverer) Revoke(ctx context.Context, incidentID string, prior events.AccessRevokedData, save func(events.AccessRevokedData) error) (events.AccessRevokedData, map[string]int, error) {
	st := State{IncidentID: incidentID}
	if err := r.revokeAccess(ctx, &st, prior, save); err != nil {
		return events.AccessRevokedData{}, nil, err
	}
	return st.Revoked, st.KeptReasons, nil
}

// revokeAccess reconciles Vault's security configuration with the
// declaration (audit devices first), disables the compromised auth
// methods, replaces Lockdown's own tokens with verified successors,
// revokes every other token until a listing holds only the kept ones,
// revokes leases under the configured prefixes and rotates the keyring.
func (r *Recoverer) revokeAccess(ctx context.Context, st *State, prior events.AccessRevokedData, save func(events.AccessRevokedData) error) error {
	if err := r.vault.Follow(ctx); err != nil {
		return err
	}
	out := events.AccessRevokedData{IncidentID: st.IncidentID, AuthMethodsDisabled: []string{}, LeasePrefixes: []string{}}
	cancelled, err := r.cancelGenerateRoot(ctx)
	if err != nil {
		return err
	}
	out.GenerateRootCancelled = prior.GenerateRootCancelled + cancelled
	mounts, err := r.vault.AuthMounts(ctx)
	if err != nil {
		return fmt.Errorf("list auth methods: %w", err)
	}
	out.BatchTokenMaxTTL = batchTokenMaxTTL(mounts)
	var disable []string
	for _, path := range slices.Sorted(maps.Keys(mounts)) {
		switch {
		case slices.Contains(r.cfg.DisableAuth, path):
			out.AuthMethodsDisabled = append(out.AuthMethodsDisabled, path)
		case !r.baselineAuth(path):
			// Not Lockdown's, not the platform's: the intruder's (or
			// undeclared). Disabled, revoking its tokens, and never restored.
			out.AuthMethodsRemoved = append(out.AuthMethodsRemoved, path)
		default:
			continue
		}
		disable = append(disable, path)
	}
	mends, err := r.planReconcile(ctx, mounts, disable)
	if err != nil {
		return err
	}
	remove, err := r.undeclaredPolicies(ctx)
	if err != nil {
		return err
	}
	out.PoliciesDeleted = remove
	plan := out
	plan.AuthMethodsDisabled = append([]string{}, union(prior.AuthMethodsDisabled, out.AuthMethodsDisabled)...) // [] in the event, never null
	plan.AuthMethodsRemoved = union(prior.AuthMethodsRemoved, out.AuthMethodsRemoved)
	plan.PoliciesDeleted = union(prior.PoliciesDeleted, out.PoliciesDeleted)
	plan.Reconciled = mergeChanges(prior.Reconciled, changesOf(mends))
	if save != nil && (len(disable) > 0 || len(remove) > 0 || len(mends) > 0 || cancelled > 0) {
		if err := save(plan); err != nil {
			return fmt.Errorf("record what the revocation removes: %w", err)
		}
	}
	out.AuthMethodsDisabled, out.AuthMethodsRemoved, out.PoliciesDeleted, out.Reconciled = plan.AuthMethodsDisabled, plan.AuthMethodsRemoved, plan.PoliciesDeleted, plan.Reconciled
	// Audit devices lead the plan: nothing below writes a secret, but the
	// successors' tokens are minted below and must reach no intruder's
	// device either.
	if err := r.applyMends(ctx, mends); err != nil {
		return err
	}
	for _, path := range disable {
		if err := r.vault.DisableAuth(ctx, path); err != nil {
			return fmt.Errorf("disable auth %s: %w", path, err)
		}
		r.cfg.Failpoints.Hit("containment.recovery.removed")
	}
	for _, p := range remove {
		if err := r.vault.DeletePolicy(ctx, p); err != nil {
			return fmt.Errorf("delete policy %s: %w", p, err)
		}
		r.cfg.Failpoints.Hit("containment.recovery.removed")
	}
	successors, err := r.replaceOwnTokens(ctx, &out)
	if err != nil {
		return err
	}
	self, err := r.vault.SelfAccessor(ctx)
	if err != nil {
		return fmt.Errorf("lookup own token: %w", err)
	}
	sw, err := r.sweepTokens(ctx, func(acc string) string { return r.keep(acc, self, successors) })
	if err != nil {
		return err
	}
	out.TokensRevoked, out.TokensKept, out.SweepPasses = sw.revoked, sw.kept, sw.passes
	out.GenerateRootCancelled += sw.cancelled
	kept := sw.reasons
	for _, p := range r.cfg.LeasePrefixes {
		if err := r.vault.RevokePrefix(ctx, p); err != nil {
			return fmt.Errorf("revoke leases under %s: %w", p, err)
		}
		out.LeasePrefixes = append(out.LeasePrefixes, p)
	}
	if err := r.vault.Rotate(ctx); err != nil {
		return fmt.Errorf("rotate keyring: %w", err)
	}
	if out.KeyTerm, err = r.vault.KeyTerm(ctx); err != nil {
		return fmt.Errorf("key status: %w", err)
	}
	st.Revoked, st.KeptReasons, st.AccessRevokedAt = out, kept, time.Now().UTC()
	r.log.InfoContext(ctx, "access revoked", slog.String("incident_id", st.IncidentID), slog.Any("auth_disabled", out.AuthMethodsDisabled),
		slog.Any("auth_removed", out.AuthMethodsRemoved), slog.Any("policies_deleted", out.PoliciesDeleted), slog.String("batch_token_max_ttl", out.BatchTokenMaxTTL),
		slog.Int("reconciled", len(out.Reconciled)), slog.Int("tokens_revoked", out.TokensRevoked), slog.Int("sweep_passes", out.SweepPasses),
		slog.Any("tokens_kept", kept), slog.Int("key_term", out.KeyTerm), slog.Int("generate_root_cancelled", out.GenerateRootCancelled))
	return nil
}

// ErrSweepNotConverged is returned when every listing of the token
// accessors, up to Config.MaxSweeps, still held tokens to revoke:
// something keeps minting faster than the sweep revokes (a token the
// sweep cannot see, or a quorum of old shares generating root tokens).
// The step fails and is retried; the incident shows as stuck with it.
var ErrSweepNotConverged = errors.New("token sweep did not converge: tokens keep appearing")

// sweep is one sweep's result.
type sweep struct {
	revoked, kept, passes, cancelled int
	reasons                          map[string]int
}

// sweepTokens lists the token accessors and revokes every one keep has no
// reason for, again and again until a listing holds only kept tokens. A
// token minted while a pass runs (a root token minting orphans in a loop
// until its own accessor is revoked) is caught by the next pass. Each pass
// first cancels a sys/generate-root attempt in progress.
func (r *Recoverer) sweepTokens(ctx context.Context, keep func(accessor string) string) (sweep, error) {
	out := sweep{reasons: map[string]int{}}
	limit := r.cfg.MaxSweeps
	if limit <= 0 {
		limit = defaultMaxSweeps
	}
	for out.passes < limit {
		out.passes++
		n, err := r.cancelGenerateRoot(ctx)
		if err != nil {
			return out, err
		}
		out.cancelled += n
		accessors, err := r.vault.TokenAccessors(ctx)
		if err != nil {
			return out, fmt.Errorf("list token accessors: %w", err)
		}
		clear(out.reasons)
		out.kept = 0
		var revoke []string
		for _, acc := range accessors {
			if reason := keep(acc); reason != "" {
				out.reasons[reason]++
				out.kept++
				continue
			}
			revoke = append(revoke, acc)
		}
		revoked, err := r.revokeAll(ctx, revoke)
		if err != nil {
			return out, err
		}
		out.revoked += revoked
		if len(revoke) == 0 && n == 0 {
			// A listing that holds only kept tokens: the fixpoint.
			return out, nil
		}
	}
	return out, fmt.Errorf("%w (%d passes, %d revoked)", ErrSweepNotConverged, out.passes, out.revoked)
}

// defaultMaxSweeps bounds the passes of one sweep.
const defaultMaxSweeps = 10

// revokeConcurrency is how many revocations are in flight at once: Vault
// revokes one token per request, and 10,000 of them one after another
// take about 15 s here (docs/benchmarks.md).
const revokeConcurrency = 8

// revokeAll revokes the accessors, revokeConcurrency at a time, and
// counts those it revoked (one already gone is not counted).
func (r *Recoverer) revokeAll(ctx context.Context, accessors []string) (int, error) {
	var revoked atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(revokeConcurrency)
	for _, acc := range accessors {
		g.Go(func() error {
			if err := r.vault.RevokeAccessor(gctx, acc); err != nil {
				if isGone(err) {
					return nil // revoked meanwhile (a parent's revocation takes its children)
				}
				return fmt.Errorf("revoke token by accessor: %w", err)
			}
			revoked.Add(1)
			return nil
		})
	}
	err := g.Wait()
	return int(revoked.Load()), err
}

// isGone says whether a revoke-accessor failed because the token no
// longer exists: Vault answers 400 "invalid accessor".
func isGone(err error) bool {
	return err != nil && strings.Contains(err.Error(), "invalid accessor")
}

// cancelGenerateRoot cancels a sys/generate-root attempt in progress and
// counts it (0 or 1). Until the rekey completes, anyone holding a quorum
// of the old shares can start one, with no token at all.
func (r *Recoverer) cancelGenerateRoot(ctx context.Context) (int, error) {
	was, err := r.vault.GenerateRootCancel(ctx)
	if err != nil {
		return 0, fmt.Errorf("cancel generate-root: %w", err)
	}
	if was {
		r.log.WarnContext(ctx, "a sys/generate-root attempt in progress was cancelled")
		return 1, nil
	}
	return 0, nil
}

// Sweep runs after the first revocation of a round: once the rekey is
// proven and again just before access is restored. It reconciles Vault's
// security configuration once more and revokes every token that appeared
// since, keeping only Lockdown's current tokens (read from their stores
// and looked up) and the configured ones. prior and save are as in
// Revoke: the plan is recorded before anything is removed.
func (r *Recoverer) Sweep(ctx context.Context, incidentID, stage string, prior []events.VaultChange, save func([]events.VaultChange) error) (events.VaultReconciledData, error) {
	out := events.VaultReconciledData{IncidentID: incidentID, Stage: stage}
	if err := r.vault.Follow(ctx); err != nil {
		return out, err
	}
	cancelled, err := r.cancelGenerateRoot(ctx)
	if err != nil {
		return out, err
	}
	mounts, err := r.vault.AuthMounts(ctx)
	if err != nil {
		return out, fmt.Errorf("list auth methods: %w", err)
	}
	var foreign []string
	for path := range mounts {
		if !r.baselineAuth(path) {
			foreign = append(foreign, path)
		}
	}
	mends, err := r.planReconcile(ctx, mounts, r.cfg.DisableAuth)
	if err != nil {
		return out, err
	}
	for _, path := range slices.Sorted(slices.Values(foreign)) {
		mends = append(mends, mend{evidence(KindAuthMount, path, events.VaultRemoved, "auth method not declared", mounts[path].Raw),
			func(ctx context.Context) error { return r.vault.DisableAuth(ctx, path) }})
	}
	policies, err := r.undeclaredPolicies(ctx)
	if err != nil {
		return out, err
	}
	for _, p := range policies {
		mends = append(mends, mend{evidence(KindPolicy, p, events.VaultRemoved, "policy not declared", ""),
			func(ctx context.Context) error { return r.vault.DeletePolicy(ctx, p) }})
	}
	out.Reconciled = mergeChanges(prior, changesOf(mends))
	if save != nil && len(mends) > 0 {
		if err := save(out.Reconciled); err != nil {
			return out, fmt.Errorf("record what the sweep removes: %w", err)
		}
	}
	if err := r.applyMends(ctx, mends); err != nil {
		return out, err
	}
	self, err := r.vault.SelfAccessor(ctx)
	if err != nil {
		return out, fmt.Errorf("lookup own token: %w", err)
	}
	var own []string
	for _, t := range r.cfg.OwnTokens {
		// The file, not this process's copy: a leader that died may have
		// replaced the token a moment before this process took over.
		if _, err := t.Store.Reload(); err != nil {
			return out, fmt.Errorf("read Lockdown's %s token: %w", t.Name, err)
		}
		info, err := r.vault.LookupToken(ctx, t.Store.Token())
		if err != nil {
			return out, fmt.Errorf("look up Lockdown's %s token: %w", t.Name, err)
		}
		own = append(own, info.Accessor)
	}
	sw, err := r.sweepTokens(ctx, func(acc string) string { return r.keep(acc, self, own) })
	if err != nil {
		return out, err
	}
	out.TokensRevoked, out.SweepPasses, out.GenerateRootCancelled = sw.revoked, sw.passes, cancelled+sw.cancelled
	r.log.InfoContext(ctx, "vault swept again", slog.String("incident_id", incidentID), slog.String("stage", stage),
		slog.Int("reconciled", len(out.Reconciled)), slog.Int("tokens_revoked", out.TokensRevoked), slog.Int("sweep_passes", out.SweepPasses),
		slog.Int("generate_root_cancelled", out.GenerateRootCancelled))
	return out, nil
}

// CancelGenerateRoot cancels a generate-root attempt during the ceremony
// (see cancelGenerateRoot); the engine records each as an alarm.
func (r *Recoverer) CancelGenerateRoot(ctx context.Context) (int, error) {
	if err := r.vault.Follow(ctx); err != nil {
		return 0, err
	}
	return r.cancelGenerateRoot(ctx)
}

// undeclaredPolicies lists the ACL policies the baseline does not keep:
// the revocation and every later sweep delete them.
func (r *Recoverer) undeclaredPolicies(ctx context.Context) ([]string, error) {
	policies, err := r.vault.Policies(ctx)
	if err != nil {
		return nil, fmt.Errorf("list policies: %w", err)
	}
	var out []string
	for _, p := range policies {
		if !KeepsPolicy(r.cfg.Baseline, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// union is a and b sorted, without repeats (nil when both are empty, as
// the event's omitempty lists expect).
func union(a, b []string) []string {
	u := slices.Compact(slices.Sorted(slices.Values(slices.Concat(a, b))))
	if len(u) == 0 {
		return nil
	}
	return u
}

// baselineAuth says whether an auth mount belongs: the token store, the
// declared auth methods and the baseline's other mounts.
func (r *Recoverer) baselineAuth(path string) bool {
	if slices.Contains(vaultdecl.VaultAuthMounts(), path) || slices.Contains(r.cfg.Baseline.AuthMounts, path) {
		return true
	}
	return slices.ContainsFunc(r.cfg.Auth, func(a AuthSpec) bool { return a.Path == path })
}

// batchTokenMaxTTL is the longest a batch token issued before the
// revocation may live: batch tokens have no accessor, so nothing revokes
// them. Each auth method bounds its tokens with max_lease_ttl; 0 means
// Vault's system maximum, which the API does not show.
func batchTokenMaxTTL(mounts map[string]AuthMount) string {
	var longest time.Duration
	for _, m := range mounts {
		if m.MaxLeaseTTL == 0 {
			return "system"
		}
		longest = max(longest, m.MaxLeaseTTL)
	}
	return longest.String()
}

// replaceOwnTokens mints a successor of each of Lockdown's own tokens and
// hands it over; it returns the successors' accessors, the only ones of
// Lockdown's kept by the sweep that follows. The recovery token comes last
// (it mints the others) and its clients switch to the successor at once.
// Run again after a crash it mints again: a successor minted but never
// handed over is an unknown token, revoked by the sweep like the old ones.
func (r *Recoverer) replaceOwnTokens(ctx context.Context, out *events.AccessRevokedData) ([]string, error) {
	var successors []string
	for _, t := range r.cfg.OwnTokens {
		tok, acc, err := r.vault.CreateToken(ctx, t.Role)
		if err != nil {
			return nil, fmt.Errorf("mint the %s token's successor: %w", t.Name, err)
		}
		// The role was re-asserted by the reconciliation; the token is
		// checked all the same before anything trusts it.
		if err := r.verifySuccessor(ctx, t.Role, tok, acc); err != nil {
			return nil, err
		}
		if err := t.Store.Replace(tok); err != nil {
			return nil, fmt.Errorf("hand the %s token's successor over: %w", t.Name, err)
		}
		successors = append(successors, acc)
		out.TokensReplaced = append(out.TokensReplaced, t.Name)
	}
	out.TokensNotReplaced = r.cfg.FixedTokens
	return successors, nil
}

// keep says why a token survives the revocation ("" when it does not).
// Only accessors decide: a display name is whatever the token's creator
// chose (every root token is "root", an intruder's too).
func (r *Recoverer) keep(accessor, self string, successors []string) string {
	switch {
	case accessor == self:
		return "lockdown (this service)"
	case slices.Contains(successors, accessor):
		return "lockdown (successor minted in this incident)"
	case slices.Contains(r.cfg.KeepAccessors, accessor):
		return "lockdown (install-time token)"
	case slices.Contains(r.cfg.BreakGlass, accessor):
		return "break-glass accessor"
	}
	return ""
}

// ErrNotAccessor is returned by ValidAccessor for a value Vault could not
// have issued as a token accessor (a display name such as "root").
var ErrNotAccessor = errors.New("not a token accessor")

// accessorPattern matches Vault's token accessors: 24 base62 characters
// (with a namespace suffix in Vault Enterprise), or a UUID from Vault
// before 1.10.
var accessorPattern = regexp.MustCompile(`^([A-Za-z0-9]{24}(\.[A-Za-z0-9]+)?|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$`)

// ValidAccessor checks that s has the shape of a token accessor.
func ValidAccessor(s string) error {
	if !accessorPattern.MatchString(s) {
		return fmt.Errorf("%w: %q (give the accessor, from `vault token lookup -accessor` or `vault list auth/token/accessors`; display names are chosen by whoever creates a token)", ErrNotAccessor, s)
	}
	return nil
}

// CeremonyStep reads the rekey status once and moves the ceremony on: it
// starts Lockdown's rekey, follows the holders' progress, cancels a rekey
// Lockdown did not start, and tells completion from cancellation. It
// returns the ceremony as it now stands (Phase CeremonyCompleted once
// done).
func (r *Recoverer) CeremonyStep(ctx context.Context, incidentID string, c Ceremony) (Ceremony, error) {
	var err error
	if c.Phase == CeremonyCompleted {
		return c, nil
	}
	if c.Nonce == "" {
		if c.RecoveryKeys, err = r.vault.RecoverySeal(ctx); err != nil {
			return c, err
		}
	}
	if err := r.vault.Follow(ctx); err != nil {
		return c, err
	}
	if c.RecoveryKeys && r.NeedsWitness() {
		return c, ErrUnprovable
	}
	if r.NeedsWitness() && r.witness != nil {
		r.witness.Want(max(4*r.cfg.Poll, 30*time.Second))
	}
	sent := time.Now()
	status, err := r.vault.RekeyStatus(ctx, c.RecoveryKeys)
	if err != nil {
		return c, err
	}
	switch {
	case status.Started && c.Nonce != "" && status.Nonce == c.Nonce:
		if r.witness != nil {
			r.witness.SawInProgress(c.Nonce, sent)
		}
		c.Progress, c.Threshold, c.Shares = status.Progress, status.T, status.N
		c.Phase = CeremonyCollecting
		if status.VerificationNonce != "" {
			v, err := r.vault.RekeyVerifyStatus(ctx, c.RecoveryKeys)
			if err != nil {
				return c, err
			}
			c.Phase, c.VerifyNonce, c.VerifyProgress = CeremonyVerifying, v.Nonce, v.Progress
		}
	case status.Started:
		// A rekey Lockdown did not start (or whose nonce it lost): it
		// could be the intruder's. Cancel it and start ours.
		if err := r.vault.RekeyCancel(ctx, c.RecoveryKeys, status.Nonce); err != nil {
			return c, err
		}
		c.Note = "a rekey not started by Lockdown was cancelled"
		c.Nonce = ""
		c.Restarts++
	case c.Nonce == "":
		if wait, err := r.watching(); err != nil || wait {
			return c, err
		}
		s, err := r.vault.RekeyInit(ctx, c.RecoveryKeys, r.cfg.Shares, r.cfg.Threshold, r.cfg.PGPKeys, r.cfg.RequireVerification)
		if err != nil {
			return c, fmt.Errorf("rekey init: %w", err)
		}
		c = Ceremony{Phase: CeremonyCollecting, Nonce: s.Nonce, RecoveryKeys: c.RecoveryKeys, Threshold: s.T, Shares: s.N,
			Fingerprints: s.PGPFingerprints, StartedAt: time.Now().UTC(), Restarts: c.Restarts, Note: c.Note, Round: c.Round}
		r.log.InfoContext(ctx, "rekey ceremony started: key holders submit their current shares with `vault operator rekey -nonce=<nonce>`",
			slog.String("incident_id", incidentID), slog.String("nonce", s.Nonce), slog.Int("shares", s.N), slog.Int("threshold", s.T))
	default:
		// Our rekey is no longer in progress: completed, or cancelled.
		confirmed, err := r.completed(ctx, c)
		if err != nil {
			return c, err
		}
		if confirmed == "" {
			if r.endObserved(c) {
				c.Note = "the ceremony was cancelled before completion; a new one was started"
				r.log.WarnContext(ctx, "rekey ceremony cancelled; restarting", slog.String("incident_id", incidentID))
			} else {
				// Nothing shows it was cancelled either: the holders may
				// have completed it while Vault's log was not watched.
				// Saying "cancelled" would send them back with old shares
				// that may no longer work.
				c.Note = NoteUnobserved
				r.log.WarnContext(ctx, "rekey ceremony ended unobserved (completed or cancelled); a new one was started", slog.String("incident_id", incidentID))
			}
			c.Nonce, c.Progress, c.VerifyNonce, c.VerifyProgress = "", 0, "", 0
			c.Restarts++
		} else {
			c.Phase, c.ConfirmedBy, c.CompletedAt = CeremonyCompleted, confirmed, time.Now().UTC()
		}
	}
	return c, nil
}

// NoteUnobserved is the ceremony's note when it ended while Lockdown could
// not tell how: what the holders must check before they trust either set
// of shares.
const NoteUnobserved = "the ceremony ended while Vault's log was not watched without a gap (completion not observed): if the holders completed it, Vault now uses the new shares they received — check with `vault operator rekey -status` and a test unseal before discarding either set; a new ceremony was started"

// endObserved says whether Lockdown would have seen the ceremony complete:
// with PGP keys and without verification the backup is written in the call
// that rekeys (no backup: never completed); otherwise only an unbroken
// watch of Vault's log since the ceremony ran.
func (r *Recoverer) endObserved(c Ceremony) bool {
	if len(r.cfg.PGPKeys) > 0 && !r.cfg.RequireVerification {
		return true
	}
	return r.witness != nil && r.witness.Observed(c.Nonce)
}

// watching refuses to start a ceremony that could never be proven: one
// that needs the witness while Vault's log is not watched. wait is set
// while the stream is still opening.
func (r *Recoverer) watching() (wait bool, err error) {
	if !r.NeedsWitness() {
		return false, nil
	}
	if r.witness == nil {
		return false, ErrNoWitness
	}
	ok, why := r.witness.Watching()
	switch {
	case ok:
		return false, nil
	case r.witness.wantedFor() < witnessOpen:
		return true, nil
	case why != nil:
		return false, fmt.Errorf("%w: %w", ErrNoWitness, why)
	}
	return false, ErrNoWitness
}

// completed tells how an ended ceremony is known to have completed, or ""
// when it was cancelled (or cannot be shown to have completed, which is
// treated the same: the ceremony starts again and the old shares are
// never taken for rotated).
//
// With PGP keys Vault keeps an encrypted backup carrying the nonce of the
// rekey that wrote it. Vault writes it (vault/rekey.go, BarrierRekeyUpdate)
// once the quorum of current shares is in and, without verification, in
// the same call that rekeys the barrier: nothing can cancel in between, so
// the backup's nonce is proof (ProofPGPBackup). With verification required
// Vault writes the backup *before* the verification step, and a cancel
// during verification (DELETE sys/rekey/init needs no token) leaves it
// behind while the old shares stay valid; without PGP keys Vault's API
// shows nothing at all once a rekey has ended. Those ceremonies are proven
// by Vault's own log line of the barrier rekey, tied to this ceremony by
// the witness (ProofVaultLog).
func (r *Recoverer) completed(ctx context.Context, c Ceremony) (string, error) {
	if len(r.cfg.PGPKeys) > 0 {
		nonce, err := r.vault.RekeyBackup(ctx, c.RecoveryKeys)
		if err != nil {
			return "", err
		}
		if nonce != c.Nonce {
			return "", nil // no backup of this ceremony: it never reached its quorum
		}
		if !r.cfg.RequireVerification {
			return ProofPGPBackup, nil
		}
	}
	if r.witness != nil && r.witness.Completed(ctx, c.Nonce, witnessWait) {
		return ProofVaultLog, nil
	}
	return "", ctx.Err()
}

// Proofs of a ceremony's completion, as unsealkeys.rotated and the report
// give them. A ceremony without one is never reported rotated.
const (
	// ProofPGPBackup: Vault's PGP-encrypted backup carries the ceremony's
	// nonce, and without verification only the call that rekeys writes it.
	ProofPGPBackup = "pgp_backup"
	// ProofVaultLog: Vault's log, watched without a gap through
	// sys/monitor, showed "security barrier rekeyed" after this
	// ceremony's "rekey initialized" (or, for a ceremony already running
	// when the watch began, as the first rekey line of the watch).
	ProofVaultLog = "vault_log"
)

// RotatedEvent is unsealkeys.rotated for a completed ceremony. Verified
// and the proof come from what Vault showed, never from the configuration
// alone (see completed): Vault rekeys a ceremony that requires
// verification only once the new shares are verified.
func (r *Recoverer) RotatedEvent(incidentID string, c Ceremony, process string) events.Outgoing {
	id := incidentID + "/unsealkeys.rotated"
	if c.Round > 1 {
		id = fmt.Sprintf("%s/%d", id, c.Round) // every seal round has its own ceremony
	}
	return events.Outgoing{Name: events.UnsealKeysRotated, ID: id, Data: events.UnsealKeysRotatedData{
		IncidentID: incidentID, Shares: c.Shares, Threshold: c.Threshold, PGPFingerprints: c.Fingerprints,
		Verified: c.VerifyNonce != "" && c.ConfirmedBy == ProofVaultLog, Proof: c.ConfirmedBy, RecoveryKeys: c.RecoveryKeys, Process: process,
	}}
}

// AuthPaths are the mount paths of the declared auth methods (restored
// in phase 8).
func (r *Recoverer) AuthPaths() []string {
	paths := make([]string, len(r.cfg.Auth))
	for i, a := range r.cfg.Auth {
		paths[i] = a.Path
	}
	return paths
}

// Restore re-enables every declared auth method and re-applies its
// configuration and roles. Enabling what is enabled is skipped and the
// writes are idempotent, so restoring twice is harmless.
func (r *Recoverer) Restore(ctx context.Context) error {
	if err := r.vault.Follow(ctx); err != nil {
		return err
	}
	mounts, err := r.vault.AuthMounts(ctx)
	if err != nil {
		return err
	}
	for _, a := range r.cfg.Auth {
		if _, ok := mounts[a.Path]; !ok {
			if err := r.vault.EnableAuth(ctx, a.Path, a.Type, a.Description); err != nil {
				return fmt.Errorf("enable auth %s: %w", a.Path, err)
			}
		}
		for _, w := range a.Writes {
			if err := r.vault.WriteAuth(ctx, a.Path+"/"+w.Path, w.Data); err != nil {
				return fmt.Errorf("configure auth/%s/%s: %w", a.Path, w.Path, err)
			}
		}
	}
	r.log.InfoContext(ctx, "access restored", slog.Int("auth_methods", len(r.cfg.Auth)))
	return nil
}
