// Package store keeps the assessor's data in PostgreSQL (schema assessor):
// audit entries written in batches with COPY, de-duplicated by request id
// and type, hourly aggregates maintained in the same statement, the links
// that tie one token's accessor HMACs across audit devices together, and
// the assessments.
package store

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
	pool, err := migrate.Open(ctx, url, migrations, map[string]string{Schema: "migrations"})
	if err != nil {
		return nil, err
	}
	return &Store{pool: pool}, nil
}

// Close releases the pool.
func (s *Store) Close() { s.pool.Close() }

// Pool exposes the pool (benchmarks, tests).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

var columns = []string{"request_id", "type", "time", "operation", "path", "mount_type", "remote_address", "display_name",
	"entity_id", "accessor", "policies", "error", "tenant", "kind", "pattern_hit", "raw", "device"}

// Insert stores a batch and reports how many entries were new. The usual
// batch holds only new entries: it is COPied straight into the table and
// its hourly counts, computed here, are added to the aggregates. A batch
// that repeats stored entries (the same request seen through a second
// audit device, a replay, a file read again after a restart) makes the
// COPY fail on the primary key; it is then written through a staging
// table that skips what is already there and counts only what is new, and
// a repeat whose accessor differs from the stored one ties the two
// accessors to one token (see Link).
func (s *Store) Insert(ctx context.Context, batch []audit.Entry, patternHit func(audit.Entry) bool) (int64, error) {
	rows := make([][]any, len(batch))
	hits := make([]bool, len(batch))
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
		hits[i] = patternHit(e)
		rows[i] = []any{e.RequestID, e.Type, e.Time, e.Operation, e.Path, e.MountType, e.RemoteAddress, e.DisplayName,
			e.EntityID, e.Accessor, policies, e.Error, e.Tenant, kind, hits[i], string(e.Raw), e.Device}
		if e.RevokedAccessor != "" && e.Type == "response" && e.Error == "" {
			revoked = append(revoked, []any{e.RevokedAccessor, e.Time})
		}
	}
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
	inserted, err := s.copyNew(ctx, tx, batch, rows, hits)
	if err != nil {
		return 0, err
	}
	for _, r := range revoked {
		if _, err := tx.Exec(ctx, `INSERT INTO assessor.revoked_accessors VALUES ($1, $2) ON CONFLICT DO NOTHING`, r...); err != nil {
			return 0, err
		}
	}
	return inserted, tx.Commit(ctx)
}

func (s *Store) copyNew(ctx context.Context, tx pgx.Tx, batch []audit.Entry, rows [][]any, hits []bool) (int64, error) {
	if _, err := tx.Exec(ctx, "SAVEPOINT fast"); err != nil {
		return 0, err
	}
	n, err := tx.CopyFrom(ctx, pgx.Identifier{"assessor", "audit_entries"}, columns, pgx.CopyFromRows(rows))
	if err == nil {
		return n, s.addCounts(ctx, tx, batch, hits)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23505" { // unique_violation
		return 0, fmt.Errorf("copy: %w", err)
	}
	if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT fast"); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS audit_staging (LIKE assessor.audit_entries) ON COMMIT DELETE ROWS`); err != nil {
		return 0, err
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"audit_staging"}, columns, pgx.CopyFromRows(rows)); err != nil {
		return 0, fmt.Errorf("copy staging: %w", err)
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
	// The same request and type under two accessors: one token seen
	// through two devices. Read after the insert, so a repeat within the
	// batch itself is found too.
	linkRows, err := tx.Query(ctx, `SELECT DISTINCT e.accessor, e.device, s.accessor, s.device
		FROM audit_staging s JOIN assessor.audit_entries e USING (request_id, type)
		WHERE s.accessor <> e.accessor AND s.accessor <> '' AND e.accessor <> ''`)
	if err != nil {
		return 0, fmt.Errorf("links: %w", err)
	}
	pairs, err := pgx.CollectRows(linkRows, func(r pgx.CollectableRow) (Link, error) {
		var l Link
		return l, r.Scan(&l.A.Accessor, &l.A.Device, &l.B.Accessor, &l.B.Device)
	})
	if err != nil {
		return 0, fmt.Errorf("links: %w", err)
	}
	if err := link(ctx, tx, pairs); err != nil {
		return 0, fmt.Errorf("links: %w", err)
	}
	return inserted, nil
}

type hourKey struct {
	hour                                            time.Time
	accessor, entity, display, remote, tenant, kind string
}

// addCounts adds the batch's responses to the hourly aggregates: counted
// here, sent as a few thousand rows instead of tens of thousands.
func (s *Store) addCounts(ctx context.Context, tx pgx.Tx, batch []audit.Entry, hits []bool) error {
	type counts struct{ hits, n int64 }
	agg := map[hourKey]*counts{}
	for i, e := range batch {
		if e.Type != "response" {
			continue
		}
		k := hourKey{e.Time.Truncate(time.Hour), e.Accessor, e.EntityID, e.DisplayName, e.RemoteAddress, e.Tenant, string(e.Classify())}
		c := agg[k]
		if c == nil {
			c = &counts{}
			agg[k] = c
		}
		c.n++
		if hits[i] {
			c.hits++
		}
	}
	if len(agg) == 0 {
		return nil
	}
	rows := make([][]any, 0, len(agg))
	for k, c := range agg {
		rows = append(rows, []any{k.hour, k.accessor, k.entity, k.display, k.remote, k.tenant, k.kind, c.hits, c.n})
	}
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS hourly_staging (LIKE assessor.audit_hourly) ON COMMIT DELETE ROWS`); err != nil {
		return err
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"hourly_staging"}, []string{"hour", "accessor", "entity_id", "display_name", "remote_address", "tenant", "kind", "pattern_hits", "count"},
		pgx.CopyFromRows(rows)); err != nil {
		return err
	}
	// Ordered, so that two writers never lock the same rows in opposite orders.
	_, err := tx.Exec(ctx, `INSERT INTO assessor.audit_hourly AS h SELECT * FROM hourly_staging
		ORDER BY hour, accessor, entity_id, display_name, remote_address, tenant, kind
		ON CONFLICT (hour, accessor, entity_id, display_name, remote_address, tenant, kind)
		DO UPDATE SET count = h.count + EXCLUDED.count, pattern_hits = h.pattern_hits + EXCLUDED.pattern_hits`)
	return err
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
