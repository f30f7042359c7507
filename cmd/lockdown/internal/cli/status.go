package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/report"
)

// The status commands read containment's schema directly (read-only): the
// incident row, its detections, its seals and the unseal gate.

// incidentView is what `status --json` and `incidents --json` print.
type incidentView struct {
	ID         string         `json:"id"`
	Phase      string         `json:"phase"`
	Severity   string         `json:"severity"`
	Summary    string         `json:"summary"`
	Source     string         `json:"source"`
	DetectedAt time.Time      `json:"detected_at"`
	OpenedAt   time.Time      `json:"opened_at"`
	SealedAt   *time.Time     `json:"sealed_at,omitempty"`
	UnsealedAt *time.Time     `json:"unsealed_at,omitempty"`
	Detections int            `json:"detections"`
	SealRounds int            `json:"seal_rounds"`
	Seals      []sealView     `json:"seals,omitempty"`
	Gate       []gateView     `json:"unseal_gate,omitempty"`
	Phases     []report.Phase `json:"phases"`
	// Recovery is containment's recovery state (phases 4, 5, 8) as stored.
	Recovery *recoveryView `json:"recovery,omitempty"`
	// Rotation is the rotator's progress (phase 6).
	Rotation *progressView `json:"rotation,omitempty"`
	// Notification is the notifier's progress (phase 7).
	Notification *progressView `json:"notification,omitempty"`
	ResolvedAt   *time.Time    `json:"resolved_at,omitempty"`
	// StuckReason says why the incident cannot move (a dependency has
	// failed its step since StuckSince); FailureReason why it was aborted.
	StuckReason   string     `json:"stuck_reason,omitempty"`
	StuckSince    *time.Time `json:"stuck_since,omitempty"`
	FailureReason string     `json:"failure_reason,omitempty"`
	// TraceID is the incident's trace (the breach's); TraceURL its page in
	// the Jaeger UI given by --jaeger-url.
	TraceID     string `json:"trace_id,omitempty"`
	TraceURL    string `json:"trace_url,omitempty"`
	traceParent string
}

// progressView is a phase's progress over the plan's tenants. Rate is
// tenants finished per second since the plan; ETA the time left at it.
type progressView struct {
	Planned   int       `json:"planned"`
	Completed int       `json:"completed"`
	Failed    int       `json:"failed"`
	InFlight  int       `json:"in_flight"`
	Remaining int       `json:"remaining"`
	Since     time.Time `json:"since"`
	Rate      float64   `json:"rate_per_second"`
	ETA       string    `json:"eta,omitempty"`
}

