// Package app is the assessor's composition root: audit ingestion (socket
// listener, file follower) into PostgreSQL, and the assessment of each
// incident when it opens.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/config"
	"github.com/lockdown/lockdown/pkg/platform/runner"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/services/assessor/internal/assess"
	"github.com/lockdown/lockdown/services/assessor/internal/audit"
	"github.com/lockdown/lockdown/services/assessor/internal/ingest"
	"github.com/lockdown/lockdown/services/assessor/internal/store"
)

// Config is the assessor's configuration.
type Config struct {
	config.Common
	DatabaseURL string `env:"DATABASE_URL" secret:"true" doc:"PostgreSQL connection string (the assessor schema is created at start)."`

	AuditListen       string        `env:"AUDIT_LISTEN" default:"127.0.0.1:9514" doc:"TCP address of the listener for Vault's socket audit device; empty disables it."`
	AuditListenDevice string        `env:"AUDIT_LISTEN_DEVICE" default:"socket" doc:"Path of the socket audit device that writes to AUDIT_LISTEN, as 'vault audit list' shows it (without the slash). Vault salts accessor HMACs per device: entries are recorded with their device, and one token's accessors are tied together across devices."`
	AuditFile         string        `env:"AUDIT_FILE" doc:"Path of a file audit device's log to follow (rotation and truncation handled); empty disables it."`
	AuditFileDevice   string        `env:"AUDIT_FILE_DEVICE" default:"file" doc:"Path of the file audit device that writes AUDIT_FILE, as 'vault audit list' shows it (without the slash)."`
	FollowPoll        time.Duration `env:"AUDIT_FOLLOW_POLL" default:"250ms" doc:"How often the followed file is checked for new lines."`
	Buffer            int           `env:"AUDIT_BUFFER" default:"200000" doc:"Audit lines held in memory while PostgreSQL is slow or down; beyond it lines are dropped and counted."`
	BatchSize         int           `env:"AUDIT_BATCH" default:"5000" doc:"Entries per COPY batch."`
	FlushEvery        time.Duration `env:"AUDIT_FLUSH" default:"200ms" doc:"Longest wait before a partial batch is written."`
	MaxLine           int           `env:"AUDIT_MAX_LINE" default:"1048576" doc:"Longest audit line accepted, in bytes."`
	Parsers           int           `env:"AUDIT_PARSERS" default:"2" doc:"Goroutines parsing audit lines."`
	Writers           int           `env:"AUDIT_WRITERS" default:"2" doc:"Batches written at once, each on its own PostgreSQL connection."`

	TenantTemplates    []string      `env:"TENANT_TEMPLATES" default:"secret/data/tenants/{tenant}/,secret/metadata/tenants/{tenant}/,secret/data/api_keys/{tenant}/,secret/metadata/api_keys/{tenant}/" doc:"Path templates that locate the tenant in a secret path."`
	ExcludeTenants     []string      `env:"EXCLUDE_TENANTS" default:"test-tenant-id" doc:"Tenants never reported: the runbook's test tenant by default. Setting it replaces the default, so list test-tenant-id again to keep it."`
	TrustedActors      []string      `env:"TRUSTED_ACTORS" doc:"Vault entity ids (UUIDs, from 'vault read identity/entity/name/<name>') of the platform's own services: their reads are ordinary traffic unless they misbehave (denied, suspicious paths, token revoked). Display names are refused: any token creator chooses them."`
	SuspiciousPatterns []string      `env:"SUSPICIOUS_PATTERNS" default:"sys/raw/,sys/audit,sys/policies/acl/,sys/policy/,auth/token/create,sys/generate-root" doc:"Path prefixes whose every request counts as suspicious."`
	Window             time.Duration `env:"ASSESSMENT_WINDOW" default:"24h" doc:"How far before detection the audit log is read."`
	WidespreadAbove    int           `env:"WIDESPREAD_ABOVE" default:"10" doc:"More affected tenants than this makes the scope widespread."`
	ListLimit          int           `env:"ASSESSMENT_LIST_LIMIT" default:"500" doc:"Most suspicious events and secret reads listed in a stored assessment."`
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	errs := []error{c.Common.Validate()}
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(config.Prefix+format, a...)) }
	if c.DatabaseURL == "" {
		bad("DATABASE_URL is required")
	}
	if _, err := audit.ParseTemplates(c.TenantTemplates); err != nil {
		bad("TENANT_TEMPLATES: %v", err)
	}
	for _, a := range c.TrustedActors {
		if !entityID.MatchString(a) {
			bad("TRUSTED_ACTORS: %q is not a Vault entity id (a UUID such as 6b8f0c1e-3d0a-4c6e-9f1d-2a7e5b9c4d31, from 'vault read identity/entity/name/<name>'); display names are chosen by whoever creates a token and cannot make an actor trusted", a)
		}
	}
	if c.AuditListen != "" && c.AuditFile != "" && c.AuditListenDevice == c.AuditFileDevice {
		bad("AUDIT_LISTEN_DEVICE and AUDIT_FILE_DEVICE are both %q: two audit devices have two paths in Vault", c.AuditFileDevice)
	}
	for name, v := range map[string]int{"AUDIT_BUFFER": c.Buffer, "AUDIT_BATCH": c.BatchSize, "AUDIT_MAX_LINE": c.MaxLine, "ASSESSMENT_LIST_LIMIT": c.ListLimit} {
		if v < 1 {
			bad("%s must be positive", name)
		}
	}
	for name, d := range map[string]time.Duration{"AUDIT_FOLLOW_POLL": c.FollowPoll, "AUDIT_FLUSH": c.FlushEvery, "ASSESSMENT_WINDOW": c.Window} {
		if d <= 0 {
			bad("%s must be positive", name)
		}
	}
	return errors.Join(errs...)
}

