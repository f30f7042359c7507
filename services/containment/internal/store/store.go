// Package store keeps containment's incidents in PostgreSQL, in the
// containment schema created by the embedded migrations.
package store

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/migrate"
	"github.com/lockdown/lockdown/services/containment/internal/incident"
)

// Schema is containment's PostgreSQL schema.
const Schema = "containment"

//go:embed migrations/*.sql
var migrations embed.FS

// Store implements incident.Store.
type Store struct{ pool *pgxpool.Pool }

// Open connects and applies the migrations.
func Open(ctx context.Context, databaseURL string) (*Store, error) {
	pool, err := migrate.Open(ctx, databaseURL, migrations, map[string]string{Schema: "migrations"})
	if err != nil {
		return nil, err
	}
	return &Store{pool: pool}, nil
}

// Ping checks the database (readiness).
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// Close releases the connections.
func (s *Store) Close() { s.pool.Close() }

const incidentColumns = `id, opened_by_event, detected_at, breach_published_at, severity, summary, source, phase, opened_at,
	sealed_at, unsealed_at, seal_round, gate, trace_parent, (SELECT count(*) FROM containment.detections d WHERE d.incident_id = i.id)`

func scanIncident(row pgx.Row) (incident.Incident, error) {
	var inc incident.Incident
	var id uuid.UUID
	var sealedAt, unsealedAt *time.Time
	var gate []byte
	var sev, phase string
	if err := row.Scan(&id, &inc.OpenedBy, &inc.DetectedAt, &inc.BreachPublishedAt, &sev, &inc.Summary, &inc.Source, &phase, &inc.OpenedAt,
		&sealedAt, &unsealedAt, &inc.SealRound, &gate, &inc.TraceParent, &inc.Detections); err != nil {
		return incident.Incident{}, err
	}
	inc.ID, inc.Severity, inc.Phase = id.String(), events.Severity(sev), incident.Phase(phase)
	if sealedAt != nil {
		inc.SealedAt = *sealedAt
	}
	if unsealedAt != nil {
		inc.UnsealedAt = *unsealedAt
	}
	if err := json.Unmarshal(gate, &inc.Gate); err != nil {
		return incident.Incident{}, fmt.Errorf("gate: %w", err)
	}
	return inc, nil
}

// RecordDetection implements incident.Store. Detections are serialised by
// an advisory lock: two breach events arriving together must not both see
// "no open incident".
func (s *Store) RecordDetection(ctx context.Context, d incident.Detection) (incident.Incident, incident.Outcome, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return incident.Incident{}, "", err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('lockdown-containment-detections'))`); err != nil {
		return incident.Incident{}, "", err
	}
	var existing uuid.UUID
	err = tx.QueryRow(ctx, `SELECT incident_id FROM containment.detections WHERE event_id = $1`, d.EventID).Scan(&existing)
	if err == nil {
		inc, err := scanIncident(tx.QueryRow(ctx, `SELECT `+incidentColumns+` FROM containment.incidents i WHERE id = $1`, existing))
		return inc, incident.Duplicate, err
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return incident.Incident{}, "", err
	}
	outcome := incident.Attached
	inc, err := scanIncident(tx.QueryRow(ctx, `SELECT `+incidentColumns+` FROM containment.incidents i
		WHERE phase NOT IN ('resolved', 'failed') FOR UPDATE`))
	if errors.Is(err, pgx.ErrNoRows) {
		outcome = incident.Opened
		id := uuid.New()
		_, err = tx.Exec(ctx, `INSERT INTO containment.incidents (id, opened_by_event, detected_at, breach_published_at, severity, summary, source, phase, trace_parent)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			id, d.EventID, d.Breach.DetectedAt, d.Time, string(d.Breach.Severity), d.Breach.Summary, d.Source, string(incident.PhaseContaining), d.TraceParent)
		if err == nil {
			inc, err = scanIncident(tx.QueryRow(ctx, `SELECT `+incidentColumns+` FROM containment.incidents i WHERE id = $1`, id))
		}
	}
	if err != nil {
		return incident.Incident{}, "", err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO containment.detections (event_id, incident_id, source, severity, summary, detected_at, published_at, outcome)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		d.EventID, inc.ID, d.Source, string(d.Breach.Severity), d.Breach.Summary, d.Breach.DetectedAt, d.Time, string(outcome)); err != nil {
		return incident.Incident{}, "", err
	}
	inc.Detections++
	return inc, outcome, tx.Commit(ctx)
}