func (p *progressView) settle(now time.Time) {
	p.Remaining = max(p.Planned-p.Completed-p.Failed-p.InFlight, 0)
	done := p.Completed + p.Failed
	if el := now.Sub(p.Since).Seconds(); el > 0 && done > 0 {
		p.Rate = float64(done) / el
		if left := p.Planned - done; left > 0 {
			p.ETA = (time.Duration(float64(left)/p.Rate*1000) * time.Millisecond).Round(time.Second).String()
		}
	}
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

const incidentSelect = `SELECT id::text, phase, severity, summary, source, detected_at, opened_at, sealed_at, unsealed_at, resolved_at, seal_round, gate,
	(SELECT count(*) FROM containment.detections d WHERE d.incident_id = i.id), stuck_reason, stuck_since, failure_reason, coalesce(trace_parent, '') FROM containment.incidents i`

func scanView(row pgx.Row) (incidentView, error) {
	var v incidentView
	var gate []byte
	err := row.Scan(&v.ID, &v.Phase, &v.Severity, &v.Summary, &v.Source, &v.DetectedAt, &v.OpenedAt, &v.SealedAt, &v.UnsealedAt, &v.ResolvedAt, &v.SealRounds, &gate, &v.Detections,
		&v.StuckReason, &v.StuckSince, &v.FailureReason, &v.traceParent)
	if err == nil {
		err = json.Unmarshal(gate, &v.Gate)
	}
	v.TraceID = report.TraceID(v.traceParent)
	return v, err
}

// jaegerFlag is the Jaeger UI the incident's trace is linked in.
func jaegerFlag(fs *flag.FlagSet) *string {
	return fs.String("jaeger-url", envOr("JAEGER_URL", ""), "the Jaeger UI, to link the incident's trace (LOCKDOWN_JAEGER_URL)")
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
	watch := fs.Bool("watch", false, "refresh every --interval until the incident ends: progress bars on a terminal, a line per change otherwise")
	jaeger := jaegerFlag(fs)
	interval := fs.Duration("interval", time.Second, "refresh interval of --watch")
	id, code, ok := parseWithID(fs, args, "usage: lockdown status <incident-id> [--json] [--watch]", errOut)
	if !ok {
		return code
	}
	conn, err := connectDB(ctx, *db)
	if err != nil {
		fmt.Fprintf(errOut, "lockdown status: %v\n", err)
		return ExitFailure
	}
	defer conn.Close(context.Background())
	tty := isTerminal(out)
	last := ""
	for {
		v, err := loadView(ctx, conn, id, time.Now())
		v.TraceURL = report.TraceLink(*jaeger, v.TraceID)
		if errors.Is(err, pgx.ErrNoRows) {
			fmt.Fprintf(errOut, "lockdown status: no incident %s\n", id)
			return ExitFailure
		}
		if err != nil {
			fmt.Fprintf(errOut, "lockdown status: %v\n", err)
			return ExitFailure
		}
		switch {
		case *asJSON:
			printJSON(out, v)
		case !*watch:
			printStatus(out, v)
		case tty:
			fmt.Fprint(out, "\x1b[H\x1b[2J") // home and clear: redraw in place
			printStatus(out, v)
			fmt.Fprintln(out)
			printBars(out, v)
		default:
			// Not a terminal (a log, a pipe): one plain line per change.
			if line := progressLine(v); line != last {
				fmt.Fprintln(out, line)
				last = line
			}
		}
		if !*watch || v.Phase == "resolved" || v.Phase == "failed" {
			return ExitOK
		}
		select {
		case <-ctx.Done():
			return ExitOK
		case <-time.After(*interval):
		}
	}
}

// loadView reads everything status shows. The phases come from the
// incident's timeline through report.Build: the same durations and targets
// as the post-incident report.
func loadView(ctx context.Context, conn *pgx.Conn, id string, now time.Time) (incidentView, error) {
	v, err := scanView(conn.QueryRow(ctx, incidentSelect+` WHERE id::text = $1`, id))
	if err != nil {
		return v, err
	}
	rows, err := conn.Query(ctx, `SELECT round, address, method, requested_at, confirmed_at FROM containment.node_seals WHERE incident_id::text = $1 ORDER BY round, address`, id)
	if err == nil {
		v.Seals, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (sealView, error) {
			var s sealView
			return s, r.Scan(&s.Round, &s.Address, &s.Method, &s.RequestedAt, &s.ConfirmedAt)
		})
	}
	if err != nil {
		return v, err
	}
	var raw []byte
	switch err := conn.QueryRow(ctx, `SELECT state FROM containment.recovery WHERE incident_id::text = $1`, id).Scan(&raw); {
	case err == nil:
		v.Recovery = &recoveryView{}
		if err := json.Unmarshal(raw, v.Recovery); err != nil {
			return v, fmt.Errorf("recovery state: %w", err)
		}
	case !errors.Is(err, pgx.ErrNoRows):
		return v, err
	}
	// The rotator's and notifier's schemas exist once they have run;
	// before that there is no progress to show.
	rot := progressView{}
	if err := conn.QueryRow(ctx, `SELECT p.tenants, p.planned_at, count(*) FILTER (WHERE j.state = 'completed'), count(*) FILTER (WHERE j.state = 'failed'),
		count(*) FILTER (WHERE j.state = 'pending' AND j.steps <> '{}'::jsonb)
		FROM rotator.plans p LEFT JOIN rotator.jobs j ON j.incident_id = p.incident_id
		WHERE p.incident_id = $1 GROUP BY p.tenants, p.planned_at`, id).Scan(&rot.Planned, &rot.Since, &rot.Completed, &rot.Failed, &rot.InFlight); err == nil {
		rot.settle(now)
		v.Rotation = &rot
		note := progressView{Since: rot.Since}
		if err := conn.QueryRow(ctx, `SELECT p.tenants, count(o.*) FILTER (WHERE o.state = 'sent'), count(o.*) FILTER (WHERE o.state = 'failed'),
			(SELECT count(DISTINCT tenant_id) FROM notifier.deliveries d WHERE d.incident_id = $1 AND d.state = 'sending')
			FROM notifier.plans p LEFT JOIN notifier.outcomes o ON o.incident_id = p.incident_id
			WHERE p.incident_id = $1 GROUP BY p.tenants`, id).Scan(&note.Planned, &note.Completed, &note.Failed, &note.InFlight); err == nil {
			note.settle(now)
			v.Notification = &note
		}
	}
	entries, err := timelineOf(ctx, conn, id)
	if err != nil {
		return v, err
	}
	end := now
	if v.ResolvedAt != nil {
		end = *v.ResolvedAt
	}
	v.Phases = report.Build(v.reportIncident(""), entries, v.Phase, "", end).Phases
	return v, nil
}

func (v incidentView) reportIncident(jaegerURL string) report.Incident {
	return report.Incident{ID: v.ID, Severity: v.Severity, Summary: v.Summary, Source: v.Source, DetectedAt: v.DetectedAt, OpenedAt: v.OpenedAt,
		Detections: v.Detections, TraceParent: v.traceParent, JaegerURL: jaegerURL}
}

