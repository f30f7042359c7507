package store

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/lockdown/lockdown/services/containment/internal/recovery"
)

// LoadRecovery implements recovery.Store.
func (s *Store) LoadRecovery(ctx context.Context, incidentID string) (recovery.State, error) {
	var raw []byte
	err := s.pool.QueryRow(ctx, `SELECT state FROM containment.recovery WHERE incident_id = $1`, incidentID).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return recovery.State{IncidentID: incidentID}, nil
	}
	if err != nil {
		return recovery.State{}, err
	}
	var st recovery.State
	if err := json.Unmarshal(raw, &st); err != nil {
		return recovery.State{}, err
	}
	return st, nil
}

// SaveRecovery implements recovery.Store.
func (s *Store) SaveRecovery(ctx context.Context, st recovery.State) error {
	raw, err := json.Marshal(st)
	if err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO containment.recovery (incident_id, state) VALUES ($1, $2)
		ON CONFLICT (incident_id) DO UPDATE SET state = EXCLUDED.state, updated_at = now()`, st.IncidentID, raw)
	return err
}

// OpenRecoveries implements recovery.Store: recoveries of open incidents.
func (s *Store) OpenRecoveries(ctx context.Context) ([]recovery.State, error) {
	rows, err := s.pool.Query(ctx, `SELECT r.state FROM containment.recovery r JOIN containment.incidents i ON i.id = r.incident_id
		WHERE i.phase NOT IN ('resolved', 'failed')`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (recovery.State, error) {
		var raw []byte
		var st recovery.State
		if err := r.Scan(&raw); err != nil {
			return st, err
		}
		return st, json.Unmarshal(raw, &st)
	})
}