// StartSealRound implements incident.Store.
func (s *Store) StartSealRound(ctx context.Context, incidentID string) (int, error) {
	var round int
	err := s.pool.QueryRow(ctx, `UPDATE containment.incidents SET seal_round = seal_round + 1, phase = $2
		WHERE id = $1 AND phase NOT IN ('resolved', 'failed') RETURNING seal_round`, incidentID, string(incident.PhaseContaining)).Scan(&round)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("incident %s is closed: %w", incidentID, incident.ErrNoOpenIncident)
	}
	return round, err
}

// RecordSealed implements incident.Store.
func (s *Store) RecordSealed(ctx context.Context, incidentID string, round int, seals []events.NodeSeal, at time.Time) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	for _, n := range seals {
		var requested *time.Time
		if !n.RequestedAt.IsZero() {
			requested = &n.RequestedAt
		}
		if _, err := tx.Exec(ctx, `INSERT INTO containment.node_seals (incident_id, round, address, method, requested_at, confirmed_at)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`, incidentID, round, n.Address, n.Method, requested, n.ConfirmedAt); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE containment.incidents SET phase = $2, sealed_at = $3, unsealed_at = NULL
		WHERE id = $1 AND phase NOT IN ('resolved', 'failed')`,
		incidentID, string(incident.PhaseSealed), at); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// RecordGate implements incident.Store.
func (s *Store) RecordGate(ctx context.Context, incidentID string, gate []incident.NodeStatus) error {
	b, err := json.Marshal(gate)
	if err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx, `UPDATE containment.incidents SET gate = $2 WHERE id = $1`, incidentID, b)
	return err
}

// RecordUnsealed implements incident.Store.
func (s *Store) RecordUnsealed(ctx context.Context, incidentID string, at time.Time) error {
	// Only a sealed incident passes the gate: a late watcher must not
	// reopen an incident that was resolved meanwhile.
	_, err := s.pool.Exec(ctx, `UPDATE containment.incidents SET phase = $2, unsealed_at = $3 WHERE id = $1 AND phase = 'sealed'`,
		incidentID, string(incident.PhaseUnsealed), at)
	return err
}

// OpenIncident implements incident.Store.
func (s *Store) OpenIncident(ctx context.Context) (incident.Incident, error) {
	inc, err := scanIncident(s.pool.QueryRow(ctx, `SELECT `+incidentColumns+` FROM containment.incidents i WHERE phase NOT IN ('resolved', 'failed')`))
	if errors.Is(err, pgx.ErrNoRows) {
		return incident.Incident{}, incident.ErrNoOpenIncident
	}
	return inc, err
}

// IncidentForEvent returns the incident a breach event was recorded in.
func (s *Store) IncidentForEvent(ctx context.Context, eventID string) (string, error) {
	var id uuid.UUID
	err := s.pool.QueryRow(ctx, `SELECT incident_id FROM containment.detections WHERE event_id = $1`, eventID).Scan(&id)
	if err != nil {
		return "", err
	}
	return id.String(), nil
}

// Resolve ends an incident (used by the benchmark and, later, by the
// resolution phase).
func (s *Store) Resolve(ctx context.Context, incidentID string, at time.Time) error {
	_, err := s.pool.Exec(ctx, `UPDATE containment.incidents SET phase = $2, resolved_at = $3 WHERE id = $1`,
		incidentID, string(incident.PhaseResolved), at)
	return err
}
