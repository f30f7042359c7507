// Package app is the rotator's composition root: the planner (one plan per
// incident, once it is assessed and its access revoked) and the job
// workers, which any number of rotator processes share.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/pkg/platform/config"
	"github.com/lockdown/lockdown/pkg/platform/dkimdns"
	"github.com/lockdown/lockdown/pkg/platform/failpoint"
	"github.com/lockdown/lockdown/pkg/platform/outbox"
	"github.com/lockdown/lockdown/pkg/platform/runner"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/pkg/platform/vaultdecl"
	"github.com/lockdown/lockdown/pkg/platform/vaulttoken"
	"github.com/lockdown/lockdown/services/rotator/internal/dkimpub"
	"github.com/lockdown/lockdown/services/rotator/internal/kinds"
	"github.com/lockdown/lockdown/services/rotator/internal/kinds/apikeys"
	"github.com/lockdown/lockdown/services/rotator/internal/kinds/dkim"
	"github.com/lockdown/lockdown/services/rotator/internal/rotation"
	"github.com/lockdown/lockdown/services/rotator/internal/store"
	"github.com/lockdown/lockdown/services/rotator/internal/vaultkv"
)

// Config is the rotator's configuration.
type Config struct {
	config.Common
	DatabaseURL    string        `env:"DATABASE_URL" secret:"true" doc:"PostgreSQL connection string (schemas rotator and directory are created at start)."`
	VaultAddr      string        `env:"VAULT_ADDR" doc:"Vault API address."`
	VaultToken     string        `env:"VAULT_TOKEN" secret:"true" doc:"Periodic orphan token with deploy/vault/policies/lockdown-rotator.hcl. Prefer VAULT_TOKEN_FILE: a token from the environment cannot be replaced during an incident."`
	VaultTokenFile string        `env:"VAULT_TOKEN_FILE" doc:"File holding the token (wins over VAULT_TOKEN), shared with containment (its LOCKDOWN_ROTATOR_TOKEN_FILE): containment writes the token's successor there in every incident and the rotator re-reads it every second and on a refusal."`
	VaultTimeout   time.Duration `env:"VAULT_TIMEOUT" default:"10s" doc:"Timeout of one Vault request."`
	KVMount        string        `env:"KV_MOUNT" default:"secret" doc:"KV v2 mount of the tenants' secrets."`
	VaultBaseline  string        `env:"VAULT_BASELINE" default:"/etc/lockdown/baseline.json" doc:"The declaration of Vault's security configuration, containment's too: the rotator reads its audit devices and writes no secret while Vault has any other (a root intruder's device with log_raw would receive it in clear). Read at start: a missing or invalid one exits 2."`
	Policy         string        `env:"ROTATION_POLICY" default:"all" doc:"all (every tenant, as the runbook does) or affected (the assessment's tenants)."`
	Concurrency    int           `env:"ROTATION_CONCURRENCY" default:"128" doc:"Jobs one process runs at once (the consumer lets 128 be in flight across all processes). Most of a job is waiting on Vault, DNS and PostgreSQL, and each job waits for two DNS update rounds (DKIM_DNS_UPDATE_INTERVAL apart): enough jobs must be in flight to keep the cores busy meanwhile. 128 with rounds a second apart rotated 2,000 tenants on 2 cores with the cores 5–14% idle, against 20–30% with 64 and rounds 250 ms apart (docs/benchmarks.md)."`
	DKIMType       string        `env:"DKIM_KEY_TYPE" default:"rsa" doc:"rsa or ed25519."`
	DKIMBits       int           `env:"DKIM_RSA_BITS" default:"2048" doc:"RSA key size of new DKIM keys."`
	Pregenerate    bool          `env:"PREGENERATE" default:"true" doc:"Generate every directory tenant's key material in memory when an incident opens, while it waits at the unseal gate."`
	DKIMDNSServer  string        `env:"DKIM_DNS_SERVER" doc:"host:port of the authoritative DNS server of the platform's DKIM zone. Empty: no DNS — a new DKIM key is active at once and the tenant is told its record (the record may then be published nowhere)."`
	DKIMZone       string        `env:"DKIM_ZONE" doc:"The platform's DKIM zone, into which delegated tenants' selectors point by CNAME (directory.tenants.dkim_delegation). Required with DKIM_DNS_SERVER."`
	DKIMTSIGFile   string        `env:"DKIM_TSIG_FILE" doc:"File holding the TSIG key that may update TXT records in DKIM_ZONE, as <algorithm>:<name>:<base64 secret>. Required with DKIM_DNS_SERVER."`
	DKIMResolver   string        `env:"DKIM_RESOLVER" doc:"host:port of the DNS server that answers for tenants' own domains (a recursive resolver in production); DKIM_DNS_SERVER when empty."`
	DKIMInterval   time.Duration `env:"DKIM_DNS_UPDATE_INTERVAL" default:"1s" doc:"Least time between the starts of two update messages to DKIM_ZONE: the records of the jobs that arrive meanwhile go out together in the next. An authoritative server's work per update grows with the zone and hardly with the records in it (Knot: about 30 ms a message at 20,000 records), so fewer, larger messages cost it less. Knot 3.2 also holds an update that arrives less than a second after the previous one was answered, once the wall clock has passed into the next second, until a second after that answer (the NOTIFY it plans a second after every update: docs/benchmarks.md), so an interval under 1s sends no more updates a second and makes some wait up to a second. Each job waits up to this long per record. 0: the next message as soon as the last is answered (a commit per round). At most 10s."`
	DKIMSelectors  []string      `env:"DKIM_SELECTORS" default:"ld1,ld2" doc:"The two selectors a delegated tenant points into DKIM_ZONE; each rollover moves to the one without a live key and revokes the other."`
	DKIMRecheck    time.Duration `env:"DKIM_RECHECK" default:"1m" doc:"How often the DNS of a tenant that publishes its own records is checked for the new DKIM record."`
	Catalogue      string        `env:"ROTATION_CATALOGUE" default:"/etc/lockdown/catalogue.json" doc:"The rotation catalogue (deploy/rotation/catalogue.json): the platform-wide credentials an incident rotates besides the tenants' (transit keys, database credentials, certificates, platform secrets). Read at start: a missing or invalid one exits 2. The rotator's Vault policy must grant what it names (rotator policy prints it)."`
	RotateAfter    string        `env:"ROTATE_AFTER" default:"revoke" doc:"When the tenants' secrets are rotated: revoke (right after access.revoked: stolen secrets stop working soonest) or rekey (after unsealkeys.rotated: no new secret is written while the old unseal shares, with a copy of Vault's storage, could still decrypt it). See docs/architecture.md."`
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	errs := []error{c.Common.Validate()}
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(config.Prefix+format, a...)) }
	if c.DatabaseURL == "" {
		bad("DATABASE_URL is required")
	}
	if c.VaultAddr == "" || (c.VaultToken == "" && c.VaultTokenFile == "") {
		bad("VAULT_ADDR and VAULT_TOKEN_FILE (or VAULT_TOKEN) are required")
	}
	if c.Policy != rotation.PolicyAll && c.Policy != rotation.PolicyAffected {
		bad("ROTATION_POLICY %q is not all or affected", c.Policy)
	}
	if c.DKIMType != "rsa" && c.DKIMType != "ed25519" {
		bad("DKIM_KEY_TYPE %q is not rsa or ed25519", c.DKIMType)
	}
	if c.DKIMType == "rsa" && c.DKIMBits < 2048 {
		bad("DKIM_RSA_BITS must be at least 2048")
	}
	// More than the consumer lets be in flight across all processes would
	// only hold workers that never get a job.
	jobs, _ := events.ConsumerOf(events.ConsumerRotatorJobs)
	if c.Concurrency < 1 || c.Concurrency > jobs.MaxAckPending {
		bad("ROTATION_CONCURRENCY must be between 1 and %d (the jobs' consumer's MaxAckPending)", jobs.MaxAckPending)
	}
	if _, err := vaultdecl.Load(c.VaultBaseline); err != nil {
		bad("VAULT_BASELINE: %v", err)
	}
	if _, err := loadCatalogue(c.Catalogue); err != nil {
		bad("ROTATION_CATALOGUE: %v", err)
	}
	if c.DKIMDNSServer != "" && (c.DKIMZone == "" || c.DKIMTSIGFile == "") {
		bad("DKIM_ZONE and DKIM_TSIG_FILE are required with DKIM_DNS_SERVER")
	}
	if len(c.DKIMSelectors) != 2 || c.DKIMSelectors[0] == c.DKIMSelectors[1] || c.DKIMSelectors[0] == "" || c.DKIMSelectors[1] == "" {
		bad("DKIM_SELECTORS must be two different selectors")
	}
	if c.DKIMInterval < 0 || c.DKIMInterval > 10*time.Second {
		bad("DKIM_DNS_UPDATE_INTERVAL must be between 0 and 10s")
	}
	if c.DKIMRecheck < time.Second {
		bad("DKIM_RECHECK must be at least 1s")
	}
	if c.RotateAfter != RotateAfterRevoke && c.RotateAfter != RotateAfterRekey {
		bad("ROTATE_AFTER %q is not revoke or rekey", c.RotateAfter)
	}
	return errors.Join(errs...)
}

