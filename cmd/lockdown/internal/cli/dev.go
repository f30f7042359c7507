package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/stream"
	"github.com/lockdown/lockdown/pkg/platform/localstack"
	"github.com/lockdown/lockdown/pkg/platform/natsconn"
	"github.com/lockdown/lockdown/pkg/platform/telemetry"
	"github.com/lockdown/lockdown/pkg/platform/tenantseed"
)

// services are started by `lockdown dev` in this order.
var services = []string{events.ServiceContainment, events.ServiceAssessor, events.ServiceRotator, events.ServiceNotifier}

// devReport is what `dev --json` prints once everything runs.
type devReport struct {
	Servers  map[string]string `json:"servers"`
	Services []devService      `json:"services"`
	Breach   *devBreach        `json:"breach,omitempty"`
	StackDir string            `json:"stack_dir"`
}

type devService struct {
	Name      string `json:"name"`
	PID       int    `json:"pid"`
	Connected bool   `json:"connected"`
	Log       string `json:"log"`
}

type devBreach struct {
	EventID    string `json:"event_id"`
	IncidentID string `json:"incident_id"`
	// SealedMS is breach published → every node confirmed sealed.
	SealedMS int64 `json:"sealed_ms"`
	// GateMS is sealed → unsealed, with Lockdown playing the key holders.
	GateMS   int64    `json:"gate_ms"`
	TraceID  string   `json:"trace_id"`
	TraceURL string   `json:"trace_url"`
	Spans    int      `json:"spans"`
	Services []string `json:"services"`
}

func runDev(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := newFlags("dev", errOut)
	binDir := fs.String("bin-dir", envOr("BIN_DIR", ""), "folder of the service binaries (default: beside this executable)")
	runFor := fs.Duration("for", 0, "stop after this long; 0 keeps running until Ctrl-C")
	trigger := fs.Bool("trigger", true, "publish a sample breach and follow its trace")
	tenants := fs.Int("tenants", 20, "tenants to seed in the directory and in Vault (SSH, SMTP, DKIM, API keys)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *binDir == "" {
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintf(errOut, "lockdown dev: %v\n", err)
			return ExitFailure
		}
		*binDir = filepath.Dir(exe)
	}
	say := func(format string, a ...any) {
		if !*asJSON {
			fmt.Fprintf(out, format+"\n", a...)
		}
	}

	say("starting the local stack (NATS, PostgreSQL, Vault, Jaeger, Mailpit)…")
	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	stack, err := localstack.Start(startCtx, localstack.All())
	cancel()
	if err != nil {
		fmt.Fprintf(errOut, "lockdown dev: %v\n", err)
		return ExitFailure
	}
	defer func() {
		say("stopping services and servers…")
		if err := stack.Close(); err != nil {
			fmt.Fprintf(errOut, "lockdown dev: teardown: %v\n", err)
		}
	}()
	report := devReport{StackDir: stack.Dir, Servers: map[string]string{
		"nats": stack.NATS.URL, "postgres": fmt.Sprintf("127.0.0.1:%d", stack.Postgres.Port), "vault": stack.Vault.Addr,
		"jaeger_query": stack.Jaeger.QueryURL, "jaeger_otlp_http": stack.Jaeger.OTLPHTTPEndpoint, "mailpit": stack.Mailpit.APIURL,
	}}

	for _, svc := range services {
		pid, logPath, err := stack.Spawn(svc, filepath.Join(*binDir, svc), nil, stack.Env(svc))
		if err != nil {
			fmt.Fprintf(errOut, "lockdown dev: %v (run `make build`)\n", err)
			return ExitFailure
		}
		report.Services = append(report.Services, devService{Name: svc, PID: pid, Log: logPath})
	}
	waitCtx, cancel := context.WithTimeout(ctx, time.Minute)
	err = waitConnected(waitCtx, stack.NATS.MonitorPort, report.Services)
	cancel()
	if err != nil {
		fmt.Fprintf(errOut, "lockdown dev: %v\n", err)
		return ExitFailure
	}
	say("servers:")
	for _, k := range []string{"nats", "postgres", "vault", "jaeger_query", "mailpit"} {
		say("  %-13s %s", k, report.Servers[k])
	}
	if err := seedTenants(ctx, stack, *tenants); err != nil {
		fmt.Fprintf(errOut, "lockdown dev: seeding tenants: %v\n", err)
		return ExitFailure
	}
	say("seeded %d tenants (directory, and SSH/SMTP/DKIM secrets and API keys in Vault)", *tenants)
	say("services (connected to NATS, topology ensured):")
	for _, s := range report.Services {
		say("  %-12s pid %-7d log %s", s.Name, s.PID, s.Log)
	}

	if *trigger {
		b, err := triggerAndTrace(ctx, stack)
		if err != nil {
			fmt.Fprintf(errOut, "lockdown dev: %v\n", err)
			return ExitFailure
		}
		say("breach %s published as the SIEM", b.EventID)
		if err := followIncident(ctx, stack, b, say); err != nil {
			fmt.Fprintf(errOut, "lockdown dev: %v\n", err)
			return ExitFailure
		}
		report.Breach = b
		say("one trace %s with %d spans across %v:\n  %s", b.TraceID, b.Spans, b.Services, b.TraceURL)
		if !*asJSON {
			runStatus(ctx, []string{b.IncidentID, "--database-url", stack.Postgres.URL}, out, errOut)
		}
	}
	if *asJSON {
		printJSON(out, report)
	}
	if *runFor > 0 {
		say("running for %s…", *runFor)
		select {
		case <-ctx.Done():
		case <-time.After(*runFor):
		}
	} else if *runFor == 0 {
		say("running; press Ctrl-C to stop")
		<-ctx.Done()
	}
	return ExitOK
}

