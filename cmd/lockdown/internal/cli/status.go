package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The status commands read containment's schema directly (read-only): the
// incident row, its detections, its seals and the unseal gate.

// incidentView is what `status --json` and `incidents --json` print.
type incidentView struct {
	ID         string       `json:"id"`
	Phase      string       `json:"phase"`
	Severity   string       `json:"severity"`
	Summary    string       `json:"summary"`
	Source     string       `json:"source"`
	DetectedAt time.Time    `json:"detected_at"`
	OpenedAt   time.Time    `json:"opened_at"`
	SealedAt   *time.Time   `json:"sealed_at,omitempty"`
	UnsealedAt *time.Time   `json:"unsealed_at,omitempty"`
	Detections int          `json:"detections"`
	SealRounds int          `json:"seal_rounds"`
	Seals      []sealView   `json:"seals,omitempty"`
	Gate       []gateView   `json:"unseal_gate,omitempty"`
	Phases     []phaseTimer `json:"phases,omitempty"`
	// Recovery is containment's recovery state (phases 4, 5, 8) as stored.
	Recovery *recoveryView `json:"recovery,omitempty"`
	// Rotation is the rotator's progress (phase 6).
	Rotation *rotationView `json:"rotation,omitempty"`
}

type rotationView struct {
	Planned   int `json:"planned"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
	Pending   int `json:"pending"`
}

// recoveryView mirrors the recovery state containment stores as JSON
// (services/containment/internal/recovery.State); unknown fields are
// ignored so the CLI keeps working when containment adds some.
type recoveryView struct {
	AccessRevokedAt time.Time `json:"access_revoked_at"`
	Revoked         struct {
		AuthMethodsDisabled []string `json:"auth_methods_disabled"`
		TokensRevoked       int      `json:"tokens_revoked"`
		TokensKept          int      `json:"tokens_kept"`
		LeasePrefixes       []string `json:"lease_prefixes"`
		KeyTerm             int      `json:"key_term"`
	} `json:"revoked"`
	KeptReasons map[string]int `json:"kept_reasons,omitempty"`
	Ceremony    struct {
		Phase          string    `json:"phase"`
		Nonce          string    `json:"nonce"`
		RecoveryKeys   bool      `json:"recovery_keys"`
		T              int       `json:"t"`
		N              int       `json:"n"`
		Progress       int       `json:"progress"`
		VerifyNonce    string    `json:"verification_nonce"`
		VerifyProgress int       `json:"verification_progress"`
		Fingerprints   []string  `json:"pgp_fingerprints"`
		StartedAt      time.Time `json:"started_at"`
		CompletedAt    time.Time `json:"completed_at"`
		ConfirmedBy    string    `json:"confirmed_by"`
		Restarts       int       `json:"restarts"`
		Note           string    `json:"note"`
	} `json:"ceremony"`
	RotationDone bool      `json:"rotation_done"`
	NotifiedDone bool      `json:"notifications_done"`
	RestoredAt   time.Time `json:"restored_at"`
}

type sealView struct {
	Round       int        `json:"round"`
	Address     string     `json:"address"`
	Method      string     `json:"method"`
	RequestedAt *time.Time `json:"requested_at,omitempty"`
	ConfirmedAt time.Time  `json:"confirmed_at"`
}

type gateView struct {
	Address   string `json:"address"`
	Reachable bool   `json:"reachable"`
	Sealed    bool   `json:"sealed"`
	Active    bool   `json:"active"`
	Threshold int    `json:"t"`
	Shares    int    `json:"n"`
	Progress  int    `json:"progress"`
}

// phaseTimer is one runbook phase with its duration and its targets.
type phaseTimer struct {
	Phase    string `json:"phase"`
	Duration string `json:"duration,omitempty"`
	// RunbookTarget is the manual runbook's target; LockdownTarget ours.
	RunbookTarget  string `json:"runbook_target"`
	LockdownTarget string `json:"lockdown_target"`
}

func dbFlag(fs *flag.FlagSet) *string {
	return fs.String("database-url", envOr("DATABASE_URL", ""), "PostgreSQL URL of Lockdown's database (LOCKDOWN_DATABASE_URL)")
}

func connectDB(ctx context.Context, url string) (*pgx.Conn, error) {
	if url == "" {
		return nil, errors.New("no database: set --database-url or LOCKDOWN_DATABASE_URL")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return pgx.Connect(ctx, url)
}

const incidentSelect = `SELECT id::text, phase, severity, summary, source, detected_at, opened_at, sealed_at, unsealed_at, seal_round, gate,
	(SELECT count(*) FROM containment.detections d WHERE d.incident_id = i.id) FROM containment.incidents i`

func scanView(row pgx.Row) (incidentView, error) {
	var v incidentView
	var gate []byte
	err := row.Scan(&v.ID, &v.Phase, &v.Severity, &v.Summary, &v.Source, &v.DetectedAt, &v.OpenedAt, &v.SealedAt, &v.UnsealedAt, &v.SealRounds, &gate, &v.Detections)
	if err == nil {
		err = json.Unmarshal(gate, &v.Gate)
	}
	return v, err
}

func runIncidents(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := newFlags("incidents", errOut)
	db := dbFlag(fs)
	asJSON := fs.Bool("json", false, "print as JSON")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	conn, err := connectDB(ctx, *db)
	if err != nil {
		fmt.Fprintf(errOut, "lockdown incidents: %v\n", err)
		return ExitFailure
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, incidentSelect+` ORDER BY opened_at DESC LIMIT 100`)
	if err != nil {
		fmt.Fprintf(errOut, "lockdown incidents: %v\n", err)
		return ExitFailure
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (incidentView, error) { return scanView(r) })
	if err != nil {
		fmt.Fprintf(errOut, "lockdown incidents: %v\n", err)
		return ExitFailure
	}
	if *asJSON {
		printJSON(out, list)
		return ExitOK
	}
	fmt.Fprintf(out, "%-36s  %-10s  %-8s  %-10s  %s\n", "INCIDENT", "PHASE", "SEVERITY", "AGE", "SUMMARY")
	for _, v := range list {
		fmt.Fprintf(out, "%-36s  %-10s  %-8s  %-10s  %s\n", v.ID, v.Phase, v.Severity, time.Since(v.OpenedAt).Round(time.Second), v.Summary)
	}
	return ExitOK
}

func runStatus(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := newFlags("status", errOut)
	db := dbFlag(fs)
	asJSON := fs.Bool("json", false, "print as JSON")
	// The incident id is the one positional argument; flags may follow it.
	var id string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[0], args[1:]
	}
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if id == "" {
		fmt.Fprintln(errOut, "usage: lockdown status <incident-id> [--json]")
		return ExitUsage
	}
	conn, err := connectDB(ctx, *db)
	if err != nil {
		fmt.Fprintf(errOut, "lockdown status: %v\n", err)
		return ExitFailure
	}
	defer conn.Close(context.Background())
	v, err := scanView(conn.QueryRow(ctx, incidentSelect+` WHERE id::text = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		fmt.Fprintf(errOut, "lockdown status: no incident %s\n", id)
		return ExitFailure
	}
	if err != nil {
		fmt.Fprintf(errOut, "lockdown status: %v\n", err)
		return ExitFailure
	}
	rows, err := conn.Query(ctx, `SELECT round, address, method, requested_at, confirmed_at FROM containment.node_seals WHERE incident_id::text = $1 ORDER BY round, address`, id)
	if err == nil {
		v.Seals, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (sealView, error) {
			var s sealView
			return s, r.Scan(&s.Round, &s.Address, &s.Method, &s.RequestedAt, &s.ConfirmedAt)
		})
	}
	if err != nil {
		fmt.Fprintf(errOut, "lockdown status: %v\n", err)
		return ExitFailure
	}
	var raw []byte
	switch err := conn.QueryRow(ctx, `SELECT state FROM containment.recovery WHERE incident_id::text = $1`, id).Scan(&raw); {
	case err == nil:
		v.Recovery = &recoveryView{}
		if err := json.Unmarshal(raw, v.Recovery); err != nil {
			fmt.Fprintf(errOut, "lockdown status: recovery state: %v\n", err)
			return ExitFailure
		}
	case !errors.Is(err, pgx.ErrNoRows):
		fmt.Fprintf(errOut, "lockdown status: %v\n", err)
		return ExitFailure
	}
	var rot rotationView
	// The rotator's schema exists once it has run; before that there is
	// no progress to show.
	if err := conn.QueryRow(ctx, `SELECT p.tenants, count(*) FILTER (WHERE j.state = 'completed'), count(*) FILTER (WHERE j.state = 'failed'),
		count(*) FILTER (WHERE j.state = 'pending') FROM rotator.plans p LEFT JOIN rotator.jobs j ON j.incident_id = p.incident_id
		WHERE p.incident_id = $1 GROUP BY p.tenants`, id).Scan(&rot.Planned, &rot.Completed, &rot.Failed, &rot.Pending); err == nil {
		v.Rotation = &rot
	}
	v.Phases = phases(v)
	if *asJSON {
		printJSON(out, v)
		return ExitOK
	}
	fmt.Fprintf(out, "incident %s  phase %s  severity %s  detections %d\n  %s (from %s)\n", v.ID, v.Phase, v.Severity, v.Detections, v.Summary, v.Source)
	fmt.Fprintf(out, "  detected %s  opened %s\n", v.DetectedAt.Format(time.RFC3339), v.OpenedAt.Format(time.RFC3339))
	fmt.Fprintln(out, "\nphases:")
	for _, p := range v.Phases {
		d := p.Duration
		if d == "" {
			d = "—"
		}
		fmt.Fprintf(out, "  %-20s %-12s runbook target %-6s lockdown target %s\n", p.Phase, d, p.RunbookTarget, p.LockdownTarget)
	}
	if len(v.Seals) > 0 {
		fmt.Fprintln(out, "\nseals:")
		for _, s := range v.Seals {
			fmt.Fprintf(out, "  round %d  %-28s %-15s confirmed %s\n", s.Round, s.Address, s.Method, s.ConfirmedAt.Format(time.RFC3339Nano))
		}
	}
	if len(v.Gate) > 0 && v.Phase == "sealed" {
		fmt.Fprintln(out, "\nunseal gate (key holders: `vault operator unseal` on an isolated network):")
		for _, g := range v.Gate {
			state := "sealed"
			switch {
			case !g.Reachable:
				state = "unreachable"
			case !g.Sealed && g.Active:
				state = "unsealed, active"
			case !g.Sealed:
				state = "unsealed, standby"
			}
			fmt.Fprintf(out, "  %-28s %-18s shares %d of %d (awaiting %d more)\n", g.Address, state, g.Progress, g.Threshold, max(g.Threshold-g.Progress, 0))
		}
	}
	if r := v.Recovery; r != nil {
		printRecovery(out, r)
	}
	if r := v.Rotation; r != nil {
		fmt.Fprintf(out, "\nrotation: %d planned, %d completed, %d failed, %d in flight or waiting\n", r.Planned, r.Completed, r.Failed, r.Pending)
	}
	return ExitOK
}