// The orders of LOCKDOWN_ROTATE_AFTER: the event that clears the rotation
// to write, besides the assessment.
const (
	RotateAfterRevoke = "revoke" // access.revoked
	RotateAfterRekey  = "rekey"  // unsealkeys.rotated
)

// Run opens the rotator's adapters and serves until ctx ends.
func Run(ctx context.Context, rt *runner.Runtime, cfg *Config) error {
	return runner.OpenAndServe(ctx, rt, cfg, Open, Serve)
}

// Adapters are what the rotator's work needs from outside, built from the
// configuration by Open.
type Adapters struct {
	Store *store.Store
	Vault rotation.Vault
	// DNS publishes DKIM records (nil: none configured).
	DNS rotation.DNS
	// Failpoints are the crash tests' kill points (nil: none).
	Failpoints *failpoint.Set
	// Platform runs the catalogue's platform-wide entries (nil: none).
	Platform *rotation.Platform
}

// Open builds the rotator's adapters from the configuration and registers
// their readiness checks; closeAdapters releases them (and stops renewing
// the token).
func Open(ctx context.Context, rt *runner.Runtime, cfg *Config) (a Adapters, closeAdapters func(), err error) {
	db, renewCtx, release, err := runner.OpenStore(ctx, func(ctx context.Context) (*store.Store, error) { return store.Open(ctx, cfg.DatabaseURL) })
	if err != nil {
		return a, nil, err
	}
	defer func() {
		if err != nil {
			release() // closeAdapters is nil on an error return
		}
	}()
	token, err := vaulttoken.Open(cfg.VaultToken, cfg.VaultTokenFile)
	if err != nil {
		return a, nil, err
	}
	baseline, err := vaultdecl.Load(cfg.VaultBaseline)
	if err != nil {
		return a, nil, err
	}
	kv, err := vaultkv.New(cfg.VaultAddr, token, cfg.KVMount, cfg.VaultTimeout, baseline.AuditDevices)
	if err != nil {
		return a, nil, err
	}
	cat, err := loadCatalogue(cfg.Catalogue)
	if err != nil {
		return a, nil, err
	}
	rt.AddCheck("postgres", func(ctx context.Context) error { return db.Pool().Ping(ctx) })
	rt.AddCheck("dependencies", rt.DependenciesReady)
	// The periodic token lives as long as it is renewed; its successor,
	// written by containment during an incident, is picked up from the file.
	renewer, err := vaulttoken.New("rotator", []string{cfg.VaultAddr}, token, cfg.VaultTimeout, rt.Logger)
	if err != nil {
		return a, nil, err
	}
	rt.AddCheck("vault-token", renewer.Check)
	// Reachable is enough: with Vault sealed the jobs wait and retry.
	rt.AddCheck("vault", renewer.Reachable())
	go renewer.Run(renewCtx) //nolint:errcheck // Run returns nil when ctx ends
	go token.Watch(renewCtx, time.Second)
	fp, err := rt.Failpoints()
	if err != nil {
		return a, nil, err
	}
	var dns rotation.DNS
	if cfg.DKIMDNSServer != "" {
		p, err := dkimpub.New(cfg.DKIMDNSServer, cfg.DKIMZone, cfg.DKIMTSIGFile, cfg.DKIMResolver, cfg.DKIMInterval)
		if err != nil {
			return a, nil, err
		}
		dns = p
	} else {
		rt.Logger.Warn("no DKIM DNS configured: new DKIM keys become active before any record is published (LOCKDOWN_DKIM_DNS_SERVER)")
	}
	platform := &rotation.Platform{Catalogue: cat, Kinds: Registry(), Vault: kv, Store: db, Instance: instance(), Failpoints: fp}
	return Adapters{Store: db, Vault: kv, DNS: dns, Failpoints: fp, Platform: platform}, release, nil
}

