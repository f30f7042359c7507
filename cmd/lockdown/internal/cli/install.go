package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/natsconn"
	"github.com/lockdown/lockdown/pkg/platform/pgroles"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/pkg/platform/vaultclient"
	"github.com/lockdown/lockdown/pkg/platform/vaultdecl"
)

// runInstall provisions what the services need and may not create
// themselves. Today that is NATS: the streams and durable consumers the
// contract declares, created or brought up to date with the admin
// identity. It is idempotent, so deployments run it on every release
// (a compose one-shot, a Kubernetes Job) and services wait for it.
func runInstall(ctx context.Context, args []string, out, errOut io.Writer) int {
	if len(args) > 0 && args[0] == "postgres" {
		return installPostgres(ctx, args[1:], out, errOut)
	}
	if len(args) > 0 && args[0] == "vault" {
		return installVault(ctx, args[1:], out, errOut)
	}
	if len(args) == 0 || args[0] != "nats" {
		Writeln(errOut, "usage: lockdown install nats [--nats-url URL] [--nats-user admin]\n       lockdown install postgres --database-url ADMIN_URL\n       lockdown install vault --baseline-from-live [--vault-addr URL] [--out FILE]")
		return ExitUsage
	}
	fs := NewFlags("install nats", errOut)
	natsURL := fs.String("nats-url", EnvOr("NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL(s), comma-separated (LOCKDOWN_NATS_URL)")
	user := fs.String("nats-user", EnvOr("NATS_USER", events.UserAdmin), "NATS user allowed to manage JetStream (LOCKDOWN_NATS_USER); its password comes from LOCKDOWN_NATS_PASSWORD")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long (a cluster may still be electing its JetStream leader)")
	if code, ok := Parse(fs, args[1:]); !ok {
		return code
	}
	ictx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	conn, err := natsconn.Connect(ictx, natsconn.Options{URL: *natsURL, User: *user, Password: EnvOr("NATS_PASSWORD", ""), Name: "lockdown-install"})
	if err != nil {
		Writef(errOut, "lockdown install nats: %v\n", err)
		return ExitFailure
	}
	defer CloseNATS(conn)
	if err := stream.EnsureTopology(ictx, conn.JS); err != nil {
		Writef(errOut, "lockdown install nats: %v\n", err)
		return ExitFailure
	}
	for _, s := range events.Streams() {
		Writef(out, "stream %s: %d subjects\n", s.Name, len(s.Subjects))
	}
	for _, c := range events.Consumers() {
		Writef(out, "consumer %s on %s for %s\n", c.Durable, c.Stream, c.Service)
	}
	return ExitOK
}

// installPostgres creates Lockdown's PostgreSQL roles and schemas
// (pkg/platform/pgroles) with an administrator's connection: one role per
// service owning its schema (the CLI itself needs none). Each login
// role's password comes from LOCKDOWN_POSTGRES_PASSWORD_<ROLE>; all
// missing ones are reported together. Passwords are never printed.
func installPostgres(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := NewFlags("install postgres", errOut)
	dbURL := fs.String("database-url", EnvOr("DATABASE_URL", ""), "an administrator's connection to the lockdown database (LOCKDOWN_DATABASE_URL)")
	if code, ok := Parse(fs, args); !ok {
		return code
	}
	var problems []string
	if *dbURL == "" {
		problems = append(problems, "--database-url is required")
	}
	passwords := map[string]string{}
	for _, r := range pgroles.Logins() {
		env := "POSTGRES_PASSWORD_" + strings.ToUpper(r)
		if passwords[r] = EnvOr(env, ""); passwords[r] == "" {
			problems = append(problems, "LOCKDOWN_"+env+" is required")
		}
	}
	if len(problems) > 0 {
		Writef(errOut, "lockdown install postgres: %s\n", strings.Join(problems, "; "))
		return ExitUsage
	}
	if err := pgroles.InstallURL(ctx, *dbURL, passwords); err != nil {
		Writef(errOut, "lockdown install postgres: %v\n", err)
		return ExitFailure
	}
	Writef(out, "roles %s: each owns its schema (the CLI needs none: it reads the read model in NATS)\n", strings.Join(pgroles.Logins(), ", "))
	return ExitOK
}

// installVault writes the declaration of Vault's security configuration
// (deploy/vault/baseline.json) from a live Vault an operator trusts
// (vaultdecl.FromLive), with an administrator's token from VAULT_TOKEN
// (never a flag: it would stay in the shell's history). The token is not
// printed. The declared auth methods of --auth-dir are left out (they are
// re-applied from their own files), as are Vault's and Lockdown's own
// objects.
func installVault(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := NewFlags("install vault", errOut)
	fromLive := fs.Bool("baseline-from-live", false, "read the live Vault's audit devices, mounts, policies, token roles, identities with policies, plugins and audited headers and write them as a baseline")
	addr := fs.String("vault-addr", EnvOr("VAULT_ADDR", os.Getenv("VAULT_ADDR")), "Vault's address (LOCKDOWN_VAULT_ADDR, else VAULT_ADDR)")
	authDir := fs.String("auth-dir", EnvOr("AUTH_DIR", "deploy/vault/auth"), "the declarative auth methods, left out of the baseline (LOCKDOWN_AUTH_DIR)")
	outFile := fs.String("out", "", "write the baseline to this file (0644) instead of standard output")
	timeout := fs.Duration("timeout", time.Minute, "give up after this long")
	if code, ok := Parse(fs, args); !ok {
		return code
	}
	token := os.Getenv("VAULT_TOKEN")
	var problems []string
	if !*fromLive {
		problems = append(problems, "--baseline-from-live is required (the one thing install vault does)")
	}
	if *addr == "" {
		problems = append(problems, "--vault-addr (or VAULT_ADDR) is required")
	}
	if token == "" {
		problems = append(problems, "VAULT_TOKEN is required: an administrator's token that may read sys/audit, sys/mounts, sys/policies, auth/token/roles, identity and sys/plugins/catalog")
	}
	auth, err := filepath.Glob(filepath.Join(*authDir, "*.json"))
	if err != nil || len(auth) == 0 {
		problems = append(problems, fmt.Sprintf("--auth-dir %s holds no auth method (*.json)", *authDir))
	}
	if len(problems) > 0 {
		Writef(errOut, "lockdown install vault: %s\n", strings.Join(problems, "; "))
		return ExitUsage
	}
	declared := make([]string, len(auth))
	for i, f := range auth {
		declared[i] = strings.TrimSuffix(filepath.Base(f), ".json")
	}
	c, err := vaultclient.New(vaultclient.Options{Address: *addr, Token: token, Timeout: *timeout})
	if err != nil {
		Writef(errOut, "lockdown install vault: %v\n", err)
		return ExitFailure
	}
	vctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	b, err := vaultdecl.FromLive(vctx, c, declared)
	if err != nil {
		Writef(errOut, "lockdown install vault: %v\n", err)
		return ExitFailure
	}
	body, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		Writef(errOut, "lockdown install vault: %v\n", err)
		return ExitFailure
	}
	body = append(body, '\n')
	if *outFile == "" {
		if _, err := out.Write(body); err != nil {
			return ExitFailure
		}
		return ExitOK
	}
	if err := os.WriteFile(*outFile, body, 0o644); err != nil {
		Writef(errOut, "lockdown install vault: %v\n", err)
		return ExitFailure
	}
	Writef(out, "baseline written to %s: %d audit devices, %d auth mounts, %d secrets mounts, %d policies, %d token roles; review every entry before adopting it\n",
		*outFile, len(b.AuditDevices), len(b.AuthMounts), len(b.SecretsMounts), len(b.Policies), len(b.TokenRoles))
	return ExitOK
}