func printRecovery(out io.Writer, r *recoveryView) {
	if !r.AccessRevokedAt.IsZero() {
		fmt.Fprintf(out, "\naccess revoked %s: auth methods disabled %v, %d tokens revoked, %d kept %v, leases %v, key term %d\n",
			r.AccessRevokedAt.Format(time.RFC3339), r.Revoked.AuthMethodsDisabled, r.Revoked.TokensRevoked, r.Revoked.TokensKept, r.KeptReasons,
			r.Revoked.LeasePrefixes, r.Revoked.KeyTerm)
	}
	c := r.Ceremony
	if c.Nonce != "" || c.Phase != "" {
		kind := "unseal"
		if c.RecoveryKeys {
			kind = "recovery"
		}
		fmt.Fprintf(out, "\nrekey ceremony (%s keys, %d shares / threshold %d): %s\n", kind, c.N, c.T, c.Phase)
		switch c.Phase {
		case "collecting_current_shares":
			fmt.Fprintf(out, "  key holders: vault operator rekey -nonce=%s   (%d of %d current shares submitted)\n", c.Nonce, c.Progress, c.T)
		case "verifying_new_shares":
			fmt.Fprintf(out, "  key holders: vault operator rekey -verify -nonce=%s   (%d of %d new shares verified)\n", c.VerifyNonce, c.VerifyProgress, c.T)
		case "completed":
			fmt.Fprintf(out, "  completed %s, confirmed by %s; holders' PGP fingerprints %v\n", c.CompletedAt.Format(time.RFC3339), c.ConfirmedBy, c.Fingerprints)
		}
		if c.Restarts > 0 {
			fmt.Fprintf(out, "  restarted %d time(s): %s\n", c.Restarts, c.Note)
		}
	}
	if !r.RestoredAt.IsZero() {
		fmt.Fprintf(out, "\naccess restored %s\n", r.RestoredAt.Format(time.RFC3339))
	} else if !r.AccessRevokedAt.IsZero() {
		fmt.Fprintf(out, "\naccess restore waits for: rotation %v, notifications %v\n", doneWord(r.RotationDone), doneWord(r.NotifiedDone))
	}
}

