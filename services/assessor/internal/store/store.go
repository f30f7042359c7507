// Package store keeps the assessor's data in PostgreSQL (schema assessor):
// audit entries written in batches with COPY, de-duplicated by request id
// and type, hourly aggregates maintained in the same statement, and the
// assessments.
package store

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockdown/lockdown/pkg/platform/migrate"
	"github.com/lockdown/lockdown/services/assessor/internal/audit"
)

// Schema is the assessor's PostgreSQL schema.
const Schema = "assessor"

//go:embed migrations/*.sql
var migrations embed.FS

// Store is the assessor's database.
type Store struct{ pool *pgxpool.Pool }

// Open connects and applies the migrations.
func Open(ctx context.Context, url string) (*Store, error) {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	sub, _ := fs.Sub(migrations, "migrations")
	if _, err := migrate.Apply(ctx, pool, Schema, sub); err != nil {
		pool.Close()
		return nil, err
	}
	return &Store{pool: pool}, nil
}

// Close releases the pool.
func (s *Store) Close() { s.pool.Close() }

// Pool exposes the pool (benchmarks, tests).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

var columns = []string{"request_id", "type", "time", "operation", "path", "mount_type", "remote_address", "display_name",
	"entity_id", "accessor", "policies", "error", "tenant", "kind", "pattern_hit", "raw"}

// Insert stores a batch: COPY into a session staging table, then one
// statement inserts the new entries (a replayed or re-read entry is
// skipped by its primary key) and adds them to the hourly aggregates, and
// one records revoked accessors. It returns how many entries were new.
func (s *Store) Insert(ctx context.Context, batch []audit.Entry, patternHit func(audit.Entry) bool) (int64, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS audit_staging (LIKE assessor.audit_entries) ON COMMIT DELETE ROWS`); err != nil {
		return 0, err
	}
	rows := make([][]any, len(batch))
	var revoked [][]any
	for i, e := range batch {
		kind := ""
		if e.Type == "response" {
			kind = string(e.Classify())
		}
		policies := e.Policies
		if policies == nil {
			policies = []string{}
		}
		rows[i] = []any{e.RequestID, e.Type, e.Time, e.Operation, e.Path, e.MountType, e.RemoteAddress, e.DisplayName,
			e.EntityID, e.Accessor, policies, e.Error, e.Tenant, kind, patternHit(e), string(e.Raw)}
		if e.RevokedAccessor != "" && e.Type == "response" && e.Error == "" {
			revoked = append(revoked, []any{e.RevokedAccessor, e.Time})
		}
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"audit_staging"}, columns, pgx.CopyFromRows(rows)); err != nil {
		return 0, fmt.Errorf("copy: %w", err)
	}
	var inserted int64
	err = tx.QueryRow(ctx, `
WITH ins AS (
    -- DO NOTHING also skips a repeat within the batch itself.
    INSERT INTO assessor.audit_entries
    SELECT * FROM audit_staging
    ON CONFLICT (request_id, type) DO NOTHING
    RETURNING time, type, accessor, entity_id, display_name, remote_address, tenant, kind, pattern_hit
), agg AS (
    INSERT INTO assessor.audit_hourly AS h (hour, accessor, entity_id, display_name, remote_address, tenant, kind, pattern_hits, count)
    SELECT date_trunc('hour', time), accessor, entity_id, display_name, remote_address, tenant, kind,
           count(*) FILTER (WHERE pattern_hit), count(*)
    FROM ins WHERE type = 'response'
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (hour, accessor, entity_id, display_name, remote_address, tenant, kind)
    DO UPDATE SET count = h.count + EXCLUDED.count, pattern_hits = h.pattern_hits + EXCLUDED.pattern_hits
)
SELECT count(*) FROM ins`).Scan(&inserted)
	if err != nil {
		return 0, fmt.Errorf("insert: %w", err)
	}
	for _, r := range revoked {
		if _, err := tx.Exec(ctx, `INSERT INTO assessor.revoked_accessors VALUES ($1, $2) ON CONFLICT DO NOTHING`, r...); err != nil {
			return 0, err
		}
	}
	return inserted, tx.Commit(ctx)
}

// Count is one group of responses: an actor, a tenant, a kind.
type Count struct {
	Accessor, EntityID, DisplayName, RemoteAddress, Tenant string
	Kind                                                   audit.Kind
	PatternHits, Count                                     int64
}

// Counts returns the response counts of [start, end) grouped by actor,
// tenant and kind: whole hours from the aggregates, the partial hours at
// both edges from the entries themselves.
func (s *Store) Counts(ctx context.Context, start, end time.Time) ([]Count, error) {
	firstFull := start.Truncate(time.Hour)
	if firstFull.Before(start) {
		firstFull = firstFull.Add(time.Hour)
	}
	lastFull := end.Truncate(time.Hour)
	var q string
	var args []any
	if !firstFull.Before(lastFull) {
		// The window lies within one or two partial hours: entries only.
		q, args = rawCounts+` WHERE type = 'response' AND time >= $1 AND time < $2 GROUP BY 1, 2, 3, 4, 5, 6`, []any{start, end}
	} else {
		q = `SELECT accessor, entity_id, display_name, remote_address, tenant, kind, sum(pattern_hits)::bigint, sum(count)::bigint
		FROM assessor.audit_hourly WHERE hour >= $1 AND hour < $2 GROUP BY 1, 2, 3, 4, 5, 6
		UNION ALL ` + rawCounts + ` WHERE type = 'response' AND ((time >= $3 AND time < $1) OR (time >= $2 AND time < $4)) GROUP BY 1, 2, 3, 4, 5, 6`
		args = []any{firstFull, lastFull, start, end}
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Count, error) {
		var c Count
		var kind string
		err := r.Scan(&c.Accessor, &c.EntityID, &c.DisplayName, &c.RemoteAddress, &c.Tenant, &kind, &c.PatternHits, &c.Count)
		c.Kind = audit.Kind(kind)
		return c, err
	})
}

const rawCounts = `SELECT accessor, entity_id, display_name, remote_address, tenant, kind,
	count(*) FILTER (WHERE pattern_hit), count(*) FROM assessor.audit_entries`

// RevokedSince returns the accessors revoked at or after t.
func (s *Store) RevokedSince(ctx context.Context, t time.Time) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT accessor FROM assessor.revoked_accessors WHERE time >= $1`, t)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Event is one listed audit response.
type Event struct {
	Time        time.Time `json:"time"`
	Path        string    `json:"path"`
	Operation   string    `json:"operation"`
	Accessor    string    `json:"accessor"`
	DisplayName string    `json:"display_name"`
	Error       string    `json:"error,omitempty"`
	Tenant      string    `json:"tenant,omitempty"`
}

