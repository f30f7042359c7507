package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/services/containment/internal/incident"
	"github.com/lockdown/lockdown/services/containment/internal/recovery"
	"github.com/lockdown/lockdown/services/containment/internal/reporting"
)

// step takes the incident's next step from its recorded phase and returns
// how long to wait before looking again.
func (e *Engine) step(ctx context.Context, f Fence, inc incident.Incident) (time.Duration, error) {
	switch inc.Phase {
	case incident.PhaseContaining:
		return e.seal(ctx, f, inc)
	case incident.PhaseSealed:
		return e.gate(ctx, f, inc)
	case incident.PhaseUnsealed:
		return e.revoke(ctx, f, inc)
	case incident.PhaseRecovering:
		return e.recover(ctx, f, inc)
	}
	return e.cfg.Tick, nil
}

// seal finishes a seal round a breach left unconfirmed (a node down or
// being fenced), or one recorded without seals.
func (e *Engine) seal(ctx context.Context, f Fence, inc incident.Incident) (time.Duration, error) {
	seals, problems := e.sealer.SealAll(ctx, e.cfg.SealDeadline)
	if len(problems) > 0 {
		// Raised once per round, then the step keeps failing until every
		// node is sealed, and the incident shows as stuck.
		key := fmt.Sprintf("%s/%d", inc.ID, inc.SealRound)
		e.mu.Lock()
		reported := e.failedRounds[key]
		e.failedRounds[key] = true
		e.mu.Unlock()
		if !reported {
			if err := e.store.Apply(ctx, f, Change{IncidentID: inc.ID, Version: inc.Version,
				Emit: []events.Outgoing{incident.FailedEvent(inc.ID, inc.SealRound, problems)}}); err != nil {
				return 0, err
			}
		}
		return 0, fmt.Errorf("nodes not sealed: %v", problems)
	}
	confirmed := true
	err := e.apply(ctx, f, "sealed", Change{IncidentID: inc.ID, Version: inc.Version, Phase: incident.PhaseSealed, RoundSealed: &confirmed,
		SealedAt: incident.LastConfirmed(seals), Seals: seals, Emit: []events.Outgoing{incident.SealedEvent(inc.ID, inc.SealRound, seals, inc.BreachPublishedAt, e.cfg.Process)}})
	if err == nil {
		e.log.InfoContext(ctx, "every vault node confirmed sealed", slog.String("incident_id", inc.ID), slog.Int("round", inc.SealRound))
	}
	return 0, err
}

// gate watches the key holders' unseal: every change of the nodes'
// progress is recorded, and the active node unsealed passes the gate.
func (e *Engine) gate(ctx context.Context, f Fence, inc incident.Incident) (time.Duration, error) {
	statuses := e.sealer.Statuses(ctx)
	for _, st := range statuses {
		if !st.Reachable || st.Sealed || !st.Active {
			continue
		}
		now := time.Now().UTC()
		sealedAt := inc.SealedAt
		if sealedAt.IsZero() {
			sealedAt = now
		}
		err := e.apply(ctx, f, "unsealed", Change{IncidentID: inc.ID, Version: inc.Version, Phase: incident.PhaseUnsealed, UnsealedAt: now, Gate: statuses,
			Emit: []events.Outgoing{{Name: events.VaultUnsealed, ID: fmt.Sprintf("%s/vault.unsealed/%d", inc.ID, inc.SealRound), Data: events.VaultUnsealedData{
				IncidentID: inc.ID, Round: inc.SealRound, Address: st.Address, GateMS: now.Sub(sealedAt).Milliseconds(), Process: e.cfg.Process}}}})
		if err == nil {
			e.log.InfoContext(ctx, "unseal gate passed", slog.String("incident_id", inc.ID), slog.String("node", st.Address), slog.Int("round", inc.SealRound))
		}
		return 0, err
	}
	if !slices.Equal(statuses, inc.Gate) {
		if err := e.store.Apply(ctx, f, Change{IncidentID: inc.ID, Version: inc.Version, Gate: statuses}); err != nil {
			return 0, err
		}
	}
	return e.cfg.Tick, nil
}

