// Package store keeps the notifier's delivery records in PostgreSQL
// (schema notifier) and reads the tenant directory.
package store

import (
	"context"
	"embed"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockdown/lockdown/pkg/platform/directory"
	"github.com/lockdown/lockdown/pkg/platform/migrate"
	"github.com/lockdown/lockdown/services/notifier/internal/notify"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store implements notify.Store.
type Store struct{ pool *pgxpool.Pool }

// Open connects and applies the notifier's and the directory's migrations.
func Open(ctx context.Context, url string) (*Store, error) {
	pool, err := migrate.Open(ctx, url, migrations, map[string]string{"notifier": "migrations"}, directory.Ready)
	if err != nil {
		return nil, err
	}
	return &Store{pool: pool}, nil
}

// Close releases the pool.
func (s *Store) Close() { s.pool.Close() }

// Ping checks the database (readiness).
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// Tenant implements notify.Store.
func (s *Store) Tenant(ctx context.Context, id string) (directory.Tenant, error) {
	return directory.Get(ctx, s.pool, id)
}

// Claim implements notify.Store. The caller owns the send when the row is
// new, or when it is still "sending" but its claim is older than
// staleAfter (the earlier delivery died mid-send); a final row, or a fresh
// claim by a concurrent delivery, is left alone. Row locks make two
// concurrent claims of one row end with one owner.
func (s *Store) Claim(ctx context.Context, incidentID, tenantID, channel string, staleAfter time.Duration) (string, bool, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return "", false, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	tag, err := tx.Exec(ctx, `INSERT INTO notifier.deliveries (incident_id, tenant_id, channel, state) VALUES ($1, $2, $3, 'sending')
		ON CONFLICT DO NOTHING`, incidentID, tenantID, channel)
	if err != nil {
		return "", false, err
	}
	if tag.RowsAffected() == 1 {
		return "", true, tx.Commit(ctx)
	}
	var state string
	var stale bool
	if err := tx.QueryRow(ctx, `SELECT state, claimed_at < now() - $4::interval FROM notifier.deliveries
		WHERE incident_id = $1 AND tenant_id = $2 AND channel = $3 FOR UPDATE`,
		incidentID, tenantID, channel, staleAfter.String()).Scan(&state, &stale); err != nil {
		return "", false, err
	}
	if state != "sending" || !stale {
		return state, false, tx.Commit(ctx)
	}
	if _, err := tx.Exec(ctx, `UPDATE notifier.deliveries SET attempts = attempts + 1, claimed_at = now()
		WHERE incident_id = $1 AND tenant_id = $2 AND channel = $3`, incidentID, tenantID, channel); err != nil {
		return "", false, err
	}
	return state, true, tx.Commit(ctx)
}

// Release implements notify.Store: only a claim still in flight is given
// back, never a final state.
func (s *Store) Release(ctx context.Context, incidentID, tenantID, channel string) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM notifier.deliveries WHERE incident_id = $1 AND tenant_id = $2 AND channel = $3 AND state = 'sending'`,
		incidentID, tenantID, channel)
	return err
}

// Finish implements notify.Store.
func (s *Store) Finish(ctx context.Context, incidentID, tenantID, channel, state, reason string) (bool, error) {
	tag, err := s.pool.Exec(ctx, `INSERT INTO notifier.deliveries AS d (incident_id, tenant_id, channel, state, reason, finished_at)
		VALUES ($1, $2, $3, $4, $5, now())
		ON CONFLICT (incident_id, tenant_id, channel) DO UPDATE SET state = EXCLUDED.state, reason = EXCLUDED.reason, finished_at = now()
		WHERE d.state = 'sending'`,
		incidentID, tenantID, channel, state, reason)
	return tag.RowsAffected() == 1, err
}

// Outcome implements notify.Store; the first outcome stands.
func (s *Store) Outcome(ctx context.Context, incidentID, tenantID, state, reason string) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO notifier.outcomes AS o (incident_id, tenant_id, state, reason) VALUES ($1, $2, $3, $4)
		ON CONFLICT (incident_id, tenant_id) DO UPDATE SET state = EXCLUDED.state, reason = EXCLUDED.reason, decided_at = now()
		WHERE (o.state = 'failed' AND EXCLUDED.state = 'sent') OR (o.state = 'late' AND EXCLUDED.state IN ('sent', 'failed'))`, incidentID, tenantID, state, reason)
	return err
}

// Plan implements notify.Store.
func (s *Store) Plan(ctx context.Context, incidentID string, tenants int) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO notifier.plans (incident_id, tenants) VALUES ($1, $2) ON CONFLICT DO NOTHING`, incidentID, tenants)
	return err
}

// Progress implements notify.Store.
func (s *Store) Progress(ctx context.Context, incidentID string) (notify.Progress, error) {
	var p notify.Progress
	var sent, failed *int
	// One row whatever the incident's size: the counters the database
	// keeps (migration 003), not a count of the outcomes.
	err := s.pool.QueryRow(ctx, `SELECT coalesce(p.tenants, 0), coalesce(c.sent, 0), coalesce(c.failed, 0), coalesce(c.late, 0),
		p.announced_sent, p.announced_failed
		FROM (SELECT $1::text AS incident_id) i
		LEFT JOIN notifier.plans p ON p.incident_id = i.incident_id
		LEFT JOIN notifier.outcome_counts c ON c.incident_id = i.incident_id`, incidentID).Scan(&p.Planned, &p.Sent, &p.Failed, &p.Late, &sent, &failed)
	if errors.Is(err, pgx.ErrNoRows) {
		err = nil
	}
	if sent != nil && failed != nil {
		p.Announced = &[2]int{*sent, *failed}
	}
	return p, err
}

// Announced implements notify.Store.
func (s *Store) Announced(ctx context.Context, incidentID string, sent, failed int) error {
	_, err := s.pool.Exec(ctx, `UPDATE notifier.plans SET announced_at = now(), announced_sent = $2, announced_failed = $3 WHERE incident_id = $1`,
		incidentID, sent, failed)
	return err
}
