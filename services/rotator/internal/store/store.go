// Package store keeps the rotator's state in PostgreSQL: the tenant
// directory (schema directory) and the plans and jobs (schema rotator),
// with the rotator's outbox.
package store

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/pkg/platform/directory"
	"github.com/lockdown/lockdown/pkg/platform/migrate"
	"github.com/lockdown/lockdown/pkg/platform/outbox"
	"github.com/lockdown/lockdown/services/rotator/internal/rotation"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Schema is the rotator's PostgreSQL schema.
const Schema = "rotator"

// Preparer turns an event into the message its publish would send (the
// stream publisher): the store writes it to the outbox.
type Preparer interface {
	Prepare(ctx context.Context, name events.Name, id string, data any) (*nats.Msg, error)
}

// Store implements rotation.Store.
type Store struct {
	pool *pgxpool.Pool
	prep Preparer
}

// Open connects, applies both schemas' migrations and creates the outbox.
// Events can be written once SetPreparer has been called.
func Open(ctx context.Context, url string) (*Store, error) {
	pool, err := migrate.Open(ctx, url, migrations, map[string]string{Schema: "migrations"}, directory.Ready, outbox.Step(Schema))
	if err != nil {
		return nil, err
	}
	return &Store{pool: pool}, nil
}

// SetPreparer sets how events become outbox messages.
func (s *Store) SetPreparer(p Preparer) { s.prep = p }

// Close releases the pool.
func (s *Store) Close() { s.pool.Close() }

// Pool exposes the pool (tests, seeding).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Gate implements rotation.Store: it records one condition and reports
// whether both hold now.
func (s *Store) Gate(ctx context.Context, incidentID string, assessed, revoked bool, affected rotation.Affected) (bool, rotation.Affected, error) {
	if affected.Tenants == nil {
		affected.Tenants = []string{}
	}
	var a, r bool
	var aff rotation.Affected
	err := s.pool.QueryRow(ctx, `INSERT INTO rotator.gates AS g (incident_id, assessed, revoked, affected, affected_cut) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (incident_id) DO UPDATE SET assessed = g.assessed OR EXCLUDED.assessed, revoked = g.revoked OR EXCLUDED.revoked,
		  affected = CASE WHEN EXCLUDED.assessed THEN EXCLUDED.affected ELSE g.affected END,
		  affected_cut = CASE WHEN EXCLUDED.assessed THEN EXCLUDED.affected_cut ELSE g.affected_cut END
		RETURNING assessed, revoked, affected, affected_cut`, incidentID, assessed, revoked, affected.Tenants, affected.Cut).Scan(&a, &r, &aff.Tenants, &aff.Cut)
	return a && r, aff, err
}

