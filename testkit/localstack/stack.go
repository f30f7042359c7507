// Package localstack starts Lockdown's real servers — NATS with JetStream,
// PostgreSQL, Vault (a real non-dev server), Jaeger and Mailpit — as
// processes on free 127.0.0.1 ports inside one temporary directory, waits
// until each is ready, and tears everything down again. Integration tests,
// the drill and `make dev` use it; nothing in it is a stand-in.
//
// Secrets it creates (Vault's root token and unseal shares, the PostgreSQL
// password) stay in the Stack value of the process that started it: they
// are never logged or written outside the stack's temporary directory,
// which Close removes.
package localstack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
)

// Options choose the servers to start. The zero value starts nothing; All
// starts everything.
type Options struct {
	NATS     bool
	Postgres bool
	Vault    bool
	Jaeger   bool
	Mailpit  bool
	// DNS starts an authoritative DNS server (Knot) with the platform's
	// DKIM zone and the tenants' zone.
	DNS bool
	// NATSAuth runs NATS with Lockdown's per-service users and
	// permissions (deploy/nats/auth.conf) instead of without authorization.
	NATSAuth bool
	// NATSNodes > 1 starts a JetStream cluster of that many nodes on
	// loopback instead of one server.
	NATSNodes int
	// ReadyTimeout bounds the wait for each server. Default 60s.
	ReadyTimeout time.Duration
	// KeepDir leaves the temporary directory (logs, data) after Close,
	// for debugging a failed run. Secrets in it are the test's own.
	KeepDir bool
}

// All starts every server.
func All() Options {
	return Options{NATS: true, NATSAuth: true, Postgres: true, Vault: true, Jaeger: true, Mailpit: true}
}

// Stack is a running set of servers.
type Stack struct {
	// Dir is the temporary directory holding every server's data and log.
	Dir string

	NATS     *NATS
	Postgres *Postgres
	Vault    *Vault
	Jaeger   *Jaeger
	Mailpit  *Mailpit
	DNS      *DNS

	procs []*process
	keep  bool
	// platform is set once SeedPlatform filled the platform engines.
	platform *PlatformEstate
}

// Start starts the chosen servers and waits until each is ready. On error
// everything already started is stopped again.
func Start(ctx context.Context, opts Options) (_ *Stack, err error) {
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 60 * time.Second
	}
	sweepStale()
	dir, err := os.MkdirTemp("", stackDirPattern)
	if err != nil {
		return nil, fmt.Errorf("localstack: temp dir: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return nil, fmt.Errorf("localstack: %w", err)
	}
	// PostgreSQL runs as another user and must traverse the directory.
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, fmt.Errorf("localstack: %w", err)
	}
	s := &Stack{Dir: dir, keep: opts.KeepDir}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
		}
	}()
	ready := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, opts.ReadyTimeout) }
	type starter struct {
		on    bool
		start func(context.Context) error
	}
	for _, st := range []starter{
		{opts.NATS, func(c context.Context) error { return s.startNATS(c, opts.NATSAuth, opts.NATSNodes) }},
		{opts.Postgres, s.startPostgres},
		{opts.Vault, s.startVault},
		{opts.Jaeger, s.startJaeger},
		{opts.Mailpit, s.startMailpit},
		{opts.DNS, s.startDNS},
	} {
		if !st.on {
			continue
		}
		c, cancel := ready()
		err := st.start(c)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("localstack: %w", err)
		}
	}
	return s, nil
}

