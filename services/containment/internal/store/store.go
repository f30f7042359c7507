// Package store keeps containment's incidents in PostgreSQL, in the
// containment schema created by the embedded migrations.
package store

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/migrate"
	"github.com/lockdown/lockdown/pkg/platform/outbox"
	"github.com/lockdown/lockdown/services/containment/internal/audit"
	"github.com/lockdown/lockdown/services/containment/internal/incident"
	"github.com/lockdown/lockdown/services/containment/internal/reporting"
	"github.com/lockdown/lockdown/services/containment/internal/timeline"
)

// Schema is containment's PostgreSQL schema.
const Schema = "containment"

//go:embed migrations/*.sql
var migrations embed.FS

// Preparer turns an event into the message its publish would send (the
// stream publisher): the store writes it to the outbox.
type Preparer interface {
	Prepare(ctx context.Context, name events.Name, id string, data any) (*nats.Msg, error)
}

// Store implements incident.Store, engine.Store and timeline.Store.
type Store struct {
	pool *pgxpool.Pool
	prep Preparer
	// onChange is told of every committed change (SetOnChange); atomic:
	// tests share one store between containment instances.
	onChange atomic.Pointer[func()]
}

// Open connects, applies the migrations and creates the outbox table.
// Events can be written once SetPreparer has been called.
func Open(ctx context.Context, databaseURL string) (*Store, error) {
	pool, err := migrate.Open(ctx, databaseURL, migrations, map[string]string{Schema: "migrations"}, outbox.Step(Schema))
	if err != nil {
		return nil, err
	}
	return &Store{pool: pool}, nil
}

// SetPreparer sets how events become outbox messages.
func (s *Store) SetPreparer(p Preparer) { s.prep = p }

// Pool is the connection pool (the outbox relay, tests).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Ping checks the database (readiness).
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// Close releases the connections.
func (s *Store) Close() { s.pool.Close() }

const incidentColumns = `id, opened_by_event, detected_at, breach_published_at, severity, summary, source, phase, opened_at,
	sealed_at, unsealed_at, seal_round, gate, trace_parent, version, round_sealed, round_breach_at, stuck_reason, stuck_since,
	redrives, failure_reason, (SELECT count(*) FROM containment.detections d WHERE d.incident_id = i.id)`

func scanIncident(row pgx.Row) (incident.Incident, error) {
	var inc incident.Incident
	var id uuid.UUID
	var sealedAt, unsealedAt, roundBreachAt, stuckSince *time.Time
	var gate []byte
	var sev, phase string
	if err := row.Scan(&id, &inc.OpenedBy, &inc.DetectedAt, &inc.BreachPublishedAt, &sev, &inc.Summary, &inc.Source, &phase, &inc.OpenedAt,
		&sealedAt, &unsealedAt, &inc.SealRound, &gate, &inc.TraceParent, &inc.Version, &inc.RoundSealed, &roundBreachAt, &inc.StuckReason, &stuckSince,
		&inc.Redrives, &inc.FailureReason, &inc.Detections); err != nil {
		return incident.Incident{}, err
	}
	inc.ID, inc.Severity, inc.Phase = id.String(), events.Severity(sev), incident.Phase(phase)
	for _, t := range []struct {
		src *time.Time
		dst *time.Time
	}{{sealedAt, &inc.SealedAt}, {unsealedAt, &inc.UnsealedAt}, {roundBreachAt, &inc.RoundBreachAt}, {stuckSince, &inc.StuckSince}} {
		if t.src != nil {
			*t.dst = *t.src
		}
	}
	if inc.RoundBreachAt.IsZero() {
		inc.RoundBreachAt = inc.BreachPublishedAt
	}
	if err := json.Unmarshal(gate, &inc.Gate); err != nil {
		return incident.Incident{}, fmt.Errorf("gate: %w", err)
	}
	return inc, nil
}