func doneWord(b bool) string {
	if b {
		return "done"
	}
	return "pending"
}

// phases lists containment's phases with their durations and targets: the
// runbook's (containment within 5 minutes) beside Lockdown's own.
func phases(v incidentView) []phaseTimer {
	contain := phaseTimer{Phase: "containment", RunbookTarget: "5m", LockdownTarget: "1s"}
	if v.SealedAt != nil {
		contain.Duration = v.SealedAt.Sub(v.OpenedAt).Round(time.Millisecond).String()
	}
	gate := phaseTimer{Phase: "unseal gate", RunbookTarget: "—", LockdownTarget: "human"}
	if v.SealedAt != nil && v.UnsealedAt != nil {
		gate.Duration = v.UnsealedAt.Sub(*v.SealedAt).Round(time.Millisecond).String()
	}
	out := []phaseTimer{contain, gate}
	if r := v.Recovery; r != nil {
		revoke := phaseTimer{Phase: "revoke access", RunbookTarget: "—", LockdownTarget: "1m"}
		if v.UnsealedAt != nil && !r.AccessRevokedAt.IsZero() {
			revoke.Duration = r.AccessRevokedAt.Sub(*v.UnsealedAt).Round(time.Millisecond).String()
		}
		rekey := phaseTimer{Phase: "unseal-key rotation", RunbookTarget: "30m", LockdownTarget: "human"}
		if !r.Ceremony.CompletedAt.IsZero() {
			rekey.Duration = r.Ceremony.CompletedAt.Sub(r.Ceremony.StartedAt).Round(time.Millisecond).String()
		}
		out = append(out, revoke, rekey)
	}
	return out
}