// Tenants implements rotation.Store: the whole directory, in id order.
func (s *Store) Tenants(ctx context.Context) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT id FROM directory.tenants ORDER BY id`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Directory implements rotation.Store.
func (s *Store) Directory(ctx context.Context, tenantID string) (rotation.TenantDNS, error) {
	t := rotation.TenantDNS{Known: true}
	err := s.pool.QueryRow(ctx, `SELECT domain, coalesce(dkim_delegation, '') FROM directory.tenants WHERE id = $1`, tenantID).Scan(&t.Domain, &t.Delegation)
	if errors.Is(err, pgx.ErrNoRows) {
		return rotation.TenantDNS{}, nil
	}
	return t, err
}

// Awaiting implements rotation.Store: the jobs are locked with SKIP LOCKED
// in one transaction, so rotator processes checking at the same time take
// different tenants, and each job's new steps and events commit together.
func (s *Store) Awaiting(ctx context.Context, limit int, each func(rotation.Awaiting) (*rotation.Steps, []events.Outgoing, error)) (int, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	rows, err := tx.Query(ctx, `SELECT j.incident_id, j.tenant_id, coalesce(t.domain, ''), j.steps FROM rotator.jobs j
		LEFT JOIN directory.tenants t ON t.id = j.tenant_id
		WHERE j.state = 'completed' AND (j.steps #>> $2)::boolean
		ORDER BY j.updated_at LIMIT $1 FOR UPDATE OF j SKIP LOCKED`, limit, rotation.AwaitingDNSPath())
	if err != nil {
		return 0, err
	}
	found, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (rotation.Awaiting, error) {
		var a rotation.Awaiting
		var raw []byte
		if err := r.Scan(&a.IncidentID, &a.TenantID, &a.Domain, &raw); err != nil {
			return a, err
		}
		return a, json.Unmarshal(raw, &a.Steps)
	})
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, a := range found {
		steps, out, err := each(a)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s/%s: %w", a.IncidentID, a.TenantID, err))
			continue
		}
		if steps == nil {
			continue
		}
		raw, err := json.Marshal(steps)
		if err != nil {
			return 0, err
		}
		if _, err := tx.Exec(ctx, `UPDATE rotator.jobs SET steps = $3, updated_at = now() WHERE incident_id = $1 AND tenant_id = $2`, a.IncidentID, a.TenantID, raw); err != nil {
			return 0, err
		}
		if err := s.emit(ctx, tx, out); err != nil {
			return 0, err
		}
	}
	return len(found), errors.Join(append([]error{tx.Commit(ctx)}, errs...)...)
}

// SavePlan implements rotation.Store: the plan, its job rows and the
// events announcing them, once.
func (s *Store) SavePlan(ctx context.Context, incidentID, policy string, jobs []rotation.Job, platform []rotation.PlatformJob, emit []events.Outgoing) (bool, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	tag, err := tx.Exec(ctx, `INSERT INTO rotator.plans (incident_id, policy, tenants, platform) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
		incidentID, policy, len(jobs), len(platform))
	if err != nil {
		return false, err
	}
	if tag.RowsAffected() == 0 {
		return false, nil // planned before: its jobs and events are stored
	}
	rows := make([][]any, len(jobs))
	for i, j := range jobs {
		state, reason := rotation.StatePending, ""
		if j.Invalid != "" {
			state, reason = rotation.StateFailed, "plan: "+j.Invalid
		}
		rows[i] = []any{incidentID, j.TenantID, j.Affected, state, reason}
	}
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS job_plan_staging (incident_id text, tenant_id text, affected boolean, state text, reason text) ON COMMIT DELETE ROWS`); err != nil {
		return false, err
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"job_plan_staging"}, []string{"incident_id", "tenant_id", "affected", "state", "reason"}, pgx.CopyFromRows(rows)); err != nil {
		return false, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO rotator.jobs (incident_id, tenant_id, affected, state, reason) SELECT * FROM job_plan_staging ON CONFLICT DO NOTHING`); err != nil {
		return false, err
	}
	for _, p := range platform {
		if _, err := tx.Exec(ctx, `INSERT INTO rotator.platform_jobs (incident_id, entry, kind) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
			incidentID, p.Entry, string(p.Kind)); err != nil {
			return false, err
		}
	}
	if err := s.emit(ctx, tx, emit); err != nil {
		return false, err
	}
	return true, tx.Commit(ctx)
}

// StartJob implements rotation.Store: the write ids are merged into what
// is recorded (jsonb ||, so concurrent attempts keep each other's) and the
// job read back, with the tenant's presence in the directory, in one
// statement.
func (s *Store) StartJob(ctx context.Context, incidentID, tenantID string, writes map[string]rotation.SecretStep) (rotation.JobState, error) {
	var st rotation.JobState
	raw, err := json.Marshal(writes)
	if err != nil {
		return st, err
	}
	var steps []byte
	err = s.pool.QueryRow(ctx, `WITH j AS (
		INSERT INTO rotator.jobs (incident_id, tenant_id, writes) VALUES ($1, $2, $3)
		ON CONFLICT (incident_id, tenant_id) DO UPDATE SET writes = rotator.jobs.writes || EXCLUDED.writes
		RETURNING state, steps, reason)
		SELECT j.state, j.steps, j.reason, EXISTS (SELECT 1 FROM directory.tenants WHERE id = $2) FROM j`, incidentID, tenantID, raw).
		Scan(&st.State, &steps, &st.Reason, &st.TenantKnown)
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(steps, &st.Steps)
}

// SaveSteps implements rotation.Store: the write ids are merged as
// StartJob merges them, in the same statement.
func (s *Store) SaveSteps(ctx context.Context, incidentID, tenantID string, steps rotation.Steps, writes map[string]rotation.SecretStep) error {
	raw, err := json.Marshal(steps)
	if err != nil {
		return err
	}
	if len(writes) == 0 {
		// The write ids untouched: a row's writes (public keys, DKIM
		// records) are rewritten only when one is added.
		_, err = s.pool.Exec(ctx, `INSERT INTO rotator.jobs (incident_id, tenant_id, steps) VALUES ($1, $2, $3)
			ON CONFLICT (incident_id, tenant_id) DO UPDATE SET steps = EXCLUDED.steps, updated_at = now()`, incidentID, tenantID, raw)
		return err
	}
	ids, err := json.Marshal(writes)
	if err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO rotator.jobs (incident_id, tenant_id, steps, writes) VALUES ($1, $2, $3, $4)
		ON CONFLICT (incident_id, tenant_id) DO UPDATE SET steps = EXCLUDED.steps, writes = rotator.jobs.writes || EXCLUDED.writes, updated_at = now()`,
		incidentID, tenantID, raw, ids)
	return err
}

