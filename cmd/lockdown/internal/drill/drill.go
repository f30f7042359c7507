package drill

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/cmd/lockdown/internal/cli"
	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/pkg/platform/keycheck"
	"github.com/lockdown/lockdown/pkg/platform/natsconn"
	"github.com/lockdown/lockdown/pkg/platform/retry"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/pkg/platform/telemetry"
	"github.com/lockdown/lockdown/testkit/localstack"
	"github.com/lockdown/lockdown/testkit/tenantseed"
)

// drillReport is what `drill --json` prints.
type drillReport struct {
	OK       bool              `json:"ok"`
	Problems []string          `json:"problems"`
	Servers  map[string]string `json:"servers"`
	Services []drillService    `json:"services"`
	Breach   *drillBreach      `json:"breach,omitempty"`
	Intruder []string          `json:"intruder_read_tenants"`
	Verified *verification     `json:"verified,omitempty"`
	// Plan is `lockdown plan` against the seeded Vault, before the breach.
	Plan     *credentials.Plan `json:"plan,omitempty"`
	Report   *report.Report    `json:"report,omitempty"`
	StackDir string            `json:"stack_dir"`
}

type drillService struct {
	Name      string `json:"name"`
	Service   string `json:"service"`
	PID       int    `json:"pid"`
	Connected bool   `json:"connected"`
	Log       string `json:"log"`
}

type drillBreach struct {
	EventID    string `json:"event_id"`
	IncidentID string `json:"incident_id"`
	// SealedMS is breach published → every node confirmed sealed.
	SealedMS int64 `json:"sealed_ms"`
	// GateMS is sealed → unsealed, with Lockdown playing the key holders
	// (after HolderDelayMS, when --holder-delay is set).
	GateMS        int64 `json:"gate_ms"`
	HolderDelayMS int64 `json:"holder_delay_ms"`
	// UnsealToNotifiedMS is vault.unsealed → every tenant rotated and
	// notified (the later of rotation.completed and
	// notifications.completed), by the events' times: the stretch the
	// key holders' gathering cannot hide.
	UnsealToNotifiedMS int64    `json:"unseal_to_notified_ms"`
	TraceID            string   `json:"trace_id"`
	TraceURL           string   `json:"trace_url"`
	Spans              int      `json:"spans"`
	Services           []string `json:"services"`
}

// verification is what the drill found in Vault and Mailpit afterwards.
type verification struct {
	Tenants         int  `json:"tenants"`
	RotatedInVault  int  `json:"rotated_in_vault"`  // all three secrets carry the incident
	APIKeysLeft     int  `json:"api_keys_left"`     // in any form
	TenantsMailed   int  `json:"tenants_mailed"`    // exactly one message for the incident
	MessagesForThis int  `json:"messages_incident"` // messages carrying the incident id
	MailChecked     bool `json:"mail_checked"`      // false when no mailbox was given
	// DKIMChecked: the tenants' DNS was checked; DKIMRolled counts tenants
	// whose new selector serves a live key and whose old one is revoked.
	DKIMChecked bool `json:"dkim_checked"`
	DKIMRolled  int  `json:"dkim_rolled_over"`
	// DKIMSigned counts tenants whose active key in Vault signs mail that
	// passes DKIM against the DNS (break-glass token: local drills).
	DKIMSigned int `json:"dkim_signed_and_verified"`
	// DKIMSamples are the sampler's conclusive looks, during the run, at
	// an active key and its published record; DKIMSampleProblems the
	// first of those that failed.
	DKIMSamples        int      `json:"dkim_samples"`
	DKIMSampleProblems []string `json:"dkim_sample_problems,omitempty"`
	// TapChecked: the intruder planted an audit device logging in clear
	// (the drill's own stack); ValuesInTap counts rotated secret values
	// found in its file, TapRecordedBefore that it did record the
	// intruder's requests before the breach, TapStillEnabled that it
	// survived the incident.
	TapChecked        bool `json:"intruder_tap_checked"`
	TapRecordedBefore bool `json:"intruder_tap_recorded_before"`
	ValuesInTap       int  `json:"rotated_values_in_intruder_tap"`
	TapStillEnabled   bool `json:"intruder_tap_still_enabled"`
	// PlatformChecked: the platform-wide credentials the drill seeded
	// (its own stack) were checked in Vault and PostgreSQL afterwards;
	// PlatformProblems says what was not rotated.
	PlatformChecked  bool     `json:"platform_checked"`
	PlatformProblems []string `json:"platform_problems,omitempty"`
}

// drillSelectors are the rotator's default delegated pair
// (LOCKDOWN_DKIM_SELECTORS): the seed publishes the first, the rollover
// moves to the second.
var drillSelectors = [2]string{"ld1", "ld2"}

// drillServices are started in this order; rotators come N times.
var drillServices = []string{events.ServiceContainment, events.ServiceAssessor, events.ServiceNotifier}