// waitConnected polls the NATS monitoring endpoint until every service's
// named connection is there: proof that it loaded its config, connected and
// ensured the topology.
func waitConnected(ctx context.Context, monitorPort int, svcs []devService) error {
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
				resp.Body.Close()
			}
		}
		missing := ""
		for i := range svcs {
			svcs[i].Connected = names["lockdown-"+svcs[i].Name]
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

// followIncident waits for the incident the breach opened to be sealed,
// then plays the key holders (the stack's Vault is disposable: this is the
// one place Lockdown holds unseal shares) and waits for the unseal gate.
func followIncident(ctx context.Context, stack *localstack.Stack, b *devBreach, say func(string, ...any)) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := natsconn.Connect(ctx, natsconn.Options{URL: stack.NATS.URL, Name: "lockdown-cli",
		User: events.UserOperator, Password: stack.NATS.Password(events.UserOperator)})
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
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
	say("playing the key holders: unsealing with %d of %d shares…", localstack.VaultThreshold, localstack.VaultShares)
	if err := stack.Vault.Unseal(ctx); err != nil {
		return err
	}
	_, unsealed, err := stream.Await(ctx, conn.JS, events.VaultUnsealed, func(_ event.Event, d events.VaultUnsealedData) bool { return d.IncidentID == b.IncidentID })
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
	nonce, err := ceremonyNonce(ctx, stack.Postgres.URL, b.IncidentID)
	if err != nil {
		return err
	}
	say("rekey ceremony open (nonce %s); playing the key holders…", nonce)
	// Real holders take seconds between giving their current shares and
	// proving the new ones; the pause lets containment see both steps.
	if err := stack.Vault.PlayRekey(ctx, nonce, 3*time.Second); err != nil {
		return err
	}
	_, rotated, err := stream.Await(ctx, conn.JS, events.UnsealKeysRotated, func(_ event.Event, d events.UnsealKeysRotatedData) bool { return d.IncidentID == b.IncidentID })
	if err != nil {
		return err
	}
	say("unseal keys rotated: %d new shares, threshold %d, verified %v (unsealkeys.rotated)", rotated.Shares, rotated.Threshold, rotated.Verified)
	_, rot, err := stream.Await(ctx, conn.JS, events.RotationCompleted, func(_ event.Event, d events.RotationCompletedData) bool { return d.IncidentID == b.IncidentID })
	if err != nil {
		return err
	}
	say("tenants rotated: %d completed, %d failed (rotation.completed)", rot.Completed, rot.Failed)
	_, notified, err := stream.Await(ctx, conn.JS, events.NotificationsCompleted, func(_ event.Event, d events.NotificationsCompletedData) bool { return d.IncidentID == b.IncidentID })
	if err != nil {
		return err
	}
	say("tenants notified by email and webhook: %d sent, %d failed (notifications.completed)", notified.Sent, notified.Failed)
	_, restored, err := stream.Await(ctx, conn.JS, events.AccessRestored, func(_ event.Event, d events.AccessRestoredData) bool { return d.IncidentID == b.IncidentID })
	if err != nil {
		return err
	}
	say("access restored: auth methods %v re-enabled (access.restored)", restored.AuthMethods)
	return nil
}