// Serve runs the planner, the workers and the outbox relay over the
// adapters until ctx ends.
func Serve(ctx context.Context, rt *runner.Runtime, cfg *Config, a Adapters) error {
	db, kv, dns, fp, platform := a.Store, a.Vault, a.DNS, a.Failpoints, a.Platform
	tp := rt.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	pub := stream.NewPublisher(rt.NATS.JS, events.SourceOf(events.ServiceRotator), tp)
	db.SetPreparer(pub)
	tracer := tp.Tracer("github.com/lockdown/lockdown/services/rotator")
	plan := func(ctx context.Context, incidentID string, assessed, revoked bool, affected rotation.Affected) error {
		ctx, span := tracer.Start(ctx, "plan rotation") // every job's send span is its child: the fan-out
		defer span.End()
		if err := rotation.Plan(ctx, db, cfg.Policy, incidentID, assessed, revoked, affected, platform.Jobs()); err != nil {
			return err
		}
		fp.Hit("rotator.planner.saved")
		return nil
	}
	planner := stream.Route(map[events.Name]stream.Handler{
		events.AssessmentCompleted: stream.Decoded(func(ctx context.Context, _ *stream.Delivery, d events.AssessmentCompletedData) error {
			return plan(ctx, d.IncidentID, true, false, rotation.Affected{Tenants: d.AffectedTenants, Cut: d.AffectedTotal > len(d.AffectedTenants)})
		}),
		// The gate's second condition is the event LOCKDOWN_ROTATE_AFTER
		// names; the other is acknowledged and ignored.
		events.AccessRevoked: stream.Decoded(func(ctx context.Context, _ *stream.Delivery, d events.AccessRevokedData) error {
			if cfg.RotateAfter != RotateAfterRevoke {
				return nil
			}
			return plan(ctx, d.IncidentID, false, true, rotation.Affected{})
		}),
		events.UnsealKeysRotated: stream.Decoded(func(ctx context.Context, _ *stream.Delivery, d events.UnsealKeysRotatedData) error {
			if cfg.RotateAfter != RotateAfterRekey {
				return nil
			}
			return plan(ctx, d.IncidentID, false, true, rotation.Affected{})
		}),
		events.RotationRetryRequested: stream.Decoded(func(ctx context.Context, _ *stream.Delivery, d events.RotationRetryData) error {
			jobs, entries, err := rotation.Retry(ctx, db, d.IncidentID, d.TenantID)
			if errors.Is(err, rotation.ErrNothingToRetry) {
				return stream.Permanent(err) // the dead letter tells the operator
			}
			if err == nil {
				rt.Logger.InfoContext(ctx, "failed jobs retried", slog.String("incident_id", d.IncidentID), slog.Int("tenants", len(jobs)),
					slog.Int("platform_entries", len(entries)), slog.String("requested_by", d.RequestedBy))
			}
			return err
		}),
	})
	relay := &outbox.Relay{Pool: db.Pool(), Schema: store.Schema, JS: rt.NATS.JS, Logger: rt.Logger, Failpoints: fp,
		OnDuplicate: rt.OutboxDuplicate, Source: events.SourceOf(events.ServiceRotator), DeadLetters: events.OutboxDeadLetters(events.ServiceRotator)}
	rt.AddAlarm("outbox", outbox.Alarm(db.Pool(), store.Schema))
	rt.AddInfo("outbox_pending", outbox.PendingInfo(db.Pool(), store.Schema))
	var pregen *rotation.Pregen
	if cfg.Pregenerate {
		pregen = rotation.NewPregen()
	}
	worker := rotation.NewWorker(rotation.Config{Mount: cfg.KVMount, Instance: instance(), Failpoints: fp,
		Secrets: TenantSecrets(), DKIM: dkim.Kind{Type: cfg.DKIMType, Bits: cfg.DKIMBits}, APIKeys: apikeys.Kind{},
		DKIMSelectors: [2]string{cfg.DKIMSelectors[0], cfg.DKIMSelectors[1]}}, db, kv, dns, pregen)
	tenantJob := stream.Decoded(func(ctx context.Context, d *stream.Delivery, job events.RotationJobData) error {
		// Tell JetStream the job is alive at most every few seconds, not
		// after every step: each InProgress is a message.
		var last time.Time
		err := worker.Run(ctx, job, func() {
			if time.Since(last) > 5*time.Second {
				last = time.Now()
				_ = d.InProgress()
			}
		})
		if errors.Is(err, rotation.ErrUnknownTenant) || errors.Is(err, rotation.ErrStagedChanged) || errors.Is(err, dkimdns.ErrNeverSucceeds) {
			return stream.Permanent(err)
		}
		if err == nil {
			fp.Hit("rotator.job.finished")
		}
		return err // an outage (Vault, PostgreSQL) is retried without limit
	})
	platformJob := stream.Decoded(func(ctx context.Context, d *stream.Delivery, job events.RotationPlatformJobData) error {
		if platform == nil {
			return stream.Permanent(fmt.Errorf("%w: this rotator has no catalogue", rotation.ErrUnknownEntry))
		}
		var last time.Time
		err := platform.Run(ctx, job, func() {
			if time.Since(last) > 5*time.Second {
				last = time.Now()
				_ = d.InProgress()
			}
		})
		if errors.Is(err, rotation.ErrUnknownEntry) || errors.Is(err, kinds.ErrPermanent) || errors.Is(err, vaultkv.ErrRefused) {
			return stream.Permanent(err)
		}
		return err // an outage (Vault, PostgreSQL) is retried without limit
	})
	jobs := stream.Route(map[events.Name]stream.Handler{events.RotationJob: tenantJob, events.RotationPlatformJob: platformJob})
	// A job that fails for good (unknown tenant, bad data, a panic) is
	// recorded as failed, so the plan completes and the tenant is told.
	failJob := func(ctx context.Context, d *stream.Delivery, cause error) error {
		if d == nil {
			return nil // undecodable: no job to name
		}
		if d.Event.Type() == events.RotationPlatformJob.Type() {
			job, err := events.DataAs[events.RotationPlatformJobData](d.Event)
			if err != nil || platform == nil {
				return nil
			}
			return platform.Fail(ctx, job, cause.Error())
		}
		job, err := events.DataAs[events.RotationJobData](d.Event)
		if err != nil {
			return nil
		}
		step := "job"
		switch {
		case errors.Is(cause, rotation.ErrUnknownTenant):
			step = "plan"
		case errors.Is(cause, rotation.ErrStagedChanged):
			step = string(credentials.DKIM) // someone else wrote the staged key: never made active
		case errors.Is(cause, dkimdns.ErrNeverSucceeds):
			step = string(credentials.DKIM) // the DNS answered what no retry changes (REFUSED, NOTAUTH, out of zone)
		}
		return worker.Fail(ctx, job, step, cause.Error())
	}
	// Watch for incidents opening before any consumer starts, and make sure
	// the server has the subscription (Flush): an incident.opened published
	// while the process starts is then seen, not lost.
	var watch *incidentWatch
	if pregen != nil {
		watch = watchIncidents(rt)
	}
	w := runner.Wiring{
		Consumers: map[string]runner.Consumer{
			events.ConsumerRotatorPlanner: {Handler: planner},
			events.ConsumerRotatorJobs: {Handler: jobs, Tune: func(o *stream.ConsumerOptions) {
				o.Concurrency, o.OnPermanent = cfg.Concurrency, failJob
			}},
		},
		Loops: map[string]func(context.Context) error{"outbox relay": relay.Run},
	}
	if watch != nil {
		w.Loops["key pregeneration"] = func(ctx context.Context) error { return pregenerate(ctx, rt, cfg, db, pregen, watch) }
	}
	if dns != nil {
		w.Loops["DKIM recheck"] = func(ctx context.Context) error { return recheck(ctx, rt, cfg, worker) }
	}
	return rt.Serve(ctx, cfg.ShutdownTimeout, w)
}