// entityID is the form of a Vault entity id.
var entityID = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// PatternHit reports whether a path matches a suspicious pattern.
func (c *Config) PatternHit(e audit.Entry) bool {
	for _, p := range c.SuspiciousPatterns {
		if strings.HasPrefix(e.Path, p) {
			return true
		}
	}
	return false
}

// Run opens the assessor's adapters, binds its listener and serves until
// ctx ends.
func Run(ctx context.Context, rt *runner.Runtime, cfg *Config) error {
	// Vault refuses `audit enable socket` while nothing accepts at the
	// address, so the assessor is ready only once its listener accepts
	// connections: registered first, it fails until then.
	var listening atomic.Pointer[string]
	if cfg.AuditListen != "" {
		rt.AddCheck("audit-listener", func(ctx context.Context) error {
			addr := listening.Load()
			if addr == nil {
				return errors.New("audit socket listener not bound yet")
			}
			conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", *addr)
			if err != nil {
				return fmt.Errorf("audit socket listener: %w", err)
			}
			return conn.Close()
		})
	}
	adapters, closeAdapters, err := Open(ctx, rt, cfg)
	if err != nil {
		return err
	}
	defer closeAdapters()
	a, err := New(rt, cfg, adapters)
	if err != nil {
		return err
	}
	if a.Listener != nil {
		addr := a.Listener.Addr()
		listening.Store(&addr)
	}
	return a.Serve(ctx)
}

// Adapters are what the assessor's work needs from outside, built from the
// configuration by Open: the audit log's store.
type Adapters struct {
	Store *store.Store
}

// Open builds the assessor's adapters from the configuration and registers
// their readiness checks; closeAdapters releases them.
func Open(ctx context.Context, rt *runner.Runtime, cfg *Config) (Adapters, func(), error) {
	db, err := store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return Adapters{}, nil, err
	}
	rt.AddCheck("postgres", func(ctx context.Context) error { return db.Pool().Ping(ctx) })
	rt.AddCheck("dependencies", rt.DependenciesReady)
	return Adapters{Store: db}, db.Close, nil
}

// Assessor is a running assessor: ingestion plus the incident consumer.
type Assessor struct {
	Pipeline *ingest.Pipeline
	Listener *ingest.Listener // nil when AUDIT_LISTEN is empty
	rt       *runner.Runtime
	cfg      *Config
	db       *store.Store
}