// revoke runs phase 4 after the round's unseal, once per seal round.
func (e *Engine) revoke(ctx context.Context, f Fence, inc incident.Incident) (time.Duration, error) {
	st, err := e.store.LoadRecovery(ctx, inc.ID)
	if err != nil {
		return 0, err
	}
	if st.RevokedRound >= inc.SealRound {
		// Revoked and recorded, and the phase moved in the same
		// transaction: only an old row gets here.
		return 0, e.store.Apply(ctx, f, Change{IncidentID: inc.ID, Version: inc.Version, Phase: incident.PhaseRecovering})
	}
	var prior events.AccessRevokedData
	if st.RevokingRound == inc.SealRound {
		prior = st.Revoking // an attempt of this round was cut short
	}
	version := inc.Version
	save := func(plan events.AccessRevokedData) error {
		st.IncidentID, st.Revoking, st.RevokingRound = inc.ID, plan, inc.SealRound
		if err := e.store.Apply(ctx, f, Change{IncidentID: inc.ID, Version: version, Recovery: &st}); err != nil {
			return err
		}
		version++
		return nil
	}
	revoked, kept, err := e.rec.Revoke(ctx, inc.ID, prior, save)
	if err != nil {
		return 0, err
	}
	revoked.Round, revoked.Process = inc.SealRound, e.cfg.Process
	st.IncidentID, st.Revoked, st.KeptReasons, st.RevokedRound, st.AccessRevokedAt = inc.ID, revoked, kept, inc.SealRound, time.Now().UTC()
	err = e.apply(ctx, f, "revoked", Change{IncidentID: inc.ID, Version: version, Phase: incident.PhaseRecovering, Recovery: &st,
		Emit: []events.Outgoing{{Name: events.AccessRevoked, ID: fmt.Sprintf("%s/access.revoked/%d", inc.ID, inc.SealRound), Data: revoked}}})
	if err == nil {
		e.log.InfoContext(ctx, "access revoked", slog.String("incident_id", inc.ID), slog.Int("round", inc.SealRound),
			slog.Int("tokens_revoked", revoked.TokensRevoked), slog.Any("auth_disabled", revoked.AuthMethodsDisabled))
	}
	return 0, err
}

// recover runs the rekey ceremony, restores access once the unseal keys
// are rotated and every tenant is rotated and notified, and resolves the
// incident once access is restored. Each pass does at most one recorded
// change.
func (e *Engine) recover(ctx context.Context, f Fence, inc incident.Incident) (time.Duration, error) {
	st, err := e.store.LoadRecovery(ctx, inc.ID)
	if err != nil {
		return 0, err
	}
	st.IncidentID = inc.ID
	if wait, done, err := e.ceremony(ctx, f, inc, st); done || err != nil {
		return wait, err
	}
	recorded, err := e.store.Recorded(ctx, inc.ID, events.RotationCompleted, events.NotificationsCompleted)
	if err != nil {
		return 0, err
	}
	rotated, notified := recorded[events.RotationCompleted], recorded[events.NotificationsCompleted]
	// The whole timeline only for the two steps that read it, each once.
	entries := func() ([]reporting.Entry, error) { return e.store.Timeline(ctx, inc.ID) }
	rekeyed := st.Ceremony.Phase == recovery.CeremonyCompleted
	// Restored in this round: a breach after the restore started another
	// round, revoked access again, and access returns only after it (a
	// state written before rounds were counted has round 0: restored).
	restored := !st.RestoredAt.IsZero() && (st.RestoredRound == 0 || st.RestoredRound >= inc.SealRound)
	if rekeyed && !swept(st, inc.SealRound, stageAfterRekey) && !restored {
		// The old shares are dead now: whatever root token was generated
		// with them meanwhile is swept, and whatever was planted with it.
		return 0, e.sweep(ctx, f, inc, st, stageAfterRekey, nil)
	}
	switch {
	case !restored && rotated && notified && rekeyed:
		// Verify, not trust: the rotation's completion is a claim of
		// whoever holds the rotator's credential. Vault must show it.
		all, err := entries()
		if err != nil {
			return 0, err
		}
		if err := e.verifyRotation(ctx, inc.ID, all); err != nil {
			return 0, err
		}
		// One more sweep just before access returns, recorded with the
		// restore: nothing minted since the last one outlives the incident.
		return 0, e.sweep(ctx, f, inc, st, stageBeforeRestore, func(st *recovery.State) ([]events.Outgoing, error) {
			if err := e.rec.Restore(ctx); err != nil {
				return nil, fmt.Errorf("restore access: %w", err)
			}
			st.RotationDone, st.NotifiedDone, st.RestoredAt, st.RestoredRound = true, true, time.Now().UTC(), inc.SealRound
			id := inc.ID + "/access.restored"
			if inc.SealRound > 1 {
				id = fmt.Sprintf("%s/access.restored/%d", inc.ID, inc.SealRound)
			}
			return []events.Outgoing{{Name: events.AccessRestored, ID: id, Data: events.AccessRestoredData{
				IncidentID: inc.ID, Round: inc.SealRound, AuthMethods: e.rec.AuthPaths(), Process: e.cfg.Process}}}, nil
		})
	case restored:
		all, err := entries()
		if err != nil {
			return 0, err
		}
		return 0, e.resolve(ctx, f, inc, all)
	case st.RotationDone != rotated || st.NotifiedDone != notified:
		st.RotationDone, st.NotifiedDone = rotated, notified
		return 0, e.store.Apply(ctx, f, Change{IncidentID: inc.ID, Version: inc.Version, Recovery: &st})
	}
	if st.Ceremony.Phase != recovery.CeremonyCompleted {
		return min(e.cfg.RekeyPoll, 4*e.cfg.Tick), nil
	}
	return 4 * e.cfg.Tick, nil
}