// Steps implements rotation.Store.
func (s *Store) Steps(ctx context.Context, incidentID, tenantID string) (rotation.Steps, error) {
	var steps rotation.Steps
	var raw []byte
	err := s.pool.QueryRow(ctx, `SELECT steps FROM rotator.jobs WHERE incident_id = $1 AND tenant_id = $2`, incidentID, tenantID).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && raw == nil) {
		return steps, nil
	}
	if err != nil {
		return steps, err
	}
	return steps, json.Unmarshal(raw, &steps)
}

// Write implements rotation.Store.
func (s *Store) Write(ctx context.Context, incidentID, tenantID, writeID string) (rotation.SecretStep, bool, error) {
	var raw []byte
	err := s.pool.QueryRow(ctx, `SELECT writes->$3 FROM rotator.jobs WHERE incident_id = $1 AND tenant_id = $2`, incidentID, tenantID, writeID).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && raw == nil) {
		return rotation.SecretStep{}, false, nil
	}
	if err != nil {
		return rotation.SecretStep{}, false, err
	}
	var step rotation.SecretStep
	return step, true, json.Unmarshal(raw, &step)
}

// Finish implements rotation.Store: the job's final state, the plan's
// progress and the events, in one transaction serialised per plan.
func (s *Store) Finish(ctx context.Context, incidentID, tenantID, state, reason string, steps *rotation.Steps, emit func(rotation.Progress) []events.Outgoing) error {
	var raw []byte
	if steps != nil {
		var err error
		if raw, err = json.Marshal(steps); err != nil {
			return err
		}
	}
	tx, err := s.lockPlan(ctx, incidentID)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	tag, err := tx.Exec(ctx, `INSERT INTO rotator.jobs (incident_id, tenant_id, state, reason, steps) VALUES ($1, $2, $3, $4, coalesce($5::jsonb, '{}'))
		ON CONFLICT (incident_id, tenant_id) DO UPDATE SET state = EXCLUDED.state, reason = EXCLUDED.reason,
		  steps = coalesce($5::jsonb, rotator.jobs.steps), updated_at = now()
		WHERE rotator.jobs.state = 'pending'`, incidentID, tenantID, state, reason, raw)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return nil // final before: its events went out with that record
	}
	return s.finishPlan(ctx, tx, incidentID, emit)
}

// finishPlan reads the plan's progress in the transaction that made a job
// final (under the plan's lock), writes the events emit returns, and
// commits.
func (s *Store) finishPlan(ctx context.Context, tx pgx.Tx, incidentID string, emit func(rotation.Progress) []events.Outgoing) error {
	p, err := progress(ctx, tx, incidentID)
	if err != nil {
		return err
	}
	if err := s.emit(ctx, tx, emit(p)); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// StartPlatform implements rotation.Store: the entry's row as the plan
// wrote it; none (ok false) for an entry the incident's plan does not have.
func (s *Store) StartPlatform(ctx context.Context, incidentID, entry string, kind credentials.Kind) (string, []byte, bool, error) {
	var state string
	var record []byte
	err := s.pool.QueryRow(ctx, `SELECT state, record FROM rotator.platform_jobs WHERE incident_id = $1 AND entry = $2 AND kind = $3`,
		incidentID, entry, string(kind)).Scan(&state, &record)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil, false, nil
	}
	return state, record, err == nil, err
}

// SavePlatform implements rotation.Store.
func (s *Store) SavePlatform(ctx context.Context, incidentID, entry string, record []byte) error {
	_, err := s.pool.Exec(ctx, `UPDATE rotator.platform_jobs SET record = $3, updated_at = now() WHERE incident_id = $1 AND entry = $2`, incidentID, entry, record)
	return err
}