// RecordBreach implements incident.Store. Detections are serialised by a
// lock of the detections table: two breach events arriving together must
// not both see "no open incident".
func (s *Store) RecordBreach(ctx context.Context, d incident.Detection, seals []events.NodeSeal,
	emit func(incident.Incident, incident.Outcome, bool) []events.Outgoing) (incident.Incident, incident.Outcome, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return incident.Incident{}, "", err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	// A table lock only containment's role may take (an advisory lock any
	// role of the database could take and hold, stopping every breach from
	// being recorded); it conflicts with itself and not with readers.
	if _, err := tx.Exec(ctx, `LOCK TABLE containment.detections IN SHARE ROW EXCLUSIVE MODE`); err != nil {
		return incident.Incident{}, "", err
	}
	byID := func(id any) (incident.Incident, error) {
		return scanIncident(tx.QueryRow(ctx, `SELECT `+incidentColumns+` FROM containment.incidents i WHERE id = $1`, id))
	}
	var inc incident.Incident
	var outcome incident.Outcome
	var existing uuid.UUID
	took := false
	err = tx.QueryRow(ctx, `SELECT incident_id FROM containment.detections WHERE event_id = $1`, d.EventID).Scan(&existing)
	switch {
	case err == nil:
		outcome = incident.Duplicate
		if inc, err = byID(existing); err != nil {
			return incident.Incident{}, "", err
		}
	case !errors.Is(err, pgx.ErrNoRows):
		return incident.Incident{}, "", err
	default:
		outcome = incident.Attached
		inc, err = scanIncident(tx.QueryRow(ctx, `SELECT `+incidentColumns+` FROM containment.incidents i
			WHERE phase NOT IN ('resolved', 'failed') FOR UPDATE`))
		if errors.Is(err, pgx.ErrNoRows) {
			outcome = incident.Opened
			id := uuid.New()
			phase := incident.PhaseContaining
			if d.Unsealed {
				phase = incident.PhaseAwaiting
			}
			_, err = tx.Exec(ctx, `INSERT INTO containment.incidents (id, opened_by_event, detected_at, breach_published_at, severity, summary, source, phase, trace_parent)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
				id, d.EventID, d.Breach.DetectedAt, d.Time, string(d.Breach.Severity), d.Breach.Summary, d.Source, string(phase), d.TraceParent)
			if err == nil {
				inc, err = byID(id)
			}
		}
		if err != nil {
			return incident.Incident{}, "", err
		}
		if took = tookOver(inc, outcome, d, seals); took {
			if err := s.takeOver(ctx, tx, &inc, d, seals, emit); err != nil {
				return incident.Incident{}, "", err
			}
			outcome = incident.Opened
		}
		if _, err := tx.Exec(ctx, `INSERT INTO containment.detections (event_id, incident_id, source, severity, summary, detected_at, published_at, outcome)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			d.EventID, inc.ID, d.Source, string(d.Breach.Severity), d.Breach.Summary, d.Breach.DetectedAt, d.Time, string(outcome)); err != nil {
			return incident.Incident{}, "", err
		}
		inc.Detections++
	}
	// A new seal round when the incident is new, when Vault had been
	// unsealed (the gate passed: access is revoked again after the next
	// unseal), or when this breach sealed anything.
	// A breach allowed to seal by itself always starts a round on an
	// incident still awaiting an operator's confirmation (opened by a
	// breach outside the auto-seal policy): it sealed, and the gate and
	// the revocation must follow, whoever confirms what.
	// A detection that took the opening over keeps round 1 as its own.
	newRound := !d.Unsealed && inc.Phase.Open() && !took && (outcome == incident.Opened || inc.Phase == incident.PhaseAwaiting || inc.Phase == incident.PhaseUnsealed ||
		inc.Phase == incident.PhaseRecovering || sealedSomething(seals))
	if newRound {
		confirmed := incident.AllConfirmed(seals)
		phase, sealedAt := incident.PhaseContaining, (*time.Time)(nil)
		if confirmed {
			last := incident.LastConfirmed(seals)
			phase, sealedAt = incident.PhaseSealed, &last
		}
		if err := tx.QueryRow(ctx, `UPDATE containment.incidents SET seal_round = seal_round + 1, phase = $2, sealed_at = coalesce($3, sealed_at),
			unsealed_at = NULL, round_sealed = $4, round_breach_at = $5, version = version + 1 WHERE id = $1 RETURNING seal_round, version`,
			inc.ID, string(phase), sealedAt, confirmed, d.Time).Scan(&inc.SealRound, &inc.Version); err != nil {
			return incident.Incident{}, "", err
		}
		inc.Phase, inc.RoundSealed, inc.RoundBreachAt = phase, confirmed, d.Time
		if sealedAt != nil {
			inc.SealedAt = *sealedAt
		}
		if err := insertSeals(ctx, tx, inc.ID, inc.SealRound, seals); err != nil {
			return incident.Incident{}, "", err
		}
	}
	if err := s.emit(ctx, tx, inc.ID, emit(inc, outcome, newRound)); err != nil {
		return incident.Incident{}, "", err
	}
	if err := tx.Commit(ctx); err != nil {
		return inc, outcome, err
	}
	s.changed()
	return inc, outcome, nil
}

// tookOver says whether a detection recorded after the incident was opened
// is its true opener: published before the detection that opened it, it
// sealed what the first round holds, and the round has not passed its
// gate. That happens when PostgreSQL was down at the breach: the breach
// sealed Vault and waited for the database, and a re-detection that came
// later (and found Vault sealed) was recorded first. The earlier breach
// then keeps its own round and times, and the incident its trace.
func tookOver(inc incident.Incident, outcome incident.Outcome, d incident.Detection, seals []events.NodeSeal) bool {
	return outcome == incident.Attached && !d.Unsealed && inc.SealRound == 1 && inc.UnsealedAt.IsZero() &&
		(inc.Phase == incident.PhaseContaining || inc.Phase == incident.PhaseSealed) &&
		d.Time.Before(inc.BreachPublishedAt) && sealedSomething(seals)
}

// takeOver makes d the incident's opener (see tookOver): the incident row,
// the detections' outcomes, round 1's seals, and the timeline entries the
// report and the read model are built from (incident.opened,
// vault.sealed/1) now say what happened; the events in the stream keep
// what was known when they were published.
func (s *Store) takeOver(ctx context.Context, tx pgx.Tx, inc *incident.Incident, d incident.Detection, seals []events.NodeSeal,
	emit func(incident.Incident, incident.Outcome, bool) []events.Outgoing) error {
	confirmed := incident.AllConfirmed(seals)
	var sealedAt *time.Time
	if confirmed {
		last := incident.LastConfirmed(seals)
		sealedAt = &last
	}
	if _, err := tx.Exec(ctx, `UPDATE containment.detections SET outcome = 'attached' WHERE event_id = $1`, inc.OpenedBy); err != nil {
		return err
	}
	if err := tx.QueryRow(ctx, `UPDATE containment.incidents SET opened_by_event = $2, detected_at = $3, breach_published_at = $4, severity = $5, summary = $6,
		source = $7, trace_parent = $8, round_breach_at = $4, sealed_at = coalesce($9, sealed_at), round_sealed = round_sealed OR $10,
		phase = CASE WHEN $10 AND phase = 'containing' THEN 'sealed' ELSE phase END, version = version + 1 WHERE id = $1 RETURNING version, phase, round_sealed`,
		inc.ID, d.EventID, d.Breach.DetectedAt, d.Time, string(d.Breach.Severity), d.Breach.Summary, d.Source, d.TraceParent, sealedAt, confirmed).
		Scan(&inc.Version, &inc.Phase, &inc.RoundSealed); err != nil {
		return err
	}
	inc.OpenedBy, inc.DetectedAt, inc.BreachPublishedAt, inc.Severity, inc.Summary, inc.Source, inc.TraceParent, inc.RoundBreachAt =
		d.EventID, d.Breach.DetectedAt, d.Time, d.Breach.Severity, d.Breach.Summary, d.Source, d.TraceParent, d.Time
	if sealedAt != nil {
		inc.SealedAt = *sealedAt
	}
	if _, err := tx.Exec(ctx, `DELETE FROM containment.node_seals WHERE incident_id = $1 AND round = 1`, inc.ID); err != nil {
		return err
	}
	if err := insertSeals(ctx, tx, inc.ID, 1, seals); err != nil {
		return err
	}
	msgs, err := s.prepare(ctx, emit(*inc, incident.Opened, true))
	if err != nil {
		return err
	}
	for _, m := range msgs {
		ev, spec, err := events.Decode(m.Header, m.Data)
		if err != nil {
			return err
		}
		at := ev.Time()
		if spec.Name == events.VaultSealed && confirmed {
			at = incident.LastConfirmed(seals)
		}
		if _, err := tx.Exec(ctx, `UPDATE containment.timeline SET data = $4, time = $5 WHERE incident_id = $1 AND type = $2 AND event_id = $3`,
			inc.ID, string(spec.Name), ev.ID(), ev.Data(), at); err != nil {
			return err
		}
	}
	return nil
}

// sealedSomething reports whether a round sealed a node that was
// unsealed (not only confirmed nodes already sealed).
func sealedSomething(seals []events.NodeSeal) bool {
	for _, s := range seals {
		if s.Method != "" && s.Method != incident.MethodAlreadySealed {
			return true
		}
	}
	return false
}

// insertSeals records a round's confirmed node seals.
func insertSeals(ctx context.Context, tx pgx.Tx, incidentID string, round int, seals []events.NodeSeal) error {
	for _, n := range seals {
		if n.ConfirmedAt.IsZero() {
			continue
		}
		var requested *time.Time
		if !n.RequestedAt.IsZero() {
			requested = &n.RequestedAt
		}
		if _, err := tx.Exec(ctx, `INSERT INTO containment.node_seals (incident_id, round, address, method, requested_at, confirmed_at)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`, incidentID, round, n.Address, n.Method, requested, n.ConfirmedAt); err != nil {
			return err
		}
	}
	return nil
}

// emit writes events to the outbox and to the incident's timeline, in the
// caller's transaction: the engine reads its own events back at once, and
// the timeline consumer's later copy of each is a no-op.
func (s *Store) emit(ctx context.Context, tx pgx.Tx, incidentID string, out []events.Outgoing) error {
	msgs, err := s.prepare(ctx, out)
	if err != nil || len(msgs) == 0 {
		return err
	}
	for _, m := range msgs {
		ev, spec, err := events.Decode(m.Header, m.Data)
		if err != nil {
			return fmt.Errorf("prepare %s: %w", m.Subject, err)
		}
		e := reporting.Entry{EventID: ev.ID(), Type: spec.Name, Time: ev.Time(), Source: ev.Source(), Data: ev.Data()}
		if err := s.record(ctx, tx, incidentID, e); err != nil {
			return err
		}
	}
	return outbox.Add(ctx, tx, Schema, msgs...)
}

// ParkedAlarm raises incident.stuck for an event the outbox relay parked
// (outbox.Relay.OnParked), in the relay's transaction: the event's
// incident, or the open one when the event names none. No open incident:
// the dead letter is the alarm.
func (s *Store) ParkedAlarm(ctx context.Context, tx pgx.Tx, p outbox.Parked) error {
	var id, phase string
	q := `SELECT id, phase FROM containment.incidents WHERE id = $1`
	arg := []any{p.IncidentID}
	if p.IncidentID == "" {
		q, arg = `SELECT id, phase FROM containment.incidents WHERE phase NOT IN ('resolved', 'failed') ORDER BY opened_at DESC LIMIT 1`, nil
	}
	err := tx.QueryRow(ctx, q, arg...).Scan(&id, &phase)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	reason := fmt.Sprintf("event %s %s (%d bytes) was refused by JetStream for good and parked (outbox row %d, dead letter on %s): %s",
		p.EventType, p.EventID, p.Size, p.Seq, events.DeadLetterSubject(events.OutboxDeadLetters(events.ServiceContainment)), p.Reason)
	return s.emit(ctx, tx, id, []events.Outgoing{{Name: events.IncidentStuck, ID: fmt.Sprintf("%s/incident.stuck/parked-%d", id, p.Seq),
		Data: events.IncidentStuckData{IncidentID: id, Phase: phase, Reason: reason, Since: time.Now().UTC()}}})
}

// prepare builds the messages of events.
func (s *Store) prepare(ctx context.Context, out []events.Outgoing) ([]*nats.Msg, error) {
	if len(out) == 0 {
		return nil, nil
	}
	if s.prep == nil {
		return nil, errors.New("store: no preparer set: events cannot be written")
	}
	msgs := make([]*nats.Msg, 0, len(out))
	for _, o := range out {
		m, err := s.prep.Prepare(ctx, o.Name, o.ID, o.Data)
		if err != nil {
			return nil, fmt.Errorf("prepare %s: %w", o.Name, err)
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// record inserts one timeline entry in tx and, the first time it is
// recorded, writes its audit records (package audit) to the outbox in the
// same transaction: each action on Vault is audited exactly once, whoever
// recorded it first (the emitter or the timeline consumer). Audit records
// are not timeline entries themselves.
func (s *Store) record(ctx context.Context, tx pgx.Tx, incidentID string, e reporting.Entry) error {
	tag, err := tx.Exec(ctx, `INSERT INTO containment.timeline (event_id, incident_id, type, time, source, data) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT DO NOTHING`, e.EventID, incidentID, string(e.Type), e.Time, e.Source, e.Data)
	if err != nil || tag.RowsAffected() == 0 {
		return err
	}
	recs, err := audit.Records(e)
	if err != nil {
		return fmt.Errorf("audit %s: %w", e.EventID, err)
	}
	msgs, err := s.prepare(ctx, recs)
	if err != nil || len(msgs) == 0 {
		return err
	}
	return outbox.Add(ctx, tx, Schema, msgs...)
}

// OpenIncident implements incident.Store.
func (s *Store) OpenIncident(ctx context.Context) (incident.Incident, error) {
	inc, err := scanIncident(s.pool.QueryRow(ctx, `SELECT `+incidentColumns+` FROM containment.incidents i WHERE phase NOT IN ('resolved', 'failed')`))
	if errors.Is(err, pgx.ErrNoRows) {
		return incident.Incident{}, incident.ErrNoOpenIncident
	}
	return inc, err
}

// OpenIncidents implements engine.Store.
func (s *Store) OpenIncidents(ctx context.Context) ([]incident.Incident, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+incidentColumns+` FROM containment.incidents i WHERE phase NOT IN ('resolved', 'failed') ORDER BY opened_at`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (incident.Incident, error) { return scanIncident(r) })
}

// Incident implements engine.Store; an unknown id wraps
// timeline.ErrUnknownIncident.
func (s *Store) Incident(ctx context.Context, id string) (incident.Incident, error) {
	if _, err := uuid.Parse(id); err != nil {
		return incident.Incident{}, fmt.Errorf("%w: %q", timeline.ErrUnknownIncident, id)
	}
	inc, err := scanIncident(s.pool.QueryRow(ctx, `SELECT `+incidentColumns+` FROM containment.incidents i WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return incident.Incident{}, fmt.Errorf("%w: %s", timeline.ErrUnknownIncident, id)
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

// FirstSeen implements intake.Incidents: it records a signature until it
// expires and reports whether it was new; expired ones are forgotten on
// the way.
func (s *Store) FirstSeen(ctx context.Context, signature string, expires time.Time) (bool, error) {
	b := &pgx.Batch{}
	b.Queue(`DELETE FROM containment.intake_seen WHERE expires_at < now()`)
	var first bool
	b.Queue(`INSERT INTO containment.intake_seen (signature, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true`, signature, expires).
		QueryRow(func(r pgx.Row) error {
			err := r.Scan(&first)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			return err
		})
	return first, s.pool.SendBatch(ctx, b).Close()
}

// Resolve ends an incident without a report (tests and the benchmark use
// it to close the incident they opened).
func (s *Store) Resolve(ctx context.Context, incidentID string, at time.Time) error {
	_, err := s.pool.Exec(ctx, `UPDATE containment.incidents SET phase = $2, resolved_at = $3, version = version + 1 WHERE id = $1`,
		incidentID, string(incident.PhaseResolved), at)
	if err == nil {
		s.changed()
	}
	return err
}
