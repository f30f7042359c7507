package store

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/lockdown/lockdown/services/containment/internal/recovery"
)

// LoadRecovery implements engine.Store: the zero state (with the id)
// when none is recorded.
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
