package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/services/containment/internal/reporting"
	"github.com/lockdown/lockdown/services/containment/internal/timeline"
)

// RecordEvent implements timeline.Store: the entry and, the first time,
// its audit records, in one transaction.
func (s *Store) RecordEvent(ctx context.Context, incidentID string, e reporting.Entry) error {
	if err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return s.record(ctx, tx, incidentID, e) }); err != nil {
		return err
	}
	s.changed()
	return nil
}

// Timeline implements timeline.Store.
func (s *Store) Timeline(ctx context.Context, incidentID string) ([]reporting.Entry, error) {
	rows, err := s.pool.Query(ctx, `SELECT event_id, type, time, source, data FROM containment.timeline WHERE incident_id = $1 ORDER BY time, event_id`, incidentID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanEntry)
}

// Recorded implements engine.Store (an index lookup: migration 008).
func (s *Store) Recorded(ctx context.Context, incidentID string, types ...events.Name) (map[events.Name]bool, error) {
	names := make([]string, len(types))
	for i, t := range types {
		names[i] = string(t)
	}
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT type FROM containment.timeline WHERE incident_id = $1 AND type = ANY($2)`, incidentID, names)
	if err != nil {
		return nil, err
	}
	out := map[events.Name]bool{}
	var typ string
	_, err = pgx.ForEachRow(rows, []any{&typ}, func() error { out[events.Name(typ)] = true; return nil })
	return out, err
}

// ReportIncident implements timeline.Store.
func (s *Store) ReportIncident(ctx context.Context, incidentID string) (reporting.Incident, error) {
	var inc reporting.Incident
	err := s.pool.QueryRow(ctx, `SELECT id::text, severity, summary, source, detected_at, opened_at,
		  (SELECT count(*) FROM containment.detections d WHERE d.incident_id = i.id), coalesce(trace_parent, '')
		FROM containment.incidents i WHERE id::text = $1`, incidentID).
		Scan(&inc.ID, &inc.Severity, &inc.Summary, &inc.Source, &inc.DetectedAt, &inc.OpenedAt, &inc.Detections, &inc.TraceParent)
	if errors.Is(err, pgx.ErrNoRows) {
		return reporting.Incident{}, timeline.ErrUnknownIncident
	}
	return inc, err
}

// Report implements engine.Store; a closed incident without a report
// wraps timeline.ErrUnknownIncident.
func (s *Store) Report(ctx context.Context, incidentID string) (report.Report, error) {
	var raw []byte
	err := s.pool.QueryRow(ctx, `SELECT report FROM containment.reports WHERE incident_id::text = $1`, incidentID).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return report.Report{}, fmt.Errorf("%w: %s has no report", timeline.ErrUnknownIncident, incidentID)
	}
	if err != nil {
		return report.Report{}, err
	}
	var r report.Report
	return r, json.Unmarshal(raw, &r)
}
