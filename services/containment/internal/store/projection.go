package store

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/services/containment/internal/projection"
	"github.com/lockdown/lockdown/services/containment/internal/recovery"
	"github.com/lockdown/lockdown/services/containment/internal/reporting"
)

// SetOnChange registers a function called after every committed change
// of an incident (a step, a breach, a recorded event): the read model's
// projector looks at once instead of at its next poll. It must not block.
func (s *Store) SetOnChange(f func()) { s.onChange.Store(&f) }

func (s *Store) changed() {
	if f := s.onChange.Load(); f != nil {
		(*f)()
	}
}

// Markers implements projection.Source: the most recent incidents (open
// ones among them), each with a marker that changes with every recorded
// change (its version, its timeline's and detections' counts). The
// timeline's count is the one the database keeps (migration 008): a look
// costs the same at three entries and at thirty thousand.
func (s *Store) Markers(ctx context.Context, limit int) (map[string]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT id::text, version::text || '/' || phase || '/' ||
		  coalesce((SELECT entries FROM containment.timeline_counts t WHERE t.incident_id = i.id::text), 0)::text || '/' ||
		  (SELECT count(*) FROM containment.detections d WHERE d.incident_id = i.id)::text || '/' ||
		  (SELECT count(*) FROM containment.reports r WHERE r.incident_id = i.id)::text
		FROM containment.incidents i ORDER BY opened_at DESC LIMIT $1`, limit)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	var id, marker string
	_, err = pgx.ForEachRow(rows, []any{&id, &marker}, func() error {
		out[id] = marker
		return nil
	})
	return out, err
}

// Snapshot implements projection.Source: everything the incident's
// document and report are built from, read in one repeatable-read
// transaction so the parts agree; of the timeline, only the entries
// recorded by transactions at or after since (the Cursor of an earlier
// snapshot; "" for all). An entry can come again in the next snapshot
// (its transaction was at or after the cursor but finished in time): the
// projector keeps one per key.
func (s *Store) Snapshot(ctx context.Context, id, since string) (projection.Snapshot, error) {
	var snap projection.Snapshot
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		// First statement: it takes the transaction's snapshot, whose
		// oldest running transaction bounds what the next read must look
		// at again (every older one had finished, so what it recorded is
		// read now).
		if err := tx.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text`).Scan(&snap.Cursor); err != nil {
			return err
		}
		inc, err := scanIncident(tx.QueryRow(ctx, `SELECT `+incidentColumns+` FROM containment.incidents i WHERE id::text = $1`, id))
		if err != nil {
			return fmt.Errorf("incident %s: %w", id, err)
		}
		snap.Incident = inc
		if err := tx.QueryRow(ctx, `SELECT resolved_at FROM containment.incidents WHERE id = $1`, inc.ID).Scan(&snap.ResolvedAt); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT round, address, method, coalesce(requested_at, confirmed_at), confirmed_at FROM containment.node_seals
			WHERE incident_id = $1 ORDER BY round, address`, inc.ID)
		if err != nil {
			return err
		}
		var seal projection.Seal
		if _, err := pgx.ForEachRow(rows, []any{&seal.Round, &seal.Address, &seal.Method, &seal.RequestedAt, &seal.ConfirmedAt}, func() error {
			snap.Seals = append(snap.Seals, seal)
			return nil
		}); err != nil {
			return err
		}
		var raw []byte
		switch err := tx.QueryRow(ctx, `SELECT state FROM containment.recovery WHERE incident_id = $1`, inc.ID).Scan(&raw); {
		case err == nil:
			snap.Recovery = &recovery.State{}
			if err := json.Unmarshal(raw, snap.Recovery); err != nil {
				return fmt.Errorf("recovery state: %w", err)
			}
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		entries, err := tx.Query(ctx, `SELECT event_id, type, time, source, data FROM containment.timeline
			WHERE incident_id = $1 AND recorded_by >= $2::xid8 ORDER BY time, event_id`, inc.ID, cmp.Or(since, "0"))
		if err != nil {
			return err
		}
		if snap.Timeline, err = pgx.CollectRows(entries, scanEntry); err != nil {
			return err
		}
		raw = nil
		switch err := tx.QueryRow(ctx, `SELECT report FROM containment.reports WHERE incident_id = $1`, inc.ID).Scan(&raw); {
		case err == nil:
			snap.Report = &report.Report{}
			if err := json.Unmarshal(raw, snap.Report); err != nil {
				return fmt.Errorf("report: %w", err)
			}
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		return nil
	})
	snap.ReadAt = time.Now()
	return snap, err
}

func scanEntry(row pgx.CollectableRow) (reporting.Entry, error) {
	var e reporting.Entry
	var typ string
	err := row.Scan(&e.EventID, &typ, &e.Time, &e.Source, &e.Data)
	e.Type = events.Name(typ)
	return e, err
}
