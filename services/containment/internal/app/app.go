// Package app is containment's composition root: it reads the config,
// builds the adapters (PostgreSQL store with its outbox, Vault nodes, fence
// command, JetStream publisher and outbox relay, HTTP intake) and wires
// the breach consumer to the responder (seal first, record second), the
// incident engine (the leader drives every open incident from its
// recorded state), the timeline, and the read model (the incident
// documents and reports every reader sees; internal/projection).
package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/config"
	"github.com/lockdown/lockdown/pkg/platform/failpoint"
	"github.com/lockdown/lockdown/pkg/platform/httpserve"
	"github.com/lockdown/lockdown/pkg/platform/outbox"
	"github.com/lockdown/lockdown/pkg/platform/runner"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/pkg/platform/telemetry"
	"github.com/lockdown/lockdown/pkg/platform/vaulttoken"
	"github.com/lockdown/lockdown/services/containment/internal/engine"
	"github.com/lockdown/lockdown/services/containment/internal/incident"
	"github.com/lockdown/lockdown/services/containment/internal/intake"
	"github.com/lockdown/lockdown/services/containment/internal/projection"
	"github.com/lockdown/lockdown/services/containment/internal/recovery"
	"github.com/lockdown/lockdown/services/containment/internal/reporting"
	"github.com/lockdown/lockdown/services/containment/internal/store"
	"github.com/lockdown/lockdown/services/containment/internal/timeline"
	"github.com/lockdown/lockdown/services/containment/internal/vaultadmin"
	"github.com/lockdown/lockdown/services/containment/internal/vaultnodes"
)