// New builds the ingestion pipeline over the adapters and binds the audit
// listener, so Vault can be pointed at it before Serve: the one step the
// other services do not have.
func New(rt *runner.Runtime, cfg *Config, adapters Adapters) (*Assessor, error) {
	db := adapters.Store
	tenants, err := audit.ParseTemplates(cfg.TenantTemplates)
	if err != nil {
		return nil, err
	}
	p := ingest.NewPipeline(db, ingest.Options{Buffer: cfg.Buffer, BatchSize: cfg.BatchSize, FlushEvery: cfg.FlushEvery, MaxLine: cfg.MaxLine,
		Parsers: cfg.Parsers, Writers: cfg.Writers, Tenants: tenants, PatternHit: cfg.PatternHit, Logger: rt.Logger})
	a := &Assessor{Pipeline: p, rt: rt, cfg: cfg, db: db}
	if cfg.AuditListen != "" {
		if a.Listener, err = ingest.Listen(cfg.AuditListen, cfg.AuditListenDevice, p); err != nil {
			return nil, fmt.Errorf("audit listener: %w", err)
		}
		rt.Logger.Info("audit socket listener bound", slog.String("addr", a.Listener.Addr()), slog.String("device", cfg.AuditListenDevice))
	}
	return a, nil
}

// Serve ingests and assesses until ctx ends.
func (a *Assessor) Serve(ctx context.Context) error {
	w := runner.Wiring{Loops: map[string]func(context.Context) error{
		"audit pipeline": func(ctx context.Context) error { a.Pipeline.Run(ctx); return nil },
	}}
	if a.Listener != nil {
		w.Loops["audit listener"] = a.Listener.Serve
	}
	if a.cfg.AuditFile != "" {
		w.Loops["audit file"] = func(ctx context.Context) error {
			return a.Pipeline.Follow(ctx, a.cfg.AuditFile, a.cfg.AuditFileDevice, a.cfg.FollowPoll)
		}
	}
	pub := stream.NewPublisher(a.rt.NATS.JS, events.SourceOf(events.ServiceAssessor), a.rt.TracerProvider)
	acfg := assess.Config{Window: a.cfg.Window, WidespreadAbove: a.cfg.WidespreadAbove, ExcludeTenants: a.cfg.ExcludeTenants,
		TrustedEntities: a.cfg.TrustedActors, ListLimit: a.cfg.ListLimit}
	handler := stream.Decoded(func(ctx context.Context, _ *stream.Delivery, d events.IncidentOpenedData) error {
		// Read the audit file to its end, then let the lines received reach
		// PostgreSQL: the assessment sees the log up to this moment.
		if !a.Pipeline.CatchUp(ctx, 2*time.Second) || !a.Pipeline.Settle(ctx, 2*time.Second) {
			a.rt.Logger.WarnContext(ctx, "assessing while audit lines are still being written", slog.String("incident_id", d.IncidentID))
		}
		res, err := assess.Assess(ctx, a.db, acfg, d.IncidentID, d.DetectedAt)
		if err != nil {
			return err
		}
		if err := a.db.SaveAssessment(ctx, d.IncidentID, res); err != nil {
			return err
		}
		a.rt.Logger.InfoContext(ctx, "assessment completed", slog.String("incident_id", d.IncidentID), slog.String("scope", res.Scope),
			slog.Int("affected_tenants", len(res.AffectedTenants)), slog.Int("suspicious_events", res.SuspiciousEvents), slog.Int64("duration_ms", res.DurationMS))
		return pub.PublishWithID(ctx, events.AssessmentCompleted, d.IncidentID+"/assessment.completed", res.AssessmentCompletedData)
	})
	w.Consumers = map[string]runner.Consumer{events.ConsumerAssessorBreach: {Handler: handler}}
	err := a.rt.Serve(ctx, a.cfg.ShutdownTimeout, w)
	s := &a.Pipeline.Stats
	a.rt.Logger.Info("audit ingestion stopped", slog.Int64("received", s.Received.Load()), slog.Int64("stored", s.Stored.Load()),
		slog.Int64("repeated", s.Repeated.Load()), slog.Int64("malformed", s.Malformed.Load()), slog.Int64("dropped", s.Dropped.Load()))
	return err
}