// seedTenants fills the tenant directory and Vault with n tenants, as the
// platform would have them.
func seedTenants(ctx context.Context, stack *localstack.Stack, n int) error {
	pool, err := pgxpool.New(ctx, stack.Postgres.URL)
	if err != nil {
		return err
	}
	defer pool.Close()
	root, err := stack.Vault.Client()
	if err != nil {
		return err
	}
	_, err = tenantseed.Seed(ctx, pool, root, tenantseed.Options{Count: n, Mount: localstack.VaultKVMount})
	return err
}

// ceremonyNonce waits until containment has opened the rekey ceremony and
// returns its nonce, as `lockdown status` shows it to the key holders.
func ceremonyNonce(ctx context.Context, dbURL, incidentID string) (string, error) {
	conn, err := connectDB(ctx, dbURL)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	for {
		var nonce string
		err := conn.QueryRow(ctx, `SELECT coalesce(state->'ceremony'->>'nonce', '') FROM containment.recovery WHERE incident_id::text = $1`, incidentID).Scan(&nonce)
		if err == nil && nonce != "" {
			return nonce, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("the rekey ceremony did not open: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// triggerAndTrace publishes a sample breach with a traced CLI span and
// waits until Jaeger holds the trace with containment's consumer span.
func triggerAndTrace(ctx context.Context, stack *localstack.Stack) (*devBreach, error) {
	tel, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: events.ServiceCLI, LogOutput: io.Discard, OTLPEndpoint: stack.Jaeger.OTLPHTTPEndpoint})
	if err != nil {
		return nil, err
	}
	conn, err := natsconn.Connect(ctx, natsconn.Options{URL: stack.NATS.URL, Name: "lockdown-cli",
		User: events.UserSIEM, Password: stack.NATS.Password(events.UserSIEM)})
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	spanCtx, span := tel.TracerProvider.Tracer("lockdown-cli").Start(ctx, "lockdown dev trigger")
	ev, pubErr := stream.NewPublisher(conn.JS, "/lockdown/dev", tel.TracerProvider).Publish(spanCtx, events.BreachDetected,
		events.BreachDetectedData{Summary: "drill: root token used from an unknown address", Severity: events.SeverityCritical,
			Indicators: []string{"source:lockdown dev"}})
	span.End()
	traceID := span.SpanContext().TraceID().String()
	if err := errors.Join(pubErr, tel.Shutdown(ctx)); err != nil {
		return nil, err
	}
	b := &devBreach{EventID: ev.ID(), TraceID: traceID, TraceURL: stack.Jaeger.QueryURL + "/api/traces/" + traceID}
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
	defer resp.Body.Close()
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
