package engine

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/services/containment/internal/incident"
	"github.com/lockdown/lockdown/services/containment/internal/recovery"
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
	entries, err := e.store.Timeline(ctx, inc.ID)
	if err != nil {
		return 0, err
	}
	rotated, notified := has(entries, events.RotationCompleted), has(entries, events.NotificationsCompleted)
	rekeyed := st.Ceremony.Phase == recovery.CeremonyCompleted
	switch {
	case st.RestoredAt.IsZero() && rotated && notified && rekeyed:
		if err := e.rec.Restore(ctx); err != nil {
			return 0, fmt.Errorf("restore access: %w", err)
		}
		st.RotationDone, st.NotifiedDone, st.RestoredAt = true, true, time.Now().UTC()
		err := e.apply(ctx, f, "restored", Change{IncidentID: inc.ID, Version: inc.Version, Recovery: &st,
			Emit: []events.Outgoing{{Name: events.AccessRestored, ID: inc.ID + "/access.restored", Data: events.AccessRestoredData{
				IncidentID: inc.ID, AuthMethods: e.rec.AuthPaths(), Process: e.cfg.Process}}}})
		return 0, err
	case !st.RestoredAt.IsZero():
		return 0, e.resolve(ctx, f, inc, entries)
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
	if c.Phase == recovery.CeremonyCompleted {
		if c.Announced {
			return 0, false, nil
		}
		c.Announced = true
		st.Ceremony = c
		return 0, true, e.apply(ctx, f, "rotated", Change{IncidentID: inc.ID, Version: inc.Version, Recovery: &st,
			Emit: []events.Outgoing{e.rec.RotatedEvent(inc.ID, c, e.cfg.Process)}})
	}
	if c.Round != 0 && c.Round < inc.SealRound {
		// Vault clears a rekey in progress when it seals: this round's
		// unseal starts the ceremony over.
		c = recovery.Ceremony{Restarts: c.Restarts + 1, Note: "Vault was sealed again during the ceremony; it started over after the unseal"}
	}
	c.Round = inc.SealRound
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

// resolve builds the report from the timeline and ends the incident.
func (e *Engine) resolve(ctx context.Context, f Fence, inc incident.Incident, entries []report.Entry) error {
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
	rep := report.Build(ri, entries, "resolved", "", resolvedAt)
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

func has(entries []report.Entry, name events.Name) bool {
	for _, e := range entries {
		if e.Type == name {
			return true
		}
	}
	return false
}