// lockPlan begins a transaction holding the incident's plan row: jobs of
// one plan (the tenants' and the platform's) finish one after another, so
// each sees the others' final states and the last one knows it is the
// last. The caller rolls it back (a no-op after its commit).
func (s *Store) lockPlan(ctx context.Context, incidentID string) (pgx.Tx, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM rotator.plans WHERE incident_id = $1 FOR UPDATE`, incidentID); err != nil {
		_ = tx.Rollback(ctx) // the lock's error is the one to return
		return nil, err
	}
	return tx, nil
}

// FinishPlatform implements rotation.Store.
func (s *Store) FinishPlatform(ctx context.Context, incidentID, entry, state, reason string, emit func(rotation.Progress) []events.Outgoing) error {
	tx, err := s.lockPlan(ctx, incidentID)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	tag, err := tx.Exec(ctx, `UPDATE rotator.platform_jobs SET state = $3, reason = $4, updated_at = now()
		WHERE incident_id = $1 AND entry = $2 AND state = 'pending'`, incidentID, entry, state, reason)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return nil // final before: its events went out with that record
	}
	return s.finishPlan(ctx, tx, incidentID, emit)
}

// emit writes events to the outbox in the caller's transaction.
func (s *Store) emit(ctx context.Context, tx pgx.Tx, out []events.Outgoing) error {
	if len(out) == 0 {
		return nil
	}
	if s.prep == nil {
		return errors.New("store: no preparer set: events cannot be written")
	}
	msgs := make([]*nats.Msg, len(out))
	for i, o := range out {
		m, err := s.prep.Prepare(ctx, o.Name, o.ID, o.Data)
		if err != nil {
			return fmt.Errorf("prepare %s: %w", o.Name, err)
		}
		msgs[i] = m
	}
	return outbox.Add(ctx, tx, Schema, msgs...)
}

// progressQuery reads a plan's progress: the counters the database keeps
// per incident (migration 006), the tenants' jobs and in pending the
// platform entries' too. One row whatever the plan's size.
const progressQuery = `SELECT coalesce(pl.tenants, 0), coalesce(c.completed, 0), coalesce(c.failed, 0),
	coalesce(c.pending, 0) + coalesce(c.platform_pending, 0), coalesce(pl.retries, 0),
	coalesce(c.platform_completed, 0), coalesce(c.platform_failed, 0)
	FROM (SELECT $1::text AS incident_id) i
	LEFT JOIN rotator.plans pl ON pl.incident_id = i.incident_id
	LEFT JOIN rotator.progress c ON c.incident_id = i.incident_id`

// querier is a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func progress(ctx context.Context, q querier, incidentID string) (rotation.Progress, error) {
	var p rotation.Progress
	err := q.QueryRow(ctx, progressQuery, incidentID).Scan(&p.Planned, &p.Completed, &p.Failed, &p.Pending, &p.Retries, &p.PlatformCompleted, &p.PlatformFailed)
	return p, err
}

// Progress implements rotation.Store (and the status command's query).
func (s *Store) Progress(ctx context.Context, incidentID string) (rotation.Progress, error) {
	return progress(ctx, s.pool, incidentID)
}

// Retry implements rotation.Store.
func (s *Store) Retry(ctx context.Context, incidentID, tenantID string, emit func(int, []rotation.Job, []rotation.PlatformJob) []events.Outgoing) ([]rotation.Job, []rotation.PlatformJob, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	var retry int
	err = tx.QueryRow(ctx, `UPDATE rotator.plans SET retries = retries + 1 WHERE incident_id = $1 RETURNING retries`, incidentID).Scan(&retry)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, fmt.Errorf("%w: incident %s has no rotation plan", rotation.ErrNothingToRetry, incidentID)
	}
	if err != nil {
		return nil, nil, err
	}
	rows, err := tx.Query(ctx, `UPDATE rotator.jobs SET state = 'pending', reason = '', updated_at = now()
		WHERE incident_id = $1 AND state = 'failed' AND ($2 = '' OR tenant_id = $2) RETURNING tenant_id, affected`, incidentID, tenantID)
	if err != nil {
		return nil, nil, err
	}
	jobs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (rotation.Job, error) {
		var j rotation.Job
		return j, r.Scan(&j.TenantID, &j.Affected)
	})
	if err != nil {
		return nil, nil, err
	}
	rows, err = tx.Query(ctx, `UPDATE rotator.platform_jobs SET state = 'pending', reason = '', updated_at = now()
		WHERE incident_id = $1 AND state = 'failed' AND $2 = '' RETURNING entry, kind`, incidentID, tenantID)
	if err != nil {
		return nil, nil, err
	}
	platform, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (rotation.PlatformJob, error) {
		var p rotation.PlatformJob
		var kind string
		err := r.Scan(&p.Entry, &kind)
		p.Kind = credentials.Kind(kind)
		return p, err
	})
	if err != nil {
		return nil, nil, err
	}
	if len(jobs)+len(platform) == 0 {
		return nil, nil, fmt.Errorf("%w: nothing failed (tenant %q) in incident %s", rotation.ErrNothingToRetry, tenantID, incidentID)
	}
	if err := s.emit(ctx, tx, emit(retry, jobs, platform)); err != nil {
		return nil, nil, err
	}
	return jobs, platform, tx.Commit(ctx)
}