// Config is containment's configuration.
type Config struct {
	config.Common
	DatabaseURL string `env:"DATABASE_URL" secret:"true" doc:"PostgreSQL connection string (containment's schema is created at start)."`
	// Concurrency of the breach consumer: breaches are rare, but a burst
	// of detections of one incident must not queue behind each other.
	BreachConcurrency int `env:"CONTAINMENT_BREACH_CONCURRENCY" default:"4" doc:"Breach events handled at once by one process."`

	VaultAddrs         []string      `env:"VAULT_ADDRS" doc:"Every Vault node's API address, comma-separated (falls back to LOCKDOWN_VAULT_ADDR)."`
	VaultAddr          string        `env:"VAULT_ADDR" doc:"A single Vault node's address, when LOCKDOWN_VAULT_ADDRS is empty."`
	VaultSealToken     string        `env:"VAULT_SEAL_TOKEN" secret:"true" doc:"Token whose only power is sys/seal (deploy/vault/policies/lockdown-seal.hcl). Prefer VAULT_SEAL_TOKEN_FILE: a token from the environment cannot be replaced during an incident."`
	VaultSealTokenFile string        `env:"VAULT_SEAL_TOKEN_FILE" doc:"File holding the seal token (wins over VAULT_SEAL_TOKEN); containment replaces it with a successor in every incident."`
	VaultTimeout       time.Duration `env:"VAULT_TIMEOUT" default:"2s" doc:"Timeout of one Vault API request."`
	FenceCommand       string        `env:"VAULT_FENCE_COMMAND" doc:"Command that restarts a standby Vault will not seal, split on spaces; {node} and {host} are replaced (e.g. 'systemctl restart vault'). Empty: standbys cannot be fenced and containment.failed is raised."`
	FenceTimeout       time.Duration `env:"VAULT_FENCE_TIMEOUT" default:"30s" doc:"Timeout of one fence command."`

	SealDeadline time.Duration `env:"SEAL_DEADLINE" default:"10s" doc:"A node not confirmed sealed by then raises containment.failed; sealing goes on."`
	SealPoll     time.Duration `env:"SEAL_POLL" default:"20ms" doc:"How often a node still unsealed is re-read while sealing."`
	FenceRetry   time.Duration `env:"FENCE_RETRY" default:"15s" doc:"How long after fencing a node it may be fenced again if still unsealed."`
	GatePoll     time.Duration `env:"GATE_POLL" default:"250ms" doc:"How often the unseal gate reads every node's seal status (and how often the engine looks at the open incidents)."`
	LeaderTTL    time.Duration `env:"LEADER_TTL" default:"10s" doc:"Lease of the process that drives the open incidents: a standby containment process takes over within it after the leader dies."`
	StuckAfter   time.Duration `env:"STUCK_AFTER" default:"2m" doc:"An incident whose step keeps failing (a dependency down) for longer is marked stuck and incident.stuck is raised."`
	ProcessName  string        `env:"PROCESS_NAME" doc:"Name of this containment process in events and the report (default containment-<host>-<pid>)."`
	JaegerURL    string        `env:"JAEGER_URL" doc:"The Jaeger UI (e.g. http://jaeger:16686): each report links its incident's trace there."`

	VaultRecoveryToken       string        `env:"VAULT_RECOVERY_TOKEN" secret:"true" doc:"Periodic orphan token with deploy/vault/policies/lockdown-recovery.hcl, issued at install: revokes access, runs the rekey, restores access. Prefer VAULT_RECOVERY_TOKEN_FILE."`
	VaultRecoveryTokenFile   string        `env:"VAULT_RECOVERY_TOKEN_FILE" doc:"File holding the recovery token (wins over VAULT_RECOVERY_TOKEN); containment replaces it with a successor in every incident."`
	RotatorTokenFile         string        `env:"ROTATOR_TOKEN_FILE" doc:"The rotator's token file (its LOCKDOWN_VAULT_TOKEN_FILE, shared with containment): containment writes the rotator token's successor there in every incident and the rotators pick it up. Empty: the rotator's token is not replaced (keep its accessor in KEEP_ACCESSORS)."`
	DisableAuth              []string      `env:"DISABLE_AUTH" default:"approle,jwt" doc:"Mount paths of the auth methods disabled on unseal (disabling revokes their tokens)."`
	KeepAccessors            []string      `env:"KEEP_ACCESSORS" doc:"Accessors of Lockdown's tokens that containment cannot replace (given in the environment rather than a token file), never revoked. A replaced token's install-time accessor does not belong here: it would keep the old token alive."`
	BreakGlass               []string      `env:"BREAK_GLASS" doc:"Accessors of the tokens an organisation keeps for emergencies, never revoked. Accessors only: a display name is chosen by whoever creates a token (every root token is named root, an intruder's too), so one is refused at start."`
	LeasePrefixes            []string      `env:"LEASE_PREFIXES" doc:"Lease prefixes revoked on unseal with sys/leases/revoke-prefix (e.g. database/creds/)."`
	RekeyShares              int           `env:"REKEY_SHARES" default:"5" doc:"Number of new unseal (or recovery) key shares."`
	RekeyThreshold           int           `env:"REKEY_THRESHOLD" default:"3" doc:"Shares needed to unseal after the rekey."`
	RekeyPGPDir              string        `env:"REKEY_PGP_DIR" doc:"Folder of the key holders' PGP public keys, one file per share in name order; the new shares are encrypted for them and Vault keeps an encrypted backup. With REKEY_REQUIRE_VERIFICATION=false the backup proves completion (recommended)."`
	RekeyPGPFingerprints     []string      `env:"REKEY_PGP_FINGERPRINTS" doc:"The holders' key fingerprints, comma-separated, one per share in REKEY_PGP_DIR's order: containment refuses to start if a key file is not the pinned key (a swapped key would receive that holder's share)."`
	RekeyRequireVerification bool          `env:"REKEY_REQUIRE_VERIFICATION" default:"true" doc:"Holders must prove the new shares before the old ones stop working. With verification (or without PGP keys) completion is proven by Vault's log of the barrier rekey, watched through sys/monitor (Vault must log at info, its default)."`
	RekeyPoll                time.Duration `env:"REKEY_POLL" default:"1s" doc:"How often the ceremony's progress is read."`
	AuthDir                  string        `env:"AUTH_DIR" default:"/etc/lockdown/auth" doc:"Folder of the declarative auth methods re-applied on restore (deploy/vault/auth in the repository; the images and manifests mount it at the default). Read at start: a missing or invalid one exits 2."`
	VaultBaseline            string        `env:"VAULT_BASELINE" default:"/etc/lockdown/baseline.json" doc:"The declaration of Vault's security configuration (audit devices, auth and secrets mounts, policies, token roles, identities that carry policies, plugins, audited headers): every revocation, and the sweeps after the rekey and before restore, remove what it does not declare and put back what differs (docs/security.md). Read at start: a missing or invalid one exits 2."`
	VerifyRotation           string        `env:"VERIFY_ROTATION" default:"all" doc:"How the rotation's completion is checked in Vault before access is restored (a stolen rotator credential can announce one): all — every tenant folder under KV_MOUNT/tenants/ shows its ssh and smtp secrets written since the revocation, or is reported failed (the rotator's default policy all); claimed — only the tenants announced rotated are checked (a rotator with ROTATION_POLICY=affected); off — trusted. A mismatch keeps access closed and the incident stuck with the reason."`
	KVMount                  string        `env:"KV_MOUNT" default:"secret" doc:"The KV v2 mount of the tenants' secrets (the rotator's LOCKDOWN_KV_MOUNT): its metadata is read to verify the rotation."`
	VaultPolicyDir           string        `env:"VAULT_POLICY_DIR" default:"/etc/lockdown/policies" doc:"Lockdown's own Vault policies and Vault's default policy, by content (<name>.hcl; deploy/vault/policies in the repository): rewritten in every revocation when Vault's copy differs (lockdown-recovery is only checked: its token cannot rewrite it)."`

	IntakeAddr         string        `env:"INTAKE_ADDR" doc:"Listen address of the HTTP breach intake (e.g. 127.0.0.1:8081); empty disables it."`
	IntakeBearerTokens []string      `env:"INTAKE_BEARER_TOKENS" secret:"true" doc:"Bearer tokens accepted by the intake, comma-separated."`
	IntakeHMACKey      string        `env:"INTAKE_HMAC_KEY" secret:"true" doc:"Key of the intake's X-Lockdown-Signature HMAC-SHA256."`
	IntakeMaxSkew      time.Duration `env:"INTAKE_MAX_SKEW" default:"5m" doc:"How old (or early) a signed request's timestamp may be; a signature is accepted once within it."`
	IntakeMaxBody      int64         `env:"INTAKE_MAX_BODY" default:"65536" doc:"Largest breach body the intake reads, in bytes."`
	IntakeTLSCert      string        `env:"INTAKE_TLS_CERT" doc:"PEM certificate (chain) of the HTTP intake; with INTAKE_TLS_KEY it speaks HTTPS only. Required unless INTAKE_ADDR is a loopback address."`
	IntakeTLSKey       string        `env:"INTAKE_TLS_KEY" doc:"PEM private key of INTAKE_TLS_CERT (a file path; the file is the secret)."`
	IntakeClientCA     string        `env:"INTAKE_CLIENT_CA" doc:"PEM CA bundle: when set, the intake requires a client certificate signed by it (mutual TLS)."`

	AutoSealSeverities []string `env:"AUTO_SEAL_SEVERITIES" default:"critical,high" doc:"Breach severities that seal Vault at once; a breach of another severity opens an incident that waits for an operator's lockdown confirm <incident> (a forged low-severity breach cannot seal the platform)."`
	AutoSealClusters   []string `env:"AUTO_SEAL_CLUSTERS" doc:"Vault clusters (a breach's vault_cluster) whose breaches may seal at once; empty: any. A breach naming another cluster waits for lockdown confirm."`
}

