package recovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/telemetry"
)

// Recoverer runs phases 4, 5 and 8 for each incident.
type Recoverer struct {
	cfg   Config
	vault Vault
	store Store
	pub   Publisher
	log   *slog.Logger
	ctx   context.Context

	mu       sync.Mutex
	running  map[string]bool // incident id → ceremony loop running
	loopsWG  sync.WaitGroup
	revokeMu sync.Mutex // one revocation at a time
	// stateMu serialises every read-modify-write of a recovery state: the
	// ceremony loop and the completion handlers save the whole state, and
	// without it one would overwrite the other's change (a completion
	// flag lost to a ceremony step meant access was never restored).
	stateMu sync.Mutex
}

// New wires a Recoverer; ctx bounds its ceremony loops.
func New(ctx context.Context, cfg Config, vault Vault, store Store, pub Publisher, log *slog.Logger) *Recoverer {
	return &Recoverer{cfg: cfg, vault: vault, store: store, pub: pub, log: log, ctx: ctx, running: map[string]bool{}}
}

// Wait blocks until every ceremony loop has stopped.
func (r *Recoverer) Wait() { r.loopsWG.Wait() }

// Resume restarts the ceremony loops of incidents whose recovery was under
// way when containment stopped.
func (r *Recoverer) Resume(ctx context.Context) error {
	states, err := r.store.OpenRecoveries(ctx)
	if err != nil {
		return err
	}
	for _, s := range states {
		if !s.AccessRevokedAt.IsZero() && s.Ceremony.Phase != CeremonyCompleted {
			r.log.InfoContext(ctx, "resuming rekey ceremony", slog.String("incident_id", s.IncidentID), slog.String("nonce", s.Ceremony.Nonce))
			r.startCeremony(s.IncidentID, s.TraceParent)
		}
	}
	return nil
}

// OnUnsealed runs phase 4 for the incident, once, then starts the rekey
// ceremony. A redelivery after a crash re-runs the revocation (each step is
// idempotent) and re-announces it with the same event id.
func (r *Recoverer) OnUnsealed(ctx context.Context, incidentID string) error {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	st, err := r.store.LoadRecovery(ctx, incidentID)
	if err != nil {
		return err
	}
	if st.AccessRevokedAt.IsZero() {
		st.TraceParent = telemetry.TraceParent(ctx)
		if err := r.revokeAccess(ctx, &st); err != nil {
			return err
		}
		if err := r.store.SaveRecovery(ctx, st); err != nil {
			return err
		}
	}
	if err := r.pub.PublishWithID(ctx, events.AccessRevoked, incidentID+"/access.revoked", st.Revoked); err != nil {
		return err
	}
	r.startCeremony(incidentID, st.TraceParent)
	return nil
}

// revokeAccess disables the compromised auth methods, revokes every token
// but Lockdown's own and the break-glass ones, revokes leases under the
// configured prefixes and rotates the keyring.
func (r *Recoverer) revokeAccess(ctx context.Context, st *State) error {
	r.revokeMu.Lock()
	defer r.revokeMu.Unlock()
	out := events.AccessRevokedData{IncidentID: st.IncidentID, AuthMethodsDisabled: []string{}, LeasePrefixes: []string{}}
	mounts, err := r.vault.AuthMounts(ctx)
	if err != nil {
		return fmt.Errorf("list auth methods: %w", err)
	}
	for _, path := range r.cfg.DisableAuth {
		if _, ok := mounts[path]; !ok {
			continue // already disabled (a retried run) or never enabled
		}
		if err := r.vault.DisableAuth(ctx, path); err != nil {
			return fmt.Errorf("disable auth %s: %w", path, err)
		}
		out.AuthMethodsDisabled = append(out.AuthMethodsDisabled, path)
	}
	self, err := r.vault.SelfAccessor(ctx)
	if err != nil {
		return fmt.Errorf("lookup own token: %w", err)
	}
	accessors, err := r.vault.TokenAccessors(ctx)
	if err != nil {
		return fmt.Errorf("list token accessors: %w", err)
	}
	kept := map[string]int{}
	for _, acc := range accessors {
		if reason := r.keep(ctx, acc, self); reason != "" {
			kept[reason]++
			out.TokensKept++
			continue
		}
		if err := r.vault.RevokeAccessor(ctx, acc); err != nil {
			return fmt.Errorf("revoke token by accessor: %w", err)
		}
		out.TokensRevoked++
	}
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
		slog.Int("tokens_revoked", out.TokensRevoked), slog.Any("tokens_kept", kept), slog.Int("key_term", out.KeyTerm))
	return nil
}

