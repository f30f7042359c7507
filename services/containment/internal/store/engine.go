package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockdown/lockdown/services/containment/internal/engine"
)

// leaseName is the one lease: the process that drives the open incidents.
const leaseName = "engine"

// Apply implements engine.Store: a fenced compare-and-swap of the
// incident, the recovery state, seals, report, timeline and outbox in one
// transaction.
func (s *Store) Apply(ctx context.Context, f engine.Fence, c engine.Change) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	if f.Holder != "" {
		// FOR SHARE holds a takeover (an UPDATE of the lease row) until
		// this transaction ends: no write of a deposed leader commits
		// after its successor's first one.
		var token int64
		err := tx.QueryRow(ctx, `SELECT token FROM containment.lease WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > now() FOR SHARE`,
			leaseName, f.Holder, f.Token).Scan(&token)
		if errors.Is(err, pgx.ErrNoRows) {
			return engine.ErrNotLeader
		}
		if err != nil {
			return err
		}
	}
	var gate any
	if c.Gate != nil {
		if gate, err = json.Marshal(c.Gate); err != nil {
			return err
		}
	}
	var stuckSet bool
	var stuckReason string
	var stuckSince *time.Time
	if c.Stuck != nil {
		stuckSet, stuckReason = true, c.Stuck.Reason
		if c.Stuck.Reason != "" {
			stuckSince = &c.Stuck.Since
		}
	}
	var round int
	err = tx.QueryRow(ctx, `UPDATE containment.incidents SET version = version + 1,
		phase = coalesce(nullif($3, ''), phase),
		sealed_at = coalesce($4, sealed_at), unsealed_at = coalesce($5, unsealed_at), resolved_at = coalesce($6, resolved_at),
		round_sealed = coalesce($7, round_sealed), gate = coalesce($8::jsonb, gate),
		stuck_reason = CASE WHEN $9 THEN $10 ELSE stuck_reason END, stuck_since = CASE WHEN $9 THEN $11 ELSE stuck_since END,
		redrives = coalesce($12, redrives), failure_reason = coalesce(nullif($13, ''), failure_reason),
		seal_round = seal_round + CASE WHEN $14 THEN 1 ELSE 0 END, round_breach_at = CASE WHEN $14 THEN now() ELSE round_breach_at END
		WHERE id = $1 AND version = $2 RETURNING seal_round`,
		c.IncidentID, c.Version, string(c.Phase), timePtr(c.SealedAt), timePtr(c.UnsealedAt), timePtr(c.ResolvedAt),
		c.RoundSealed, gate, stuckSet, stuckReason, stuckSince, c.Redrives, c.FailureReason, c.NewRound).Scan(&round)
	if errors.Is(err, pgx.ErrNoRows) {
		return engine.ErrConflict
	}
	if err != nil {
		return err
	}
	if err := insertSeals(ctx, tx, c.IncidentID, round, c.Seals); err != nil {
		return err
	}
	if c.Recovery != nil {
		raw, err := json.Marshal(c.Recovery)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO containment.recovery (incident_id, state) VALUES ($1, $2)
			ON CONFLICT (incident_id) DO UPDATE SET state = EXCLUDED.state, updated_at = now()`, c.IncidentID, raw); err != nil {
			return err
		}
	}
	if c.Report != nil {
		body, err := json.Marshal(c.Report)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO containment.reports (incident_id, outcome, report) VALUES ($1, $2, $3)
			ON CONFLICT (incident_id) DO UPDATE SET outcome = EXCLUDED.outcome, report = EXCLUDED.report, created_at = now()`,
			c.IncidentID, c.Report.Outcome, body); err != nil {
			return err
		}
	}
	for _, e := range c.Timeline {
		if err := s.record(ctx, tx, c.IncidentID, e); err != nil {
			return err
		}
	}
	if err := s.emit(ctx, tx, c.IncidentID, c.Emit); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	s.changed()
	return nil
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// Acquire implements engine.Store: the lease is taken when it is free,
// expired, or already this holder's (then only extended). A change of
// holder increments the fencing token.
func (s *Store) Acquire(ctx context.Context, holder string, ttl time.Duration) (engine.Fence, error) {
	var token int64
	err := s.pool.QueryRow(ctx, `INSERT INTO containment.lease AS l (name, holder, token, expires_at, acquired_at)
		VALUES ($1, $2, 1, now() + make_interval(secs => $3), now())
		ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder,
			token = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > now() THEN l.token ELSE l.token + 1 END,
			acquired_at = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > now() THEN l.acquired_at ELSE now() END,
			expires_at = EXCLUDED.expires_at
		WHERE l.expires_at <= now() OR l.holder = EXCLUDED.holder
		RETURNING token`, leaseName, holder, ttl.Seconds()).Scan(&token)
	if errors.Is(err, pgx.ErrNoRows) {
		return engine.Fence{}, engine.ErrNotLeader
	}
	if err != nil {
		return engine.Fence{}, err
	}
	return engine.Fence{Holder: holder, Token: token}, nil
}

// Renew implements engine.Store.
func (s *Store) Renew(ctx context.Context, f engine.Fence, ttl time.Duration) error {
	tag, err := s.pool.Exec(ctx, `UPDATE containment.lease SET expires_at = now() + make_interval(secs => $4)
		WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > now()`, leaseName, f.Holder, f.Token, ttl.Seconds())
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return engine.ErrNotLeader
	}
	return nil
}

// Release implements engine.Store.
func (s *Store) Release(ctx context.Context, f engine.Fence) error {
	_, err := s.pool.Exec(ctx, `UPDATE containment.lease SET expires_at = now() WHERE name = $1 AND holder = $2 AND token = $3`,
		leaseName, f.Holder, f.Token)
	return err
}

// Leader returns the lease's holder and whether it is live (status,
// tests).
func (s *Store) Leader(ctx context.Context) (holder string, token int64, live bool, err error) {
	err = s.pool.QueryRow(ctx, `SELECT holder, token, expires_at > now() FROM containment.lease WHERE name = $1`, leaseName).Scan(&holder, &token, &live)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", 0, false, nil
	}
	return holder, token, live, err
}