// Close stops every server (SIGTERM, then SIGKILL after a grace period) and
// removes the temporary directory. It is safe to call twice.
func (s *Stack) Close() error {
	var errs []error
	for i := len(s.procs) - 1; i >= 0; i-- {
		if err := s.procs[i].stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	s.procs = nil
	if !s.keep && s.Dir != "" {
		if err := os.RemoveAll(s.Dir); err != nil {
			errs = append(errs, fmt.Errorf("localstack: remove %s: %w", s.Dir, err))
		}
	}
	return errors.Join(errs...)
}

// Ports lists every TCP port the stack's servers listen on, so a caller
// can check that they are free again after Close.
func (s *Stack) Ports() []int {
	var out []int
	if s.NATS != nil {
		for _, n := range s.NATS.Nodes {
			out = append(out, n.ports...)
		}
	}
	if s.Postgres != nil {
		out = append(out, s.Postgres.Port)
	}
	if s.Vault != nil {
		out = append(out, s.Vault.Port, s.Vault.ClusterPort)
	}
	if s.Jaeger != nil {
		out = append(out, s.Jaeger.ports...)
	}
	if s.Mailpit != nil {
		out = append(out, s.Mailpit.SMTPPort, s.Mailpit.HTTPPort)
	}
	if s.DNS != nil {
		out = append(out, s.DNS.Port)
	}
	return out
}

// Env returns the environment a Lockdown service needs to use this stack:
// LOCKDOWN_* and the standard OTEL_* variables. It carries the database
// password (Vault tokens are in files, by path), so it is handed to child
// processes only, never printed.
func (s *Stack) Env(service string) []string {
	// Health endpoints on a free port each: several processes share the host.
	env := []string{"OTEL_SERVICE_NAME=" + service, "LOCKDOWN_HEALTH_ADDR=127.0.0.1:0"}
	if s.NATS != nil {
		env = append(env, "LOCKDOWN_NATS_URL="+s.NATS.URL)
		if pw := s.NATS.Password(service); pw != "" {
			env = append(env, "LOCKDOWN_NATS_USER="+service, "LOCKDOWN_NATS_PASSWORD="+pw)
		}
	}
	if s.Postgres != nil {
		// Each service with its own role (pkg/platform/pgroles).
		env = append(env, "LOCKDOWN_DATABASE_URL="+s.Postgres.RoleURL(service))
	}
	if s.Vault != nil && service == events.ServiceAssessor {
		// The assessor follows the stack Vault's file audit device; its
		// socket listener (a fixed default port) stays off here.
		env = append(env, "LOCKDOWN_AUDIT_FILE="+s.Vault.AuditLog, "LOCKDOWN_AUDIT_LISTEN=")
	}
	if s.Vault != nil {
		// Each service gets its own least-privilege token, never the root.
		env = append(env, "LOCKDOWN_VAULT_ADDR="+s.Vault.Addr)
		// Token files: containment replaces every one with a successor in
		// each incident (the rotator's too, which the rotators re-read).
		if service == events.ServiceRotator {
			// The rotator writes no secret while Vault has an audit device
			// its baseline does not declare.
			env = append(env, "LOCKDOWN_VAULT_TOKEN_FILE="+s.Vault.RotatorFile, "LOCKDOWN_VAULT_BASELINE="+s.Vault.BaselineFile,
				"LOCKDOWN_ROTATION_CATALOGUE="+s.catalogueFile())
		}
		if service == events.ServiceContainment {
			env = append(env, "LOCKDOWN_VAULT_SEAL_TOKEN_FILE="+s.Vault.SealFile, "LOCKDOWN_VAULT_RECOVERY_TOKEN_FILE="+s.Vault.RecoveryFile,
				"LOCKDOWN_ROTATOR_TOKEN_FILE="+s.Vault.RotatorFile)
			if s.Jaeger != nil {
				env = append(env, "LOCKDOWN_JAEGER_URL="+s.Jaeger.QueryURL) // the reports link their trace there
			}
			if root, err := RepoRoot(); err == nil {
				env = append(env, "LOCKDOWN_AUTH_DIR="+filepath.Join(root, "deploy", "vault", "auth"),
					"LOCKDOWN_VAULT_BASELINE="+s.Vault.BaselineFile, "LOCKDOWN_VAULT_POLICY_DIR="+filepath.Join(root, "deploy", "vault", "policies"))
			}
		}
	}
	if s.DNS != nil && service == events.ServiceRotator {
		// The rotator publishes DKIM records in the platform's zone with
		// its TSIG key, and checks tenants' own records at the same
		// server (it also serves their zone here).
		env = append(env, "LOCKDOWN_DKIM_DNS_SERVER="+s.DNS.Addr, "LOCKDOWN_DKIM_ZONE="+s.DNS.DKIMZone,
			"LOCKDOWN_DKIM_TSIG_FILE="+s.DNS.RotatorKeyFile, "LOCKDOWN_DKIM_RESOLVER="+s.DNS.Addr)
	}
	if s.Jaeger != nil {
		// Jaeger takes traces, not metrics.
		env = append(env, "OTEL_EXPORTER_OTLP_ENDPOINT="+s.Jaeger.OTLPHTTPEndpoint, "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf", "OTEL_METRICS_EXPORTER=none")
	}
	if s.Mailpit != nil {
		// Mailpit speaks plain SMTP on loopback; webhooks of test receivers
		// are on loopback too.
		env = append(env, "LOCKDOWN_SMTP_ADDR="+s.Mailpit.SMTPAddr, "LOCKDOWN_SMTP_TLS=none",
			"LOCKDOWN_WEBHOOK_SECRET="+s.Mailpit.WebhookSecret, "LOCKDOWN_WEBHOOK_ALLOW=127.0.0.0/8")
	}
	return env
}

// stackDirPattern names stack directories; ownerFile inside holds the pid
// of the process that started the stack.
const (
	stackDirPattern = "lockdown-stack-"
	ownerFile       = "owner.pid"
)

// sweepStale removes the directories of stacks whose owner died without
// calling Close (a test binary killed by its timeout, say). Their servers
// are already gone: the parent-death signal killed them.
func sweepStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), stackDirPattern+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(string(b))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(d) // best effort: the next sweep tries again
		}
	}
}

// postgresCredential returns the credential to run PostgreSQL with: the
// postgres user when running as root (initdb refuses root), nil otherwise.
func postgresCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs a postgres user to run PostgreSQL (install the postgresql package): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// PIDs lists the process ids of the running servers.
func (s *Stack) PIDs() []int {
	out := make([]int, 0, len(s.procs))
	for _, p := range s.procs {
		out = append(out, p.cmd.Process.Pid)
	}
	return out
}

// Spawn runs another program (a Lockdown service) as part of the stack:
// same process-group handling and log file (<Dir>/<name>.log), stopped by
// Close before the servers it depends on. env is added to the current
// environment.
func (s *Stack) Spawn(name, bin string, args, env []string) (pid int, logPath string, err error) {
	p, err := startProcess(name, s.Dir, bin, args, env, nil)
	if err != nil {
		return 0, "", err
	}
	s.procs = append(s.procs, p)
	return p.cmd.Process.Pid, p.logPath, nil
}

// spawned finds a process started by Spawn.
func (s *Stack) spawned(pid int) *process {
	for _, p := range s.procs {
		if p.cmd.Process.Pid == pid {
			return p
		}
	}
	return nil
}

// Exited returns a channel closed when the process Spawn started with
// this pid exits (nil for an unknown pid).
func (s *Stack) Exited(pid int) <-chan struct{} {
	if p := s.spawned(pid); p != nil {
		return p.exited
	}
	return nil
}

// Kill stops a spawned process the way a crash or an OOM kill does:
// SIGKILL to its process group, no shutdown. It waits for the exit.
func (s *Stack) Kill(pid int) error {
	p := s.spawned(pid)
	if p == nil {
		return fmt.Errorf("localstack: no spawned process %d", pid)
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	select {
	case <-p.exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("localstack: process %d did not exit after SIGKILL", pid)
	}
}