// keep says why a token survives the revocation ("" when it does not).
func (r *Recoverer) keep(ctx context.Context, accessor, self string) string {
	switch {
	case accessor == self:
		return "lockdown (this service)"
	case slices.Contains(r.cfg.KeepAccessors, accessor):
		return "lockdown (install-time token)"
	case slices.Contains(r.cfg.BreakGlass, accessor):
		return "break-glass accessor"
	}
	info, err := r.vault.LookupAccessor(ctx, accessor)
	if err != nil {
		return "" // gone meanwhile, or unreadable: revoking is the safe side
	}
	if slices.Contains(r.cfg.BreakGlass, info.DisplayName) {
		return "break-glass display name"
	}
	return ""
}

func (r *Recoverer) startCeremony(incidentID, traceParent string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running[incidentID] {
		return
	}
	r.running[incidentID] = true
	r.loopsWG.Add(1)
	go func() {
		defer r.loopsWG.Done()
		defer func() { r.mu.Lock(); delete(r.running, incidentID); r.mu.Unlock() }()
		// The ceremony outlives the message that started it: it continues
		// the incident's trace from the stored context.
		ctx := telemetry.WithTraceParent(r.ctx, traceParent)
		for r.ctx.Err() == nil {
			done, err := r.ceremonyStep(ctx, incidentID)
			if err != nil && r.ctx.Err() == nil {
				r.log.Warn("rekey ceremony step failed; retrying", slog.String("incident_id", incidentID), slog.Any("error", err))
			}
			if done {
				return
			}
			select {
			case <-r.ctx.Done():
			case <-time.After(r.cfg.Poll):
			}
		}
	}()
}

// ceremonyStep reads the rekey status once and moves the ceremony on. It
// returns true once the ceremony is completed and announced.
func (r *Recoverer) ceremonyStep(ctx context.Context, incidentID string) (bool, error) {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	st, err := r.store.LoadRecovery(ctx, incidentID)
	if err != nil {
		return false, err
	}
	c := st.Ceremony
	if c.Phase == CeremonyCompleted {
		return true, r.announceRotated(ctx, st)
	}
	if c.Nonce == "" {
		if c.RecoveryKeys, err = r.vault.RecoverySeal(ctx); err != nil {
			return false, err
		}
	}
	status, err := r.vault.RekeyStatus(ctx, c.RecoveryKeys)
	if err != nil {
		return false, err
	}
	before := c
	switch {
	case status.Started && c.Nonce != "" && status.Nonce == c.Nonce:
		c.Progress, c.Threshold, c.Shares = status.Progress, status.T, status.N
		c.Phase = CeremonyCollecting
		if status.VerificationNonce != "" {
			v, err := r.vault.RekeyVerifyStatus(ctx, c.RecoveryKeys)
			if err != nil {
				return false, err
			}
			c.Phase, c.VerifyNonce, c.VerifyProgress = CeremonyVerifying, v.Nonce, v.Progress
		}
	case status.Started:
		// A rekey Lockdown did not start (or whose nonce it lost): it
		// could be the intruder's. Cancel it and start ours.
		if err := r.vault.RekeyCancel(ctx, c.RecoveryKeys, status.Nonce); err != nil {
			return false, err
		}
		c.Note = "a rekey not started by Lockdown was cancelled"
		c.Nonce = ""
		c.Restarts++
	case c.Nonce == "":
		s, err := r.vault.RekeyInit(ctx, c.RecoveryKeys, r.cfg.Shares, r.cfg.Threshold, r.cfg.PGPKeys, r.cfg.RequireVerification)
		if err != nil {
			return false, fmt.Errorf("rekey init: %w", err)
		}
		c = Ceremony{Phase: CeremonyCollecting, Nonce: s.Nonce, RecoveryKeys: c.RecoveryKeys, Threshold: s.T, Shares: s.N,
			Fingerprints: s.PGPFingerprints, StartedAt: time.Now().UTC(), Restarts: c.Restarts, Note: c.Note}
		r.log.InfoContext(ctx, "rekey ceremony started: key holders submit their current shares with `vault operator rekey -nonce=<nonce>`",
			slog.String("incident_id", incidentID), slog.String("nonce", s.Nonce), slog.Int("shares", s.N), slog.Int("threshold", s.T))
	default:
		// Our rekey is no longer in progress: completed, or cancelled.
		confirmed, err := r.completed(ctx, c)
		if err != nil {
			return false, err
		}
		if confirmed == "" {
			c.Note = "the ceremony was cancelled before completion; a new one was started"
			c.Nonce, c.Progress, c.VerifyNonce, c.VerifyProgress = "", 0, "", 0
			c.Restarts++
			r.log.WarnContext(ctx, "rekey ceremony cancelled; restarting", slog.String("incident_id", incidentID))
		} else {
			c.Phase, c.ConfirmedBy, c.CompletedAt = CeremonyCompleted, confirmed, time.Now().UTC()
		}
	}
	if !reflect.DeepEqual(c, before) {
		st.Ceremony = c
		if err := r.store.SaveRecovery(ctx, st); err != nil {
			return false, err
		}
	}
	if c.Phase == CeremonyCompleted {
		return true, r.announceRotated(ctx, st)
	}
	return false, nil
}