// recheck looks, every DKIM_RECHECK / 10 (at least every second), for
// tenants whose new DKIM key waits for their own DNS; each is checked once
// per DKIM_RECHECK, by whichever rotator process takes it first.
func recheck(ctx context.Context, rt *runner.Runtime, cfg *Config, worker *rotation.Worker) error {
	tick := time.NewTicker(max(time.Second, cfg.DKIMRecheck/10))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		n, err := worker.Recheck(ctx, 200, cfg.DKIMRecheck)
		if err != nil && ctx.Err() == nil {
			rt.Logger.Warn("DKIM re-check", slog.Any("error", err))
		}
		if n > 0 {
			rt.Logger.Info("DKIM keys activated after the tenants published their records", slog.Int("tenants", n))
		}
	}
}

// instance names this process: host and pid.
func instance() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d", host, os.Getpid())
}

// incidentWatch is the plain subscription pre-generation reads from.
type incidentWatch struct {
	sub  *nats.Subscription
	msgs chan *nats.Msg
}

// watchIncidents subscribes every rotator process to incidents opening (a
// plain subscription: the durable consumers would hand the event to one
// process only). It returns nil when it cannot: pre-generation is best
// effort.
func watchIncidents(rt *runner.Runtime) *incidentWatch {
	w := &incidentWatch{msgs: make(chan *nats.Msg, 16)}
	sub, err := rt.NATS.NC.ChanSubscribe(events.IncidentOpened.Subject(), w.msgs)
	if err == nil {
		err = rt.NATS.NC.Flush()
	}
	if err != nil {
		rt.Logger.Warn("pre-generation disabled", slog.Any("error", err))
		return nil
	}
	w.sub = sub
	rt.Logger.Info("watching incidents for pre-generation")
	return w
}