// Suspicious lists up to limit errors and pattern hits of the window.
func (s *Store) Suspicious(ctx context.Context, start, end time.Time, limit int) ([]Event, error) {
	return s.events(ctx, `SELECT time, path, operation, accessor, display_name, error, tenant FROM assessor.audit_entries
		WHERE type = 'response' AND (kind IN ('denied', 'error') OR pattern_hit) AND time >= $1 AND time < $2 ORDER BY time LIMIT $3`, start, end, limit)
}

// Reads lists up to limit successful tenant-secret reads of the given
// actors in the window.
func (s *Store) Reads(ctx context.Context, accessors []string, start, end time.Time, limit int) ([]Event, error) {
	return s.events(ctx, `SELECT time, path, operation, accessor, display_name, error, tenant FROM assessor.audit_entries
		WHERE type = 'response' AND kind = 'read' AND accessor = ANY($4) AND time >= $1 AND time < $2 ORDER BY time LIMIT $3`, start, end, limit, accessors)
}

func (s *Store) events(ctx context.Context, q string, args ...any) ([]Event, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Event, error) {
		var e Event
		err := r.Scan(&e.Time, &e.Path, &e.Operation, &e.Accessor, &e.DisplayName, &e.Error, &e.Tenant)
		return e, err
	})
}

// SaveAssessment stores an assessment (replacing an earlier one of the
// same incident: a redelivered event re-assesses).
func (s *Store) SaveAssessment(ctx context.Context, incidentID string, result any) error {
	raw, err := json.Marshal(result)
	if err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO assessor.assessments (incident_id, result) VALUES ($1, $2)
		ON CONFLICT (incident_id) DO UPDATE SET result = EXCLUDED.result, completed_at = now()`, incidentID, raw)
	return err
}