// ceremony moves the rekey ceremony one step and records it when it
// changed. done is true when it recorded something (the pass ends there).
func (e *Engine) ceremony(ctx context.Context, f Fence, inc incident.Incident, st recovery.State) (wait time.Duration, done bool, err error) {
	c := st.Ceremony
	if c.Round != 0 && c.Round < inc.SealRound {
		// A new seal round (a second breach, whenever it came): Vault
		// clears a rekey in progress when it seals, and the intruder may
		// hold the shares of the last ceremony too. Every round has its own
		// ceremony, even after one completed.
		c = recovery.Ceremony{Restarts: c.Restarts + 1, Note: "Vault was sealed again (a new seal round); a new ceremony started after the unseal"}
	}
	if c.Phase == recovery.CeremonyCompleted {
		if c.Announced {
			return 0, false, nil
		}
		c.Announced = true
		st.Ceremony = c
		return 0, true, e.apply(ctx, f, "rotated", Change{IncidentID: inc.ID, Version: inc.Version, Recovery: &st,
			Emit: []events.Outgoing{e.rec.RotatedEvent(inc.ID, c, e.cfg.Process)}})
	}
	c.Round = inc.SealRound
	// Until the rekey completes, anyone holding a quorum of the old shares
	// can generate a root token, with no token at all: every attempt seen
	// is cancelled and raised as an alarm (the sweep after the rekey
	// revokes a token an attempt completed between two looks).
	if n, err := e.rec.CancelGenerateRoot(ctx); err != nil {
		return 0, false, fmt.Errorf("cancel generate-root: %w", err)
	} else if n > 0 {
		st.GenerateRootAlarms += n
		e.log.WarnContext(ctx, "a sys/generate-root attempt during the ceremony was cancelled", slog.String("incident_id", inc.ID))
		return 0, true, e.apply(ctx, f, "ceremony", Change{IncidentID: inc.ID, Version: inc.Version, Recovery: &st,
			Emit: []events.Outgoing{{Name: events.VaultReconciled, ID: fmt.Sprintf("%s/vault.reconciled/ceremony/%d/%d", inc.ID, inc.SealRound, st.GenerateRootAlarms),
				Data: events.VaultReconciledData{IncidentID: inc.ID, Stage: stageCeremony, Round: inc.SealRound, GenerateRootCancelled: n, Process: e.cfg.Process}}}})
	}
	next, err := e.rec.CeremonyStep(ctx, inc.ID, c)
	if err != nil {
		return 0, false, fmt.Errorf("rekey ceremony: %w", err)
	}
	if ceremonyEqual(next, st.Ceremony) {
		return 0, false, nil
	}
	st.Ceremony = next
	change, point := Change{IncidentID: inc.ID, Version: inc.Version, Recovery: &st}, "ceremony"
	if next.Phase == recovery.CeremonyCompleted {
		st.Ceremony.Announced = true
		change.Emit, point = []events.Outgoing{e.rec.RotatedEvent(inc.ID, next, e.cfg.Process)}, "rotated"
		e.log.InfoContext(ctx, "rekey ceremony completed", slog.String("incident_id", inc.ID), slog.String("confirmed_by", next.ConfirmedBy))
	}
	return 0, true, e.apply(ctx, f, point, change)
}