// loopback reports whether a listen address is on loopback only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// intakeTLS builds the intake's TLS configuration (nil: plain HTTP, on
// loopback only).
func (c *Config) intakeTLS() (*tls.Config, error) {
	if c.IntakeTLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.IntakeTLSCert, c.IntakeTLSKey)
	if err != nil {
		return nil, fmt.Errorf("%sINTAKE_TLS_CERT/KEY: %w", config.Prefix, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.IntakeClientCA != "" {
		pem, err := os.ReadFile(c.IntakeClientCA)
		if err != nil {
			return nil, fmt.Errorf("%sINTAKE_CLIENT_CA: %w", config.Prefix, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%sINTAKE_CLIENT_CA: no certificate in %s", config.Prefix, c.IntakeClientCA)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// Nodes returns the configured Vault nodes.
func (c *Config) Nodes() []string {
	if len(c.VaultAddrs) > 0 {
		return c.VaultAddrs
	}
	if c.VaultAddr != "" {
		return []string{c.VaultAddr}
	}
	return nil
}

// Validate reports every problem of the configuration at once.
func (c *Config) Validate() error {
	errs := []error{c.Common.Validate()}
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(config.Prefix+format, a...)) }
	if c.DatabaseURL == "" {
		bad("DATABASE_URL is required")
	}
	if len(c.Nodes()) == 0 {
		bad("VAULT_ADDRS (or VAULT_ADDR) is required")
	}
	for _, a := range c.Nodes() {
		if !strings.HasPrefix(a, "http://") && !strings.HasPrefix(a, "https://") {
			bad("VAULT_ADDRS: %q is not an http(s) URL", a)
		}
	}
	if c.VaultSealToken == "" && c.VaultSealTokenFile == "" {
		bad("VAULT_SEAL_TOKEN_FILE (or VAULT_SEAL_TOKEN) is required")
	}
	if c.VaultRecoveryToken == "" && c.VaultRecoveryTokenFile == "" {
		bad("VAULT_RECOVERY_TOKEN_FILE (or VAULT_RECOVERY_TOKEN) is required")
	}
	if c.RekeyThreshold < 1 || c.RekeyThreshold > c.RekeyShares {
		bad("REKEY_THRESHOLD must be between 1 and REKEY_SHARES")
	}
	if c.RekeyPGPDir == "" && !c.RekeyRequireVerification {
		bad("REKEY_PGP_DIR or REKEY_REQUIRE_VERIFICATION is needed: without either, a completed rekey cannot be told from a cancelled one")
	}
	if c.BreachConcurrency < 1 {
		bad("CONTAINMENT_BREACH_CONCURRENCY must be at least 1")
	}
	for name, list := range map[string][]string{"BREAK_GLASS": c.BreakGlass, "KEEP_ACCESSORS": c.KeepAccessors} {
		for _, a := range list {
			if err := recovery.ValidAccessor(a); err != nil {
				bad("%s: %v", name, err)
			}
		}
	}
	for name, d := range map[string]time.Duration{"VAULT_TIMEOUT": c.VaultTimeout, "SEAL_DEADLINE": c.SealDeadline, "SEAL_POLL": c.SealPoll,
		"FENCE_RETRY": c.FenceRetry, "GATE_POLL": c.GatePoll, "REKEY_POLL": c.RekeyPoll, "VAULT_FENCE_TIMEOUT": c.FenceTimeout, "INTAKE_MAX_SKEW": c.IntakeMaxSkew,
		"LEADER_TTL": c.LeaderTTL, "STUCK_AFTER": c.StuckAfter} {
		if d <= 0 {
			bad("%s must be positive", name)
		}
	}
	if c.IntakeAddr != "" && len(c.IntakeBearerTokens) == 0 && c.IntakeHMACKey == "" {
		bad("INTAKE_ADDR needs INTAKE_BEARER_TOKENS or INTAKE_HMAC_KEY: the intake never runs unauthenticated")
	}
	if (c.IntakeTLSCert == "") != (c.IntakeTLSKey == "") {
		bad("INTAKE_TLS_CERT and INTAKE_TLS_KEY go together")
	}
	if c.IntakeAddr != "" && c.IntakeTLSCert == "" && !loopback(c.IntakeAddr) {
		bad("INTAKE_ADDR %s is not a loopback address: INTAKE_TLS_CERT and INTAKE_TLS_KEY are required (tokens and signatures never travel in clear)", c.IntakeAddr)
	}
	if c.IntakeClientCA != "" && c.IntakeTLSCert == "" {
		bad("INTAKE_CLIENT_CA needs INTAKE_TLS_CERT and INTAKE_TLS_KEY")
	}
	if c.IntakeMaxBody < 1024 {
		bad("INTAKE_MAX_BODY must be at least 1024")
	}
	if !slices.Contains([]string{recovery.VerifyAll, recovery.VerifyClaimed, recovery.VerifyOff}, c.VerifyRotation) {
		bad("VERIFY_ROTATION %q is not all, claimed or off", c.VerifyRotation)
	}
	for _, sev := range c.AutoSealSeverities {
		if !slices.Contains([]string{"critical", "high", "medium", "low"}, sev) {
			bad("AUTO_SEAL_SEVERITIES: %q is not critical, high, medium or low", sev)
		}
	}
	// The files the recovery phases read are read now: a missing baseline
	// found when the process already answered /readyz would be a
	// containment that looked ready and was not (exit 2, not 1 later).
	if _, err := c.RecoveryConfig(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Run opens containment's adapters and serves until ctx ends.
func Run(ctx context.Context, rt *runner.Runtime, cfg *Config) error {
	return runner.OpenAndServe(ctx, rt, cfg, Open, Serve)
}

// Open builds containment's adapters from the configuration and registers
// their readiness checks; closeAdapters releases them (and stops renewing
// Lockdown's tokens).
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
	va, err := cfg.VaultAdapters()
	if err != nil {
		return a, nil, err
	}
	var fencer vaultnodes.CommandFencer
	if cfg.FenceCommand != "" {
		fencer = vaultnodes.CommandFencer{Argv: strings.Fields(cfg.FenceCommand), Timeout: cfg.FenceTimeout}
	}
	rt.AddCheck("postgres", db.Ping)
	// Lockdown's periodic tokens live as long as they are renewed (their
	// successors too, once containment replaced them).
	for name, src := range map[string]*vaulttoken.Source{"seal": va.Seal, "recovery": va.Recovery} {
		r, err := vaulttoken.New(name, cfg.Nodes(), src, cfg.VaultTimeout, rt.Logger)
		if err != nil {
			return a, nil, err
		}
		rt.AddCheck("vault-token-"+name, r.Check)
		go r.Run(renewCtx) //nolint:errcheck // Run returns nil when ctx ends
	}
	// Reachable, sealed or not: containment keeps watching a sealed Vault.
	for i, node := range cfg.Nodes() {
		check, err := vaulttoken.Reachable(node, cfg.VaultTimeout)
		if err != nil {
			return a, nil, err
		}
		rt.AddCheck(fmt.Sprintf("vault-%d", i), check)
	}
	fp, err := rt.Failpoints()
	if err != nil {
		return a, nil, err
	}
	return Adapters{Store: db, Vault: va.Nodes, Fencer: fencer, Admin: va.Admin, VaultLog: va.Admin, OwnTokens: va.Own, NotReplaceable: va.NotReplaceable,
		TokenSources: []*vaulttoken.Source{va.Seal, va.Recovery}, Failpoints: fp}, release, nil
}

// VaultAdapters are containment's Vault clients and the sources of their
// tokens.
type VaultAdapters struct {
	Nodes          *vaultnodes.Nodes
	Admin          *vaultadmin.Admin
	Seal, Recovery *vaulttoken.Source
	Own            []recovery.OwnToken // the tokens replaced in every incident
	NotReplaceable []string            // and the ones that cannot be
}

// VaultAdapters opens the token sources and builds the clients over them:
// a token replaced during an incident reaches every client that uses it.
func (c *Config) VaultAdapters() (VaultAdapters, error) {
	var va VaultAdapters
	var err error
	if va.Seal, err = vaulttoken.Open(c.VaultSealToken, c.VaultSealTokenFile); err != nil {
		return va, fmt.Errorf("seal token: %w", err)
	}
	if va.Recovery, err = vaulttoken.Open(c.VaultRecoveryToken, c.VaultRecoveryTokenFile); err != nil {
		return va, fmt.Errorf("recovery token: %w", err)
	}
	if va.Nodes, err = vaultnodes.New(c.Nodes(), va.Seal.Token(), c.VaultTimeout); err != nil {
		return va, err
	}
	va.Seal.OnChange(va.Nodes.SetToken)
	if va.Admin, err = vaultadmin.New(c.Nodes(), va.Recovery.Token(), c.VaultTimeout); err != nil {
		return va, err
	}
	va.Recovery.OnChange(va.Admin.SetToken)
	own := []struct {
		name string
		src  *vaulttoken.Source
	}{{"seal", va.Seal}, {"rotator", nil}, {"recovery", va.Recovery}} // recovery last: it mints the others
	if c.RotatorTokenFile != "" {
		// Containment only writes the rotator's file (the rotators re-read
		// it); it reads it to check it is there at start.
		if own[1].src, err = vaulttoken.Open("", c.RotatorTokenFile); err != nil {
			return va, fmt.Errorf("rotator token: %w", err)
		}
	}
	for _, t := range own {
		if t.src == nil || !t.src.Replaceable() {
			va.NotReplaceable = append(va.NotReplaceable, t.name)
			continue
		}
		va.Own = append(va.Own, recovery.OwnToken{Name: t.name, Role: "lockdown-" + t.name, Store: t.src})
	}
	return va, nil
}

// processName names this process in events and the report.
func (c *Config) processName() string {
	if c.ProcessName != "" {
		return c.ProcessName
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("containment-%s-%d", host, os.Getpid())
}

// RecoveryConfig reads the files the recovery phases need (holders' PGP
// keys, declarative auth methods).
func (c *Config) RecoveryConfig() (recovery.Config, error) {
	rc := recovery.Config{DisableAuth: c.DisableAuth, KeepAccessors: c.KeepAccessors, BreakGlass: c.BreakGlass, LeasePrefixes: c.LeasePrefixes,
		VerifyRotation: c.VerifyRotation, KVMount: c.KVMount,
		Shares: c.RekeyShares, Threshold: c.RekeyThreshold, RequireVerification: c.RekeyRequireVerification, Poll: c.RekeyPoll}
	var err error
	if c.RekeyPGPDir != "" {
		if rc.PGPKeys, err = recovery.LoadPGPKeys(c.RekeyPGPDir); err != nil {
			return rc, err
		}
		if len(rc.PGPKeys) != c.RekeyShares {
			return rc, fmt.Errorf("%sREKEY_PGP_DIR holds %d keys for %d shares", config.Prefix, len(rc.PGPKeys), c.RekeyShares)
		}
		if len(c.RekeyPGPFingerprints) > 0 {
			if err := recovery.CheckFingerprints(rc.PGPKeys, c.RekeyPGPFingerprints); err != nil {
				return rc, fmt.Errorf("%sREKEY_PGP_DIR: %w", config.Prefix, err)
			}
		}
	}
	if rc.Auth, err = recovery.LoadAuthSpecs(c.AuthDir); err != nil {
		return rc, fmt.Errorf("%sAUTH_DIR: %w", config.Prefix, err)
	}
	if rc.Baseline, err = recovery.LoadBaseline(c.VaultBaseline, c.VaultPolicyDir, rc.Auth); err != nil {
		return rc, fmt.Errorf("%sVAULT_BASELINE, %sVAULT_POLICY_DIR: %w", config.Prefix, config.Prefix, err)
	}
	return rc, nil
}

// Adapters are what containment's work needs from outside, built from the
// configuration by Open; tests build their own (a fence that restarts a
// local node, a shared store).
type Adapters struct {
	Store  *store.Store
	Vault  incident.Vault
	Fencer incident.Fencer
	// Admin is Vault with the recovery token, for phases 4, 5 and 8.
	Admin recovery.Vault
	// OwnTokens are the tokens replaced in every revocation and
	// NotReplaceable the ones that cannot be (from VaultAdapters).
	OwnTokens      []recovery.OwnToken
	NotReplaceable []string
	// TokenSources are re-read every second: another containment process
	// (the leader) may have replaced a token in its shared file.
	TokenSources []*vaulttoken.Source
	// VaultLog streams Vault's server log to the ceremony's witness (nil:
	// not watched; only ceremonies with PGP keys and without
	// verification can then be proven).
	VaultLog recovery.LogStream
	// Failpoints are the crash tests' kill points (nil: none).
	Failpoints *failpoint.Set
}

// Serve runs containment over the adapters until ctx ends, then drains:
// the consumers stop fetching, in-flight handlers finish, the engine hands
// its lease over, the outbox relay stops (what it has not published waits
// in PostgreSQL for the next start).
func Serve(ctx context.Context, rt *runner.Runtime, cfg *Config, deps Adapters) error {
	pub := stream.NewPublisher(rt.NATS.JS, events.SourceOf(events.ServiceContainment), rt.TracerProvider)
	deps.Store.SetPreparer(pub)
	rcfg, err := cfg.RecoveryConfig()
	if err != nil {
		return err
	}
	rcfg.OwnTokens, rcfg.FixedTokens, rcfg.Failpoints = deps.OwnTokens, deps.NotReplaceable, deps.Failpoints
	process := cfg.processName()
	log := rt.Logger.With(slog.String("process", process))
	sealer := incident.NewSealer(deps.Vault, deps.Fencer, log, cfg.SealPoll, cfg.FenceRetry)
	witness := recovery.NewWitness()
	eng := engine.New(engine.Config{Process: process, LeaderTTL: cfg.LeaderTTL, Tick: cfg.GatePoll, RekeyPoll: cfg.RekeyPoll,
		SealDeadline: cfg.SealDeadline, StuckAfter: cfg.StuckAfter, JaegerURL: cfg.JaegerURL}, deps.Store, sealer, recovery.New(rcfg, deps.Admin, witness, log), log, deps.Failpoints, rt.MeterProvider)
	// Which process drives the incidents: the lease is containment's own
	// table, this is what operators (and the system tests) may read.
	rt.AddInfo("engine", func(context.Context) (string, error) {
		if eng.Leader() {
			return "leader " + process, nil
		}
		return "standby " + process, nil
	})
	policy := incident.Policy{Clusters: cfg.AutoSealClusters}
	for _, sev := range cfg.AutoSealSeverities {
		policy.Severities = append(policy.Severities, events.Severity(sev))
	}
	responder := incident.NewResponder(deps.Store, sealer, policy, log, incident.Timing{SealDeadline: cfg.SealDeadline}, process, deps.Failpoints, eng.Wake)
	recorder := timeline.New(deps.Store, eng.Wake)
	// The read model: written by the leader after every change, read by
	// the CLI and the console (they have no access to this database).
	readModel, err := stream.OpenReadModel(ctx, rt.NATS.JS)
	if err != nil {
		return err
	}
	projector := projection.New(projection.Config{Failpoints: deps.Failpoints}, deps.Store, readModel, eng.Leader, log.With(slog.String("component", "read model")))
	deps.Store.SetOnChange(projector.Touch)
	relay := &outbox.Relay{Pool: deps.Store.Pool(), Schema: store.Schema, JS: rt.NATS.JS, Logger: log, Failpoints: deps.Failpoints,
		OnDuplicate: rt.OutboxDuplicate, Source: events.SourceOf(events.ServiceContainment),
		DeadLetters: events.OutboxDeadLetters(events.ServiceContainment), OnParked: deps.Store.ParkedAlarm}
	rt.AddAlarm("outbox", outbox.Alarm(deps.Store.Pool(), store.Schema))
	rt.AddInfo("outbox_pending", outbox.PendingInfo(deps.Store.Pool(), store.Schema))

	w := runner.Wiring{
		Consumers: map[string]runner.Consumer{
			events.ConsumerContainmentBreach:   {Handler: BreachHandler(responder), Tune: func(o *stream.ConsumerOptions) { o.Concurrency = cfg.BreachConcurrency }},
			events.ConsumerContainmentRecovery: {Handler: RecoveryHandler(eng, recorder)},
			events.ConsumerContainmentTimeline: {Handler: TimelineHandler(recorder)},
		},
		Loops: map[string]func(context.Context) error{"engine": eng.Run, "outbox relay": relay.Run, "read model": projector.Run},
	}
	if deps.VaultLog != nil {
		w.Loops["vault log"] = func(ctx context.Context) error { deps.VaultLog.Watch(ctx, witness, log); return nil }
	}
	for i, src := range deps.TokenSources {
		w.Loops[fmt.Sprintf("token file %d", i)] = func(ctx context.Context) error { src.Watch(ctx, time.Second); return nil }
	}
	if cfg.IntakeAddr != "" {
		tlsCfg, err := cfg.intakeTLS()
		if err != nil {
			return err
		}
		h := intake.New(intake.Config{BearerTokens: cfg.IntakeBearerTokens, HMACKey: cfg.IntakeHMACKey, MaxSkew: cfg.IntakeMaxSkew,
			MaxBody: cfg.IntakeMaxBody, WaitIncident: 3 * time.Second}, breachPublisher{pub}, deps.Store, rt.Logger)
		w.Loops["breach intake"] = func(ctx context.Context) error {
			return httpserve.ServeTLS(ctx, "breach intake", cfg.IntakeAddr, h.Routes(), tlsCfg, cfg.ShutdownTimeout, rt.Logger)
		}
	}
	return rt.Serve(ctx, cfg.ShutdownTimeout, w)
}

// BreachHandler turns a breach event into a detection for the responder:
// it seals at once and holds the message until the breach is recorded.
// Invalid data is a permanent failure: it ends on the dead-letter subject
// and nothing is sealed.
func BreachHandler(r *incident.Responder) stream.Handler {
	return stream.Decoded(func(ctx context.Context, d *stream.Delivery, b events.BreachDetectedData) error {
		// The id is the caller's: it becomes the detection's key, so only
		// a plain one is taken (a permanent failure: nothing is sealed).
		if err := events.ValidExternalID(d.Event.ID()); err != nil {
			return stream.Permanent(err)
		}
		_, _, err := r.HandleBreach(ctx, incident.Detection{EventID: d.Event.ID(), Source: d.Event.Source(), Time: d.Event.Time(), Breach: b,
			TraceParent: telemetry.TraceParent(ctx)})
		return err
	})
}

// RecoveryHandler records the events the engine waits on (so it sees them
// before the timeline consumer gets to them) and wakes it, and carries
// out operators' resume and abort requests.
func RecoveryHandler(eng *engine.Engine, rec *timeline.Recorder) stream.Handler {
	record := func(ctx context.Context, d *stream.Delivery) error { return rec.Record(ctx, entryOf(d)) }
	// Completions that arrive after the incident ended carry corrected
	// totals (lockdown retry): the stored report is rebuilt with them.
	completion := func(ctx context.Context, d *stream.Delivery) error {
		if err := record(ctx, d); err != nil {
			return err
		}
		err := eng.RefreshReport(ctx, timeline.IncidentOf(d.Event.Data()))
		if errors.Is(err, timeline.ErrUnknownIncident) {
			return nil // not an incident of this containment: nothing to refresh
		}
		return err
	}
	control := func(do func(context.Context, reporting.Entry, events.IncidentControlData) error) stream.Handler {
		return stream.Decoded(func(ctx context.Context, d *stream.Delivery, c events.IncidentControlData) error {
			err := do(ctx, entryOf(d), c)
			if errors.Is(err, engine.ErrClosed) || errors.Is(err, engine.ErrNoReason) || errors.Is(err, engine.ErrNotAwaiting) || errors.Is(err, timeline.ErrUnknownIncident) {
				return stream.Permanent(err)
			}
			return err
		})
	}
	return stream.Route(map[events.Name]stream.Handler{
		events.VaultUnsealed:            record,
		events.RotationCompleted:        completion,
		events.NotificationsCompleted:   completion,
		events.IncidentResumeRequested:  control(eng.Resume),
		events.IncidentAbortRequested:   control(eng.Abort),
		events.IncidentConfirmRequested: control(eng.Confirm),
		events.IncidentReviewRequested: stream.Decoded(func(ctx context.Context, d *stream.Delivery, r events.IncidentReviewData) error {
			err := eng.Review(ctx, entryOf(d), r)
			if errors.Is(err, events.ErrInvalidReview) || errors.Is(err, engine.ErrReviewFinal) || errors.Is(err, timeline.ErrUnknownIncident) {
				return stream.Permanent(err)
			}
			return err
		}),
	})
}

// TimelineHandler records every incident event.
func TimelineHandler(r *timeline.Recorder) stream.Handler {
	return func(ctx context.Context, d *stream.Delivery) error { return r.Record(ctx, entryOf(d)) }
}

func entryOf(d *stream.Delivery) reporting.Entry {
	return reporting.Entry{EventID: d.Event.ID(), Type: d.Spec.Name, Time: d.Event.Time(), Source: d.Event.Source(), Data: d.Event.Data()}
}

// breachPublisher adapts the JetStream publisher to the intake's port.
type breachPublisher struct{ p *stream.Publisher }

func (b breachPublisher) PublishBreach(ctx context.Context, ev event.Event) (bool, error) {
	ack, err := b.p.PublishEvent(ctx, ev)
	if err != nil {
		return false, err
	}
	return ack.Duplicate, nil
}