// timelineOf reads the incident's recorded events (containment.timeline).
func timelineOf(ctx context.Context, conn *pgx.Conn, id string) ([]report.Entry, error) {
	rows, err := conn.Query(ctx, `SELECT event_id, type, time, source, data FROM containment.timeline WHERE incident_id = $1 ORDER BY time, event_id`, id)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (report.Entry, error) {
		var e report.Entry
		var typ string
		err := row.Scan(&e.EventID, &typ, &e.Time, &e.Source, &e.Data)
		e.Type = events.Name(typ)
		return e, err
	})
}

func printStatus(out io.Writer, v incidentView) {
	fmt.Fprintf(out, "incident %s  phase %s  severity %s  detections %d\n  %s (from %s)\n", v.ID, v.Phase, v.Severity, v.Detections, v.Summary, v.Source)
	fmt.Fprintf(out, "  detected %s  opened %s\n", v.DetectedAt.Format(time.RFC3339), v.OpenedAt.Format(time.RFC3339))
	if v.TraceID != "" {
		fmt.Fprintf(out, "  trace %s  %s\n", v.TraceID, v.TraceURL)
	}
	if v.StuckReason != "" {
		since := ""
		if v.StuckSince != nil {
			since = " since " + v.StuckSince.Format(time.RFC3339)
		}
		fmt.Fprintf(out, "  STUCK%s: %s (it moves on once the dependency answers; lockdown resume %s drives it now)\n", since, v.StuckReason, v.ID)
	}
	if v.FailureReason != "" {
		fmt.Fprintf(out, "  closed as failed: %s\n", v.FailureReason)
	}
	if v.Phase == "awaiting_confirmation" {
		fmt.Fprintf(out, "  AWAITING CONFIRMATION: this breach may not seal Vault by itself (LOCKDOWN_AUTO_SEAL_*); lockdown confirm %s seals now\n", v.ID)
	}
	fmt.Fprintln(out, "\nphases:")
	fmt.Fprintf(out, "  %-20s %-24s %-24s %-12s %-14s %s\n", "PHASE", "START", "END", "DURATION", "RUNBOOK TARGET", "LOCKDOWN TARGET")
	for _, p := range v.Phases {
		fmt.Fprintf(out, "  %-20s %-24s %-24s %-12s %-14s %s\n", p.Name, stamp(p.Start), stamp(p.End), p.Duration.Round(time.Millisecond), targetOr(p.RunbookTarget, "—"), targetOr(p.LockdownTarget, "human"))
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
	for _, p := range []struct {
		name string
		v    *progressView
	}{{"rotation", v.Rotation}, {"notification", v.Notification}} {
		if p.v != nil {
			fmt.Fprintf(out, "\n%s: %d planned, %d done, %d failed, %d in flight, %d remaining, %.1f/s, ETA %s\n",
				p.name, p.v.Planned, p.v.Completed, p.v.Failed, p.v.InFlight, p.v.Remaining, p.v.Rate, orDash(p.v.ETA))
		}
	}
}

// printBars draws the rotation and notification progress bars.
func printBars(out io.Writer, v incidentView) {
	for _, p := range []struct {
		name string
		v    *progressView
	}{{"rotation", v.Rotation}, {"notification", v.Notification}} {
		if p.v != nil {
			fmt.Fprintf(out, "%-13s %s\n", p.name, bar(*p.v, 40))
		}
	}
}

// bar renders done (#), failed (x) and in flight (>) over the plan.
func bar(p progressView, width int) string {
	cells := func(n int) int {
		if p.Planned == 0 {
			return 0
		}
		return n * width / p.Planned
	}
	done, failed, flight := cells(p.Completed), cells(p.Failed), cells(p.InFlight)
	rest := max(width-done-failed-flight, 0)
	return fmt.Sprintf("[%s%s%s%s] %d/%d done, %d failed, %d in flight, %d remaining, %.1f/s, ETA %s",
		strings.Repeat("#", done), strings.Repeat("x", failed), strings.Repeat(">", flight), strings.Repeat(".", rest),
		p.Completed, p.Planned, p.Failed, p.InFlight, p.Remaining, p.Rate, orDash(p.ETA))
}

// progressLine is --watch's plain output: one line with the phase and the
// counts.
func progressLine(v incidentView) string {
	line := "phase " + v.Phase
	for _, p := range []struct {
		name string
		v    *progressView
	}{{"rotation", v.Rotation}, {"notification", v.Notification}} {
		if p.v != nil {
			line += fmt.Sprintf("  %s %d/%d done %d failed %d in flight %d remaining", p.name, p.v.Completed, p.v.Planned, p.v.Failed, p.v.InFlight, p.v.Remaining)
		}
	}
	if v.StuckReason != "" {
		line += "  STUCK: " + v.StuckReason
	}
	return line
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

func targetOr(d time.Duration, none string) string {
	if d == 0 {
		return none
	}
	return d.String()
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
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