// Stages of vault.reconciled.
const (
	stageAfterRekey    = "after_rekey"
	stageBeforeRestore = "before_restore"
	stageCeremony      = "ceremony"
)

// swept says whether stage was swept and recorded in round.
func swept(st recovery.State, round int, stage string) bool {
	return st.SweptRound == round && slices.Contains(st.Swept, stage)
}

// sweep sweeps Vault again (recovery.Sweep) and records it with the
// events then implies; then, when given, runs and records with it in the
// same change (the restore). What the sweep removes is recorded before
// anything is removed, as in the revocation.
func (e *Engine) sweep(ctx context.Context, f Fence, inc incident.Incident, st recovery.State, stage string, then func(*recovery.State) ([]events.Outgoing, error)) error {
	var prior []events.VaultChange
	if st.SweepingStage == stage {
		prior = st.Sweeping
	}
	version := inc.Version
	save := func(plan []events.VaultChange) error {
		st.Sweeping, st.SweepingStage = plan, stage
		if err := e.store.Apply(ctx, f, Change{IncidentID: inc.ID, Version: version, Recovery: &st}); err != nil {
			return err
		}
		version++
		return nil
	}
	out, err := e.rec.Sweep(ctx, inc.ID, stage, prior, save)
	if err != nil {
		return fmt.Errorf("sweep %s: %w", stage, err)
	}
	out.Round, out.Process = inc.SealRound, e.cfg.Process
	if st.SweptRound != inc.SealRound {
		st.Swept, st.SweptRound = nil, inc.SealRound
	}
	st.Swept, st.Sweeping, st.SweepingStage = append(st.Swept, stage), nil, ""
	emit := []events.Outgoing{{Name: events.VaultReconciled, ID: fmt.Sprintf("%s/vault.reconciled/%s/%d", inc.ID, stage, inc.SealRound), Data: out}}
	point := "swept"
	if then != nil {
		more, err := then(&st)
		if err != nil {
			return err
		}
		emit, point = append(emit, more...), "restored"
	}
	if err := e.apply(ctx, f, point, Change{IncidentID: inc.ID, Version: version, Recovery: &st, Emit: emit}); err != nil {
		return err
	}
	e.log.InfoContext(ctx, "vault swept", slog.String("incident_id", inc.ID), slog.String("stage", stage), slog.Int("round", inc.SealRound),
		slog.Int("tokens_revoked", out.TokensRevoked), slog.Int("reconciled", len(out.Reconciled)))
	return nil
}

// resolve builds the report from the timeline and ends the incident.
func (e *Engine) resolve(ctx context.Context, f Fence, inc incident.Incident, entries []reporting.Entry) error {
	ri, err := e.reportIncident(ctx, inc.ID)
	if err != nil {
		return err
	}
	resolvedAt := time.Now().UTC()
	for _, en := range entries {
		if en.Type == events.AccessRestored {
			resolvedAt = en.Time
		}
	}
	rep := reporting.Build(ri, entries, "resolved", "", resolvedAt)
	err = e.apply(ctx, f, "resolved", Change{IncidentID: inc.ID, Version: inc.Version, Phase: incident.PhaseResolved, ResolvedAt: resolvedAt, Report: &rep,
		Emit: []events.Outgoing{ResolvedEvent(rep)}})
	if err != nil {
		return err
	}
	e.recordPhases(ctx, rep)
	e.log.InfoContext(ctx, "incident resolved", slog.String("incident_id", inc.ID), slog.Int("tenants_rotated", rep.Actions.TenantsRotated),
		slog.Int("tenants_notified", rep.Actions.TenantsNotified), slog.Int("failures", len(rep.Failures)))
	return nil
}