// Main runs the drill with args (the program's, without its name),
// printing to out and errOut, and returns the exit code: cli.ExitOK when
// every check passed, cli.ExitFailure when one did not or the drill could
// not run, cli.ExitUsage for bad flags.
func Main(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := flag.NewFlagSet("lockdown-drill", flag.ContinueOnError)
	fs.SetOutput(errOut)
	binDir := fs.String("bin-dir", cli.EnvOr("BIN_DIR", ""), "folder of the service binaries (default: beside this executable)")
	tenants := fs.Int("tenants", 100, "tenants to seed in the directory and in Vault (SSH, SMTP, DKIM, API keys)")
	rotators := fs.Int("rotators", 1, "rotator processes (they share the work queue)")
	intruderReads := fs.Int("intruder-reads", 10, "tenants whose secrets the intruder reads before the breach is detected")
	holderDelay := fs.Duration("holder-delay", 0, "the key holders arrive this long after the seal, as people do (the runbook allows them an hour); only when the drill plays them")
	keep := fs.Bool("keep", false, "keep the stack and services running after the drill until Ctrl-C")
	timeout := fs.Duration("timeout", 15*time.Minute, "give up after this long (default 15m, or 10m plus 240ms per tenant when that is longer)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	outDir := fs.String("out", "", "write the hand-over files here: report.md, report.json, status.json and status-watch.txt")
	// Drilling against servers that already run Lockdown (staging).
	existing := fs.Bool("existing", false, "drill against running servers and services instead of starting a local stack")
	var ex existingOptions
	fs.StringVar(&ex.natsURL, "nats-url", cli.EnvOr("NATS_URL", ""), "--existing: NATS URL(s) (LOCKDOWN_NATS_URL); passwords of the siem and operator users from LOCKDOWN_NATS_PASSWORD_SIEM and _OPERATOR")
	fs.StringVar(&ex.dbURL, "database-url", cli.EnvOr("DATABASE_URL", ""), "--existing: PostgreSQL URL of Lockdown's database (LOCKDOWN_DATABASE_URL)")
	fs.StringVar(&ex.vaultAddr, "vault-addr", cli.EnvOr("VAULT_ADDR", ""), "--existing: Vault address (LOCKDOWN_VAULT_ADDR); admin token from LOCKDOWN_DRILL_VAULT_TOKEN")
	fs.StringVar(&ex.mount, "kv-mount", cli.EnvOr("KV_MOUNT", "secret"), "--existing: KV v2 mount of the tenants' secrets")
	fs.StringVar(&ex.prefix, "tenant-prefix", "drill-", "--existing: prefix of the drill's tenant ids, so it never overwrites the platform's tenants")
	fs.BoolVar(&ex.playHolders, "play-key-holders", false, "--existing: unseal and rekey with the shares of --unseal-keys-file (a disposable staging Vault only)")
	fs.StringVar(&ex.unsealKeysFile, "unseal-keys-file", "", "--existing: current unseal shares, one per line, mode 600")
	fs.StringVar(&ex.mailpit, "mailpit-url", "", "--existing: Mailpit API to check the notifications in (optional)")
	fs.StringVar(&ex.jaeger, "jaeger-url", "", "--existing: Jaeger query API to check the trace in (optional; with --otlp-endpoint)")
	fs.StringVar(&ex.otlp, "otlp-endpoint", "", "--existing: OTLP/HTTP endpoint for the drill's own trigger span")
	if code, ok := cli.Parse(fs, args); !ok {
		return code
	}
	if *tenants < 1 || *rotators < 1 || *intruderReads < 0 || *intruderReads > *tenants || *holderDelay < 0 {
		cli.Writeln(errOut, "lockdown-drill: --tenants and --rotators must be at least 1, --intruder-reads between 0 and --tenants, --holder-delay not negative")
		return cli.ExitUsage
	}
	if *binDir == "" {
		exe, err := os.Executable()
		if err != nil {
			cli.Writef(errOut, "lockdown-drill: %v\n", err)
			return cli.ExitFailure
		}
		*binDir = filepath.Dir(exe)
	}
	say := func(format string, a ...any) {
		if !*asJSON {
			cli.Writef(out, format+"\n", a...)
		}
	}
	fail := func(err error) int {
		cli.Writef(errOut, "lockdown-drill: %v\n", err)
		return cli.ExitFailure
	}
	if !flagSet(fs, "timeout") {
		// Seeding, rotation and notification (20 messages/s by default)
		// grow with the tenants: 10,000 took 36 minutes here (2 cores).
		*timeout = max(*timeout, 10*time.Minute+time.Duration(*tenants)*240*time.Millisecond)
	}
	*timeout += *holderDelay
	// --keep outlives the drill's timeout: it waits for Ctrl-C.
	untilInterrupted := ctx
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	var tgt *target
	var platform *platformBefore // the drill's own stack only
	keptEnv := ""                // --keep on the local stack: the CLI environment file
	rep := drillReport{Problems: []string{}}
	if *existing {
		ex.vaultToken = os.Getenv("LOCKDOWN_DRILL_VAULT_TOKEN")
		ex.siemPass, ex.operatorPass = os.Getenv(events.NATSPasswordEnv(events.UserSIEM)), os.Getenv(events.NATSPasswordEnv(events.UserOperator))
		var err error
		if tgt, err = existingTarget(ex); err != nil {
			cli.Writef(errOut, "lockdown-drill: %v\n", err)
			return cli.ExitUsage
		}
		rep.Servers = map[string]string{"nats": tgt.natsURL, "vault": tgt.vault.Addr, "jaeger_query": tgt.jaegerQuery, "mailpit": ex.mailpit}
		say("drilling against running servers: NATS %s, Vault %s (key holders %s)", tgt.natsURL, tgt.vault.Addr, map[bool]string{true: "played from the shares file", false: "are people: the drill waits for them"}[tgt.playHolders])
	} else {
		say("starting the local stack (NATS, PostgreSQL, Vault, Jaeger, Mailpit, Knot DNS)…")
		startCtx, cancelStart := context.WithTimeout(ctx, 3*time.Minute)
		opts := localstack.All()
		opts.DNS = true // DKIM keys roll over through real DNS
		stack, err := localstack.Start(startCtx, opts)
		cancelStart()
		if err != nil {
			return fail(err)
		}
		// The platform-wide credentials, before the rotators start: they
		// then run deploy/rotation/catalogue.json.
		estate, err := stack.SeedPlatform(ctx)
		if err != nil {
			if cerr := stack.Close(); cerr != nil {
				cli.Writef(errOut, "lockdown-drill: teardown: %v\n", cerr)
			}
			return fail(fmt.Errorf("seeding the platform's credentials: %w", err))
		}
		defer func() {
			say("stopping services and servers…")
			if err := stack.Close(); err != nil {
				cli.Writef(errOut, "lockdown-drill: teardown: %v\n", err)
			}
		}()
		breakGlass, accessor, err := breakGlassToken(ctx, stack.Vault)
		if err != nil {
			return fail(err)
		}
		if err := startLocal(ctx, stack, *binDir, *rotators, accessor, &rep, say); err != nil {
			return fail(err)
		}
		tgt = localTarget(stack)
		tgt.breakGlass = breakGlass
		if platform, err = recordPlatform(ctx, tgt, stack, estate); err != nil {
			return fail(err)
		}
		if *keep {
			if keptEnv, err = keptStackEnv(stack); err != nil {
				return fail(err)
			}
		}
	}
	tgt.holderDelay = *holderDelay
	var err error
	if err := seedTenants(ctx, tgt, *tenants); err != nil {
		return fail(fmt.Errorf("seeding tenants: %w", err))
	}
	say("seeded %d tenants (directory, and SSH/SMTP/DKIM secrets and API keys in Vault)", *tenants)
	if platform != nil {
		plan, err := planCovers(ctx, tgt, platform.estate)
		rep.Plan = plan
		if err != nil {
			return fail(fmt.Errorf("lockdown plan: %w", err))
		}
		var platformKinds []string
		for _, k := range plan.Kinds {
			if k.Scope == credentials.PlatformWide {
				platformKinds = append(platformKinds, fmt.Sprintf("%d %s", k.Count, k.Title))
			}
		}
		say("lockdown plan: every credential Vault holds is covered (%d tenants; of the catalogue: %s)", plan.Tenants, strings.Join(platformKinds, ", "))
	}
	if rep.Intruder, err = intrude(ctx, tgt, *tenants, *intruderReads); err != nil {
		return fail(fmt.Errorf("intruder: %w", err))
	}
	say("an intruder with a token of its own read the secrets of %d tenants and was refused once", len(rep.Intruder))
	if tgt.tapFile != "" {
		say("the intruder, holding a root token too, tapped Vault with an audit device logging in clear (%s)", drillTap)
	}
	dkimSampler, err := watchDKIM(ctx, tgt, *tenants)
	if err != nil {
		return fail(err)
	}
	defer dkimSampler.finish()

	b, err := triggerAndTrace(ctx, tgt)
	if err != nil {
		return fail(err)
	}
	rep.Breach = b
	say("breach %s published as the SIEM", b.EventID)
	if err := followIncident(ctx, tgt, b, say); err != nil {
		return fail(err)
	}
	r, err := cli.StoredReport(ctx, tgt.operator(), b.IncidentID)
	if err != nil {
		return fail(err)
	}
	if rep.Plan != nil {
		r.AddCoverage(*rep.Plan) // the not-covered column, from the plan before the breach
	}
	rep.Report = &r
	if rep.Verified, err = verify(ctx, tgt, b.IncidentID, *tenants); err != nil {
		return fail(err)
	}
	rep.Verified.DKIMSamples, rep.Verified.DKIMSampleProblems = dkimSampler.finish()
	if platform != nil {
		if err := verifyPlatform(ctx, tgt, platform, b.IncidentID, rep.Verified); err != nil {
			return fail(err)
		}
	}
	rep.Problems = append(rep.Problems, problems(r, *rep.Verified, rep.Intruder, tgt)...)
	if *outDir != "" {
		if err := handOver(ctx, *outDir, tgt, b.IncidentID); err != nil {
			rep.Problems = append(rep.Problems, err.Error())
		}
	}
	if b.TraceURL != "" {
		// The report names the incident's trace, so the operator who has
		// only the incident id finds it in Jaeger.
		if r.TraceID != b.TraceID {
			rep.Problems = append(rep.Problems, fmt.Sprintf("the report names trace %q, the breach was published in trace %s", r.TraceID, b.TraceID))
		}
		spans, svcs, err := awaitTrace(ctx, b.TraceURL, []string{events.ServiceContainment, events.ServiceAssessor, events.ServiceRotator, events.ServiceNotifier})
		b.Spans, b.Services = spans, svcs
		if err != nil {
			rep.Problems = append(rep.Problems, err.Error())
		}
	}
	rep.OK = len(rep.Problems) == 0
	if *asJSON {
		cli.ShowJSON(out, rep)
	} else {
		cli.Writeln(out)
		if err := r.Markdown(cli.TerminalSafe(out)); err != nil {
			return fail(err)
		}
		cli.Writeln(out)
		v := rep.Verified
		say("verified: %d of %d tenants rotated in Vault (every secret carries the incident), %d API keys left", v.RotatedInVault, v.Tenants, v.APIKeysLeft)
		if v.DKIMChecked {
			say("verified in DNS: %d of %d tenants' DKIM selectors rolled over (%s live at the authoritative server, %s revoked); mail signed with the active key passes DKIM for %d; %d samples during the run of the active key against its record",
				v.DKIMRolled, v.Tenants, drillSelectors[1], drillSelectors[0], v.DKIMSigned, v.DKIMSamples)
		}
		if v.MailChecked {
			say("verified: %d tenants with exactly one message in Mailpit", v.TenantsMailed)
		}
		if v.PlatformChecked && len(v.PlatformProblems) == 0 {
			say("verified in Vault and PostgreSQL: every platform-wide credential rotated (transit keys one version up, database root and static-role passwords replaced — the old ones no longer log in — old certificates on the CRL, platform secrets rewritten)")
		}
		if v.TapChecked {
			say("verified: the intruder's root-planted audit device (log_raw) recorded a secret in clear before the breach, was removed by the revocation, and holds %d of the tenants' rotated values", v.ValuesInTap)
		}
		say("trace %s: %d spans from %v\n  %s", b.TraceID, b.Spans, b.Services, b.TraceURL)
		for _, p := range rep.Problems {
			say("PROBLEM: %s", p)
		}
		if rep.OK {
			say("drill passed: incident %s resolved", b.IncidentID)
		}
	}
	if *keep {
		if keptEnv != "" {
			say("the stack stays up: `source %s` points lockdown incidents/status/report/dlq/console at it (credentials in the file, mode 600)", keptEnv)
		}
		stopConsole, url, err := keepConsole(untilInterrupted, tgt)
		if err != nil {
			say("PROBLEM: the console did not start: %v", err)
		} else {
			defer stopConsole()
			say("console: %s (the incident: %sincidents/%s)", url, url, rep.incidentID())
		}
		say("running; press Ctrl-C to stop")
		<-untilInterrupted.Done()
	}
	if !rep.OK {
		return cli.ExitFailure
	}
	return cli.ExitOK
}

// startLocal starts the services on the drill's own stack (N rotators)
// and waits until each is connected to NATS.
func startLocal(ctx context.Context, stack *localstack.Stack, binDir string, rotators int, breakGlass string, rep *drillReport, say func(string, ...any)) error {
	rep.StackDir = stack.Dir
	rep.Servers = map[string]string{
		"nats": stack.NATS.URL, "postgres": fmt.Sprintf("127.0.0.1:%d", stack.Postgres.Port), "vault": stack.Vault.Addr,
		"jaeger_query": stack.Jaeger.QueryURL, "jaeger_otlp_http": stack.Jaeger.OTLPHTTPEndpoint, "mailpit": stack.Mailpit.APIURL,
	}
	// The key holders have PGP keys, and the ceremony runs without Vault's
	// verification step: the encrypted backup Vault writes in the call that
	// rekeys is then proof that the unseal keys were rotated (see
	// docs/operations.md), and the drill checks the report says so.
	holders, err := stack.NewKeyHolders(localstack.VaultShares)
	if err != nil {
		return err
	}
	stack.Vault.Holders = holders
	procs := append([]string{}, drillServices...)
	for range rotators {
		procs = append(procs, events.ServiceRotator)
	}
	for i, svc := range procs {
		name := svc
		if svc == events.ServiceRotator {
			name = fmt.Sprintf("rotator-%d", i-len(drillServices)+1)
		}
		env := stack.Env(svc)
		if svc == events.ServiceContainment {
			env = append(env, "LOCKDOWN_BREAK_GLASS="+breakGlass, "LOCKDOWN_REKEY_PGP_DIR="+holders.Dir, "LOCKDOWN_REKEY_REQUIRE_VERIFICATION=false",
				"LOCKDOWN_REKEY_PGP_FINGERPRINTS="+strings.Join(holders.Fingerprints(), ","))
		}
		pid, logPath, err := stack.Spawn(name, filepath.Join(binDir, svc), nil, env)
		if err != nil {
			return fmt.Errorf("%w (run `make build`)", err)
		}
		rep.Services = append(rep.Services, drillService{Name: name, Service: svc, PID: pid, Log: logPath})
	}
	waitCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := waitConnected(waitCtx, stack.NATS.MonitorPort, rep.Services); err != nil {
		return err
	}
	say("servers:")
	for _, k := range []string{"nats", "postgres", "vault", "jaeger_query", "mailpit"} {
		say("  %-13s %s", k, rep.Servers[k])
	}
	say("services (connected to NATS, topology ensured):")
	for _, s := range rep.Services {
		say("  %-12s pid %-7d log %s", s.Name, s.PID, s.Log)
	}
	return nil
}

// problems compares the report with what Vault and Mailpit hold. On its
// own stack the drill's tenants are all the tenants, so the counts must be
// equal; on a staging platform the report also counts the platform's own.
func problems(r report.Report, v verification, intruder []string, tgt *target) []string {
	var out []string
	if r.Outcome != "resolved" {
		out = append(out, fmt.Sprintf("incident outcome %q", r.Outcome))
	}
	if v.DKIMChecked && v.DKIMRolled != v.Tenants {
		out = append(out, fmt.Sprintf("DNS shows %d of %d tenants' DKIM keys rolled over (new selector live, old revoked)", v.DKIMRolled, v.Tenants))
	}
	if tgt.breakGlass != "" && v.DKIMChecked && v.DKIMSigned != v.Tenants {
		out = append(out, fmt.Sprintf("mail signed with the active DKIM key passes DKIM for %d of %d tenants", v.DKIMSigned, v.Tenants))
	}
	for _, p := range v.PlatformProblems {
		out = append(out, "platform credentials: "+p)
	}
	for _, p := range v.DKIMSampleProblems {
		out = append(out, "during the run, an active DKIM key had no record that verifies it: "+p)
	}
	if v.RotatedInVault != v.Tenants || r.Actions.TenantsRotated < v.RotatedInVault || (tgt.exact && r.Actions.TenantsRotated != v.RotatedInVault) {
		out = append(out, fmt.Sprintf("report says %d tenants rotated, Vault shows %d of the drill's %d", r.Actions.TenantsRotated, v.RotatedInVault, v.Tenants))
	}
	rotated := map[string]bool{}
	for _, t := range r.Actions.Rotations {
		rotated[t.TenantID] = true
	}
	for i := range v.Tenants {
		if id := tenantseed.IDWith(tgt.prefix, i); !rotated[id] {
			out = append(out, fmt.Sprintf("the report does not list %s as rotated", id))
			break
		}
	}
	if v.APIKeysLeft != 0 {
		out = append(out, fmt.Sprintf("%d API keys left in Vault", v.APIKeysLeft))
	}
	if v.TapChecked {
		switch {
		case v.ValuesInTap > 0:
			out = append(out, fmt.Sprintf("%d rotated secret values reached the intruder's audit device", v.ValuesInTap))
		case v.TapStillEnabled:
			out = append(out, "the intruder's audit device is still enabled")
		case !v.TapRecordedBefore:
			out = append(out, "the intruder's audit device does not show the secret it recorded before the breach: the check proves nothing")
		}
		removed := slices.ContainsFunc(r.Actions.VaultChanges, func(c events.VaultChange) bool {
			return c.Kind == "audit_device" && c.Name == drillTap && c.Action == events.VaultRemoved
		})
		if !removed {
			out = append(out, "the report does not list the intruder's audit device as removed")
		}
	}
	if tgt.vault.Holders != nil && (r.Actions.UnsealKeys == nil || r.Actions.UnsealKeys.Proof != "pgp_backup") {
		out = append(out, fmt.Sprintf("the report does not prove the unseal keys were rotated by Vault's PGP backup: %+v", r.Actions.UnsealKeys))
	}
	if r.Actions.TenantsNotified < v.Tenants || (tgt.exact && r.Actions.TenantsNotified != v.Tenants) {
		out = append(out, fmt.Sprintf("report says %d tenants notified, the drill has %d", r.Actions.TenantsNotified, v.Tenants))
	}
	if v.MailChecked && (v.TenantsMailed != v.Tenants || v.MessagesForThis != v.Tenants) {
		out = append(out, fmt.Sprintf("report says %d tenants notified, Mailpit holds %d messages for %d tenants of %d", r.Actions.TenantsNotified, v.MessagesForThis, v.TenantsMailed, v.Tenants))
	}
	// The assessment's list is cut past 4,000 tenants (affected_total):
	// the tenants' own rotations then say which were told "affected".
	affected := map[string]bool{}
	for _, t := range r.AffectedTenants {
		affected[t] = true
	}
	for _, rot := range r.Actions.Rotations {
		affected[rot.TenantID] = affected[rot.TenantID] || rot.Affected
	}
	for _, t := range intruder {
		if !affected[t] {
			out = append(out, fmt.Sprintf("the assessment missed %s, which the intruder read", t))
		}
	}
	if len(r.Failures) > 0 {
		out = append(out, fmt.Sprintf("%d failures in the report", len(r.Failures)))
	}
	return out
}

// waitConnected polls the NATS monitoring endpoint until every service's
// named connection is there: proof that it loaded its config, connected and
// ensured the topology.
func waitConnected(ctx context.Context, monitorPort int, svcs []drillService) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/connz?limit=1024", monitorPort)
	for {
		names := map[string]bool{}
		if req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil); err == nil {
			if resp, err := http.DefaultClient.Do(req); err == nil {
				var body struct {
					Connections []struct {
						Name string `json:"name"`
					} `json:"connections"`
				}
				if json.NewDecoder(resp.Body).Decode(&body) == nil {
					for _, c := range body.Connections {
						names[c.Name] = true
					}
				}
				_ = resp.Body.Close() // read to the end or not needed: nothing to lose
			}
		}
		missing := ""
		for i := range svcs {
			svcs[i].Connected = names["lockdown-"+svcs[i].Service]
			if !svcs[i].Connected {
				missing = svcs[i].Name
			}
		}
		if missing == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("service %s did not connect to NATS: see its log", missing)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// unsealAsHolders plays the key holders at the unseal gate: they arrive
// tgt.holderDelay after the seal, as people who must gather do.
func unsealAsHolders(ctx context.Context, tgt *target, b *drillBreach, say func(string, ...any)) error {
	if tgt.holderDelay > 0 {
		say("the key holders are gathering: they arrive in %s (key material is made meanwhile)…", tgt.holderDelay)
		if !retry.Sleep(ctx, tgt.holderDelay) {
			return ctx.Err()
		}
		b.HolderDelayMS = tgt.holderDelay.Milliseconds()
	}
	say("playing the key holders: unsealing with %d of %d shares…", localstack.VaultThreshold, localstack.VaultShares)
	return tgt.vault.Unseal(ctx)
}

// followIncident waits for the incident the breach opened to be sealed,
// then plays the key holders (the stack's Vault is disposable: this is the
// one place Lockdown holds unseal shares) and waits for the unseal gate.
func followIncident(ctx context.Context, tgt *target, b *drillBreach, say func(string, ...any)) error {
	conn, err := natsconn.Connect(ctx, natsconn.Options{URL: tgt.natsURL, Name: "lockdown-cli",
		User: events.UserOperator, Password: tgt.operatorPassword})
	if err != nil {
		return err
	}
	defer cli.CloseNATS(conn)
	_, opened, err := stream.Await(ctx, conn.JS, events.IncidentOpened, func(_ event.Event, d events.IncidentOpenedData) bool { return d.BreachEventID == b.EventID })
	if err != nil {
		return err
	}
	b.IncidentID = opened.IncidentID
	_, sealed, err := stream.Await(ctx, conn.JS, events.VaultSealed, func(_ event.Event, d events.VaultSealedData) bool { return d.IncidentID == b.IncidentID })
	if err != nil {
		return err
	}
	b.SealedMS = sealed.LatencyMS
	say("incident %s opened; every Vault node confirmed sealed %d ms after the breach was published", b.IncidentID, b.SealedMS)
	_, assessed, err := stream.Await(ctx, conn.JS, events.AssessmentCompleted, func(_ event.Event, d events.AssessmentCompletedData) bool { return d.IncidentID == b.IncidentID })
	if err != nil {
		return err
	}
	say("assessment (from the audit log, Vault sealed): scope %s, %d affected tenants, %d suspicious events, %d actors",
		assessed.Scope, len(assessed.AffectedTenants), assessed.SuspiciousEvents, len(assessed.Actors))
	if tgt.playHolders {
		if err := unsealAsHolders(ctx, tgt, b, say); err != nil {
			return err
		}
	} else {
		say("waiting for the key holders to unseal Vault (vault operator unseal; lockdown status %s shows who is awaited)…", b.IncidentID)
	}
	unsealedEv, unsealed, err := stream.Await(ctx, conn.JS, events.VaultUnsealed, func(_ event.Event, d events.VaultUnsealedData) bool { return d.IncidentID == b.IncidentID })
	if err != nil {
		return err
	}
	b.GateMS = unsealed.GateMS
	say("unseal gate passed after %d ms (vault.unsealed)", b.GateMS)
	_, revoked, err := stream.Await(ctx, conn.JS, events.AccessRevoked, func(_ event.Event, d events.AccessRevokedData) bool { return d.IncidentID == b.IncidentID })
	if err != nil {
		return err
	}
	say("access revoked: auth methods %v disabled, %d tokens revoked, %d kept, keyring at term %d",
		revoked.AuthMethodsDisabled, revoked.TokensRevoked, revoked.TokensKept, revoked.KeyTerm)
	// Rotation and notification take minutes for thousands of tenants:
	// show them moving.
	rm, err := cli.OpenReadModel(ctx, tgt.operator())
	if err != nil {
		return err
	}
	defer rm.Close()
	stopProgress := showProgress(ctx, rm, b.IncidentID, 2*time.Second, say)
	defer stopProgress()
	nonce, err := cli.CeremonyNonce(ctx, rm, b.IncidentID)
	if err != nil {
		return err
	}
	if tgt.playHolders {
		say("rekey ceremony open (nonce %s); playing the key holders…", nonce)
		// Real holders take seconds between giving their current shares and
		// proving the new ones; the pause lets containment see both steps.
		if err := tgt.vault.PlayRekey(ctx, nonce, 3*time.Second); err != nil {
			return err
		}
		if tgt.sharesFile != "" {
			if err := writeKeys(tgt.sharesFile, tgt.vault.UnsealKeys); err != nil {
				return fmt.Errorf("the rekey completed but the new shares could not be saved (they are lost): %w", err)
			}
			say("the new unseal shares replace the old ones in %s", tgt.sharesFile)
		}
	} else {
		say("rekey ceremony open: key holders, run vault operator rekey -nonce=%s (and -verify with the new shares)…", nonce)
	}
	_, rotated, err := stream.Await(ctx, conn.JS, events.UnsealKeysRotated, func(_ event.Event, d events.UnsealKeysRotatedData) bool { return d.IncidentID == b.IncidentID })
	if err != nil {
		return err
	}
	say("unseal keys rotated: %d new shares, threshold %d, verified %v (unsealkeys.rotated)", rotated.Shares, rotated.Threshold, rotated.Verified)
	rotEv, rot, err := stream.Await(ctx, conn.JS, events.RotationCompleted, func(_ event.Event, d events.RotationCompletedData) bool { return d.IncidentID == b.IncidentID })
	if err != nil {
		return err
	}
	say("tenants rotated: %d completed, %d failed (rotation.completed)", rot.Completed, rot.Failed)
	notifiedEv, notified, err := stream.Await(ctx, conn.JS, events.NotificationsCompleted, func(_ event.Event, d events.NotificationsCompletedData) bool { return d.IncidentID == b.IncidentID })
	if err != nil {
		return err
	}
	stopProgress()
	say("tenants notified by email and webhook: %d sent, %d failed (notifications.completed)", notified.Sent, notified.Failed)
	done := notifiedEv.Time()
	if rotEv.Time().After(done) {
		done = rotEv.Time()
	}
	b.UnsealToNotifiedMS = done.Sub(unsealedEv.Time()).Milliseconds()
	say("unseal → every tenant rotated and notified: %s", time.Duration(b.UnsealToNotifiedMS)*time.Millisecond)
	_, restored, err := stream.Await(ctx, conn.JS, events.AccessRestored, func(_ event.Event, d events.AccessRestoredData) bool { return d.IncidentID == b.IncidentID })
	if err != nil {
		return err
	}
	say("access restored: auth methods %v re-enabled (access.restored)", restored.AuthMethods)
	_, resolved, err := stream.Await(ctx, conn.JS, events.IncidentResolved, func(_ event.Event, d events.IncidentResolvedData) bool { return d.IncidentID == b.IncidentID })
	if err != nil {
		return err
	}
	say("incident %s: %d tenants rotated, %d notified, %d failures (incident.resolved)", resolved.Outcome, resolved.TenantsRotated, resolved.TenantsNotified, resolved.Failures)
	return nil
}

// seedTenants fills the tenant directory and Vault with n tenants, as the
// platform would have them.
func seedTenants(ctx context.Context, tgt *target, n int) error {
	root, err := tgt.vault.Client()
	if err != nil {
		return err
	}
	o := tenantseed.Options{Count: n, Mount: tgt.mount, Prefix: tgt.prefix}
	if tgt.dns != nil {
		if o.DKIM, err = tgt.dns.SeedDKIM(drillSelectors, func(int) bool { return true }); err != nil {
			return err
		}
	}
	_, err = tenantseed.SeedURL(ctx, tgt.dbURL, root, o)
	return err
}

// triggerAndTrace publishes a sample breach with a traced CLI span and
// waits until Jaeger holds the trace with containment's consumer span.
func triggerAndTrace(ctx context.Context, tgt *target) (*drillBreach, error) {
	tel, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: events.ServiceCLI, LogOutput: io.Discard, OTLPEndpoint: tgt.otlp})
	if err != nil {
		return nil, err
	}
	conn, err := natsconn.Connect(ctx, natsconn.Options{URL: tgt.natsURL, Name: "lockdown-cli",
		User: events.UserSIEM, Password: tgt.siemPassword})
	if err != nil {
		return nil, err
	}
	defer cli.CloseNATS(conn)
	spanCtx, span := tel.TracerProvider.Tracer("lockdown-cli").Start(ctx, "lockdown-drill trigger")
	ev, pubErr := stream.NewPublisher(conn.JS, "/lockdown/drill", tel.TracerProvider).Publish(spanCtx, events.BreachDetected,
		events.BreachDetectedData{Summary: "drill: root token used from an unknown address", Severity: events.SeverityCritical,
			Indicators: []string{"source:lockdown-drill"}})
	span.End()
	traceID := span.SpanContext().TraceID().String()
	if err := errors.Join(pubErr, tel.Shutdown(ctx)); err != nil {
		return nil, err
	}
	b := &drillBreach{EventID: ev.ID(), TraceID: traceID}
	if tgt.jaegerQuery == "" || tgt.otlp == "" {
		return b, nil // no trace to check
	}
	b.TraceURL = tgt.jaegerQuery + "/api/traces/" + traceID
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		spans, svcs, err := traceSummary(ctx, b.TraceURL)
		if err == nil {
			b.Spans, b.Services = spans, svcs
			for _, s := range svcs {
				if s == events.ServiceContainment {
					return b, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return nil, errors.New("containment's span did not reach Jaeger within 30s")
}

func traceSummary(ctx context.Context, url string) (int, []string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }() // a response body: nothing to lose
	var body struct {
		Data []struct {
			Spans     []json.RawMessage `json:"spans"`
			Processes map[string]struct {
				ServiceName string `json:"serviceName"`
			} `json:"processes"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || len(body.Data) == 0 {
		return 0, nil, fmt.Errorf("trace not found yet")
	}
	var svcs []string
	for _, p := range body.Data[0].Processes {
		svcs = append(svcs, p.ServiceName)
	}
	return len(body.Data[0].Spans), svcs, nil
}

// intrude plays the attacker: a token of its own (a policy that reads
// tenants' secrets) reads the secrets of n spread-out tenants and is
// refused once elsewhere, so the audit log holds what the assessor must
// find. It returns the tenants read.
func intrude(ctx context.Context, tgt *target, tenants, n int) ([]string, error) {
	read := []string{}
	if n == 0 {
		return read, nil
	}
	root, err := tgt.vault.Client()
	if err != nil {
		return nil, err
	}
	mount := tgt.mount
	if err := root.Sys().PutPolicyWithContext(ctx, "drill-intruder", fmt.Sprintf(`path "%s/data/tenants/*" { capabilities = ["read"] }`, mount)); err != nil {
		return nil, err
	}
	tok, err := root.Auth().Token().CreateWithContext(ctx, &vault.TokenCreateRequest{Policies: []string{"drill-intruder"}, DisplayName: "intruder", NoDefaultPolicy: true, TTL: "1h"})
	if err != nil {
		return nil, err
	}
	intruder, err := root.Clone()
	if err != nil {
		return nil, err
	}
	intruder.SetToken(tok.Auth.ClientToken)
	if tgt.tapDir != "" {
		// On the drill's own stack the intruder also holds root and taps
		// Vault: an audit device logging in clear, to receive every secret
		// the rotation writes. The drill checks afterwards that it got none.
		rootTok, err := root.Auth().Token().CreateOrphanWithContext(ctx, &vault.TokenCreateRequest{Policies: []string{"root"}, DisplayName: "intruder-root"})
		if err != nil {
			return nil, err
		}
		tapper, err := root.Clone()
		if err != nil {
			return nil, err
		}
		tapper.SetToken(rootTok.Auth.ClientToken)
		tgt.tapFile = filepath.Join(tgt.tapDir, "intruder-tap.log")
		if err := tapper.Sys().EnableAuditWithOptionsWithContext(ctx, drillTap, &vault.EnableAuditOptions{Type: "file",
			Options: map[string]string{"file_path": tgt.tapFile, "log_raw": "true"}}); err != nil {
			return nil, fmt.Errorf("plant the intruder's audit device: %w", err)
		}
	}
	for i := range n {
		id := tenantseed.IDWith(tgt.prefix, i*tenants/n)
		secrets := credentials.TenantSecrets(id, false)
		for _, kind := range slices.Sorted(maps.Keys(secrets)) {
			path := secrets[kind]
			s, err := intruder.KVv2(mount).Get(ctx, path)
			if err != nil {
				return nil, err
			}
			if key, _ := s.Data["private_key"].(string); key != "" && tgt.tapControl == "" {
				// A value the tap must show (the tenant's DKIM key as
				// seeded): proof the check can find one.
				tgt.tapControl = key
			}
		}
		read = append(read, id)
	}
	// A probe where it has no right: the audit log records the refusal.
	if _, err := intruder.Logical().ReadWithContext(ctx, "sys/policies/acl/root"); err == nil {
		return nil, errors.New("the intruder's token was not refused where it should be")
	}
	return read, nil
}

// drillTap is the path of the intruder's audit device.
const drillTap = "drill-intruder-tap"

// verifyTap reads every tenant's rotated secrets with the break-glass
// token and looks for each value in the intruder's audit file
// (keycheck.Leaked: plain and JSON-escaped).
func verifyTap(ctx context.Context, tgt *target, tenants int, v *verification) error {
	captured, err := os.ReadFile(tgt.tapFile)
	if err != nil {
		return fmt.Errorf("the intruder's audit file: %w", err)
	}
	c, err := tgt.vault.Client()
	if err != nil {
		return err
	}
	c.SetToken(tgt.breakGlass)
	v.TapChecked, v.TapRecordedBefore = true, keycheck.Leaked(captured, tgt.tapControl)
	for i := range tenants {
		id := tenantseed.IDWith(tgt.prefix, i)
		for _, path := range credentials.TenantSecrets(id, false) {
			s, err := c.KVv2(tgt.mount).Get(ctx, path)
			if err != nil {
				return err
			}
			for _, field := range []string{"private_key", "password"} {
				if val, _ := s.Data[field].(string); val != "" && keycheck.Leaked(captured, val) {
					v.ValuesInTap++
				}
			}
		}
	}
	devices, err := c.Sys().ListAuditWithContext(ctx)
	if err != nil {
		return err
	}
	_, v.TapStillEnabled = devices[drillTap+"/"]
	return nil
}

// rotationWriteKey is the key of a rotated secret's data whose only key is
// the rotator's write id, "<incident>/<random>" (the Vault layout of
// docs/operations.md; services/rotator/internal/rotation.WriteKey).
const rotationWriteKey = "lockdown_write"

// verify checks, from Vault and Mailpit themselves, that every tenant was
// rotated and notified once. It reads Vault with the rotator's token (the
// root token of the disposable Vault was revoked with every other token),
// which may read no secret: it reads each secret's subkeys, whose key
// names carry the write id and so the incident.
func verify(ctx context.Context, tgt *target, incidentID string, tenants int) (*verification, error) {
	root, err := tgt.vault.Client()
	if err != nil {
		return nil, err
	}
	token, err := tgt.verifyToken()
	if err != nil {
		return nil, err
	}
	root.SetToken(token)
	v := &verification{Tenants: tenants}
	for i := range tenants {
		id := tenantseed.IDWith(tgt.prefix, i)
		rotated := true
		for _, path := range credentials.TenantSecrets(id, false) {
			s, err := root.Logical().ReadWithContext(ctx, tgt.mount+"/subkeys/"+path)
			if err != nil {
				return nil, err
			}
			rotated = rotated && writtenBy(s, incidentID)
		}
		if rotated {
			v.RotatedInVault++
		}
		keys, err := root.Logical().ListWithContext(ctx, tgt.mount+"/metadata/api_keys/"+id)
		if err != nil {
			return nil, err
		}
		if keys != nil {
			if list, ok := keys.Data["keys"].([]any); ok {
				v.APIKeysLeft += len(list)
			}
		}
	}
	if tgt.dns != nil {
		if err := verifyDKIM(ctx, tgt, tenants, v); err != nil {
			return nil, err
		}
	}
	if tgt.tapFile != "" && tgt.breakGlass != "" {
		if err := verifyTap(ctx, tgt, tenants, v); err != nil {
			return nil, err
		}
	}
	if tgt.mailpit == nil {
		return v, nil // no mailbox to check: the report's counts stand alone
	}
	v.MailChecked = true
	msgs, err := tgt.mailpit.Messages(ctx)
	if err != nil {
		return nil, err
	}
	perTenant := map[string]int{}
	for _, m := range msgs {
		if h := m.Headers["X-Lockdown-Incident"]; len(h) == 1 && h[0] == incidentID && len(m.To) == 1 {
			v.MessagesForThis++
			perTenant[m.To[0].Address]++
		}
	}
	for _, n := range perTenant {
		if n == 1 {
			v.TenantsMailed++
		}
	}
	return v, nil
}

// awaitTrace polls Jaeger until the trace holds spans of every wanted
// service (exporters flush in batches) or a minute passes.
func awaitTrace(ctx context.Context, url string, want []string) (int, []string, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		spans, svcs, err := traceSummary(ctx, url)
		missing := []string{}
		for _, w := range want {
			if !slices.Contains(svcs, w) {
				missing = append(missing, w)
			}
		}
		if err == nil && len(missing) == 0 {
			sort.Strings(svcs)
			return spans, svcs, nil
		}
		if time.Now().After(deadline) {
			return spans, svcs, fmt.Errorf("the incident's trace lacks spans of %v", missing)
		}
		select {
		case <-ctx.Done():
			return spans, svcs, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// handOver writes what the incident's commands print into dir, through the
// commands' own code: the report (Markdown and JSON) and the status.
func handOver(ctx context.Context, dir string, tgt *target, incidentID string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rm, err := cli.OpenReadModel(ctx, tgt.operator())
	if err != nil {
		return err
	}
	defer rm.Close()
	r, err := rm.Report(ctx, incidentID)
	if err != nil {
		return err
	}
	v, err := rm.Incident(ctx, incidentID)
	if err != nil {
		return err
	}
	for name, write := range map[string]func(io.Writer) error{
		"report.md":   r.Markdown,
		"report.json": func(w io.Writer) error { return cli.PrintJSON(w, r) },
		"status.json": func(w io.Writer) error { return cli.PrintJSON(w, v) },
		"status-watch.txt": func(w io.Writer) error {
			var errOut strings.Builder
			if code := cli.WatchStatus(ctx, rm, incidentID, w, &errOut, false, ""); code != cli.ExitOK {
				return fmt.Errorf("lockdown status --watch: exit %d: %s", code, errOut.String())
			}
			return nil
		},
	} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		err = write(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// writtenBy says whether a secret's latest version (its subkeys) was
// written by a rotation of the incident.
func writtenBy(s *vault.Secret, incidentID string) bool {
	if s == nil {
		return false
	}
	sub, _ := s.Data["subkeys"].(map[string]any)
	ids, _ := sub[rotationWriteKey].(map[string]any)
	for id := range ids {
		if strings.HasPrefix(id, incidentID+"/") {
			return true
		}
	}
	return false
}

// flagSet reports whether the flag was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