// completed tells how an ended ceremony is known to have completed, or ""
// when it was cancelled. With PGP keys the encrypted backup Vault keeps
// carries the nonce of the rekey that produced it: proof. Without them,
// Vault shows nothing that tells a completion from a cancel once the rekey
// has ended; a ceremony seen in its verification phase (the new shares
// existed and were being proven) is taken as completed when it ends. A
// cancel during verification would be mistaken for a completion, and a
// ceremony never seen in verification is restarted: docs/operations.md
// recommends PGP keys for that reason.
func (r *Recoverer) completed(ctx context.Context, c Ceremony) (string, error) {
	if len(r.cfg.PGPKeys) > 0 {
		nonce, err := r.vault.RekeyBackup(ctx, c.RecoveryKeys)
		if err != nil {
			return "", err
		}
		if nonce == c.Nonce {
			return "pgp_backup", nil
		}
		return "", nil
	}
	if c.VerifyNonce != "" {
		return "verification", nil
	}
	return "", nil
}

func (r *Recoverer) announceRotated(ctx context.Context, st State) error {
	c := st.Ceremony
	return r.pub.PublishWithID(ctx, events.UnsealKeysRotated, st.IncidentID+"/unsealkeys.rotated", events.UnsealKeysRotatedData{
		IncidentID: st.IncidentID, Shares: c.Shares, Threshold: c.Threshold, PGPFingerprints: c.Fingerprints,
		Verified: c.ConfirmedBy == "verification" || r.cfg.RequireVerification, RecoveryKeys: c.RecoveryKeys,
	})
}

// ErrNotRevoked is returned when restore is asked for an incident whose
// access was never revoked.
var ErrNotRevoked = errors.New("access was not revoked for this incident")

// OnRotationCompleted and OnNotificationsCompleted record the two
// conditions of phase 8; when both hold, access is restored.
func (r *Recoverer) OnRotationCompleted(ctx context.Context, incidentID string) error {
	return r.markAndRestore(ctx, incidentID, func(s *State) { s.RotationDone = true })
}

// OnNotificationsCompleted: see OnRotationCompleted.
func (r *Recoverer) OnNotificationsCompleted(ctx context.Context, incidentID string) error {
	return r.markAndRestore(ctx, incidentID, func(s *State) { s.NotifiedDone = true })
}

func (r *Recoverer) markAndRestore(ctx context.Context, incidentID string, mark func(*State)) error {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	st, err := r.store.LoadRecovery(ctx, incidentID)
	if err != nil {
		return err
	}
	if st.AccessRevokedAt.IsZero() {
		return ErrNotRevoked
	}
	mark(&st)
	if st.RotationDone && st.NotifiedDone && st.RestoredAt.IsZero() {
		if err := r.restore(ctx); err != nil {
			return err
		}
		st.RestoredAt = time.Now().UTC()
	}
	if err := r.store.SaveRecovery(ctx, st); err != nil {
		return err
	}
	if st.RestoredAt.IsZero() {
		return nil
	}
	paths := make([]string, len(r.cfg.Auth))
	for i, a := range r.cfg.Auth {
		paths[i] = a.Path
	}
	return r.pub.PublishWithID(ctx, events.AccessRestored, incidentID+"/access.restored", events.AccessRestoredData{IncidentID: incidentID, AuthMethods: paths})
}

// restore re-enables every declared auth method and re-applies its
// configuration and roles. Enabling what is enabled is skipped and the
// writes are idempotent, so restoring twice is harmless.
func (r *Recoverer) restore(ctx context.Context) error {
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