// ResolvedEvent is incident.resolved with the report's headline.
func ResolvedEvent(rep report.Report) events.Outgoing {
	return events.Outgoing{Name: events.IncidentResolved, ID: rep.IncidentID + "/incident.resolved", Data: events.IncidentResolvedData{
		IncidentID: rep.IncidentID, Outcome: rep.Outcome, Reason: rep.Reason, ResolvedAt: rep.ResolvedAt, AffectedTenants: rep.AffectedCount,
		TenantsRotated: rep.Actions.TenantsRotated, TenantsNotified: rep.Actions.TenantsNotified, Failures: len(rep.Failures),
	}}
}

// ceremonyEqual compares two ceremonies (Ceremony holds a slice, so == does
// not apply to it).
func ceremonyEqual(a, b recovery.Ceremony) bool {
	return reflect.DeepEqual(a, b)
}

// verifyRotation checks the rotation's claims in Vault (recovery.
// VerifyRotation); a refutation is repeated at most every reverifyEvery
// while the timeline is unchanged, so a stuck incident does not read every
// tenant's metadata at each retry.
func (e *Engine) verifyRotation(ctx context.Context, incidentID string, entries []reporting.Entry) error {
	e.mu.Lock()
	r, ok := e.refuted[incidentID]
	e.mu.Unlock()
	if ok && r.entries == len(entries) && time.Since(r.at) < reverifyEvery {
		return r.err
	}
	err := e.rec.VerifyRotation(ctx, rotationClaims(entries))
	e.mu.Lock()
	defer e.mu.Unlock()
	if errors.Is(err, recovery.ErrRotationUnproven) {
		e.refuted[incidentID] = refutation{at: time.Now(), entries: len(entries), err: err}
	} else {
		delete(e.refuted, incidentID)
	}
	return err
}

// rotationClaims collects from the timeline what the rotation announced:
// the latest rotation.completed's count, the tenants announced rotated or
// failed (a later completion wins over a failure: a retried tenant), and
// the first revocation's time.
func rotationClaims(entries []reporting.Entry) recovery.RotationClaims {
	var c recovery.RotationClaims
	rotated, failed := map[string]bool{}, map[string]bool{}
	for _, e := range entries {
		switch e.Type {
		case events.AccessRevoked:
			if c.Since.IsZero() || e.Time.Before(c.Since) {
				c.Since = e.Time
			}
		case events.RotationCompleted:
			var d events.RotationCompletedData
			if json.Unmarshal(e.Data, &d) == nil {
				c.Completed = d.Completed // entries are in time order: the latest stays
			}
		case events.RotationTenantCompleted:
			var d events.RotationTenantCompletedData
			if json.Unmarshal(e.Data, &d) == nil {
				rotated[d.TenantID] = true
			}
		case events.RotationTenantFailed:
			var d events.RotationTenantFailedData
			if json.Unmarshal(e.Data, &d) == nil {
				failed[d.TenantID] = true
			}
		case events.NotificationsCompleted:
			var d events.NotificationsCompletedData
			if json.Unmarshal(e.Data, &d) == nil {
				c.Notified = d.Sent + d.Failed + d.Late
			}
		}
	}
	for t := range rotated {
		c.Rotated = append(c.Rotated, t)
	}
	for t := range failed {
		if !rotated[t] {
			c.Failed = append(c.Failed, t)
		}
	}
	slices.Sort(c.Rotated)
	slices.Sort(c.Failed)
	return c
}

func has(entries []reporting.Entry, name events.Name) bool {
	for _, e := range entries {
		if e.Type == name {
			return true
		}
	}
	return false
}