// pregenerate generates, for every incident that opens, the key material
// of every directory tenant while the key holders work at the unseal gate.
// It is best effort: a missed event only means the jobs generate their own
// keys.
func pregenerate(ctx context.Context, rt *runner.Runtime, cfg *Config, db *store.Store, pregen *rotation.Pregen, w *incidentWatch) error {
	defer func() { _ = w.sub.Unsubscribe() }() // best effort: it fails only on a closed connection, which drops it anyway
	msgs := w.msgs
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-msgs:
			ev, _, err := events.Decode(m.Header, m.Data)
			if err != nil {
				continue
			}
			d, err := events.DataAs[events.IncidentOpenedData](ev)
			if err != nil {
				continue
			}
			tenants, err := db.Tenants(ctx)
			if err != nil {
				rt.Logger.Warn("pre-generation skipped: no directory", slog.Any("error", err))
				continue
			}
			go func() {
				start := time.Now()
				n, err := pregen.Generate(ctx, d.IncidentID, tenants, cfg.DKIMType, cfg.DKIMBits, rotation.Selector(d.IncidentID, time.Now()))
				rt.Logger.Info("key material pre-generated", slog.String("incident_id", d.IncidentID), slog.Int("tenants", n),
					slog.Duration("took", time.Since(start)), slog.Any("error", err))
			}()
		}
	}
}
