package localstack

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	vault "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"
)

// PlatformEstate is what SeedPlatform put in Vault and PostgreSQL: names
// only (the passwords live in Vault and PostgreSQL).
type PlatformEstate struct {
	TransitKeys []string
	// Connection is the database secrets engine's connection to the
	// stack's PostgreSQL; RootUser the role Vault logs in as.
	Connection, RootUser string
	// StaticRole is the static role, managing StaticUser.
	StaticRole, StaticUser string
	// CertRole is the PKI role; CertStore the KV path of its certificate.
	CertRole, CertStore string
	// CertSerials are the certificates issued before the incident (the one
	// kept in CertStore and a stray one, as an intruder would issue).
	CertSerials []string
	// Secrets are the platform KV secrets (under platform/).
	Secrets []string
	// Catalogue is the catalogue covering it (deploy/rotation/catalogue.json).
	Catalogue string
	// rootPassword is RootUser's password as seeded (before Vault rotates
	// it): the test's own, for proving it stops working.
	rootPassword string
}

// RootPassword is the database root role's seeded password (a test's own
// secret: compare it, never print it).
func (e *PlatformEstate) RootPassword() string { return e.rootPassword }

// DatabaseURL is a connection string to the stack's database as user with
// password (a test's own: for proving which password logs in).
func (s *Stack) DatabaseURL(user, password string) string {
	return pgURL(user, password, s.Postgres.Port, postgresDB)
}

// mountPlatform enables the platform-wide secrets engines on a fresh Vault
// before its baseline is taken (so containment keeps them): what
// SeedPlatform fills and deploy/rotation/catalogue.json's entries rotate.
// Each is mounted at its type's name.
func mountPlatform(ctx context.Context, c *vault.Client) error {
	for _, engine := range []string{"transit", "database", "pki"} {
		if err := c.Sys().MountWithContext(ctx, engine, &vault.MountInput{Type: engine}); err != nil {
			return fmt.Errorf("vault mount %s: %w", engine, err)
		}
	}
	return nil
}

// SeedPlatform fills the platform engines the way a platform team would:
// two transit keys, a database connection to the stack's PostgreSQL with a
// root role and a static role, a PKI root with a role and two issued
// certificates, and three platform KV secrets. The rotator's catalogue
// then is deploy/rotation/catalogue.json. It needs Vault and Postgres.
func (s *Stack) SeedPlatform(ctx context.Context) (*PlatformEstate, error) {
	if s.Vault == nil || s.Postgres == nil {
		return nil, fmt.Errorf("localstack: SeedPlatform needs Vault and Postgres")
	}
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	c, err := s.Vault.Client()
	if err != nil {
		return nil, err
	}
	e := &PlatformEstate{TransitKeys: []string{"archive", "mail-signing"}, Connection: "platform", RootUser: "vault_root",
		StaticRole: "app", StaticUser: "platform_app", CertRole: "smtp-relay", CertStore: "pki-certs/smtp-relay",
		Secrets:   []string{"platform/billing/stripe", "platform/relay", "platform/signing"},
		Catalogue: filepath.Join(root, "deploy", "rotation", "catalogue.json")}
	write := func(path string, data map[string]any) (map[string]any, error) {
		sec, err := c.Logical().WriteWithContext(ctx, path, data)
		if err != nil {
			return nil, fmt.Errorf("seed %s: %w", path, err)
		}
		if sec == nil {
			return nil, nil
		}
		return sec.Data, nil
	}
	for _, k := range e.TransitKeys {
		if _, err := write("transit/keys/"+k, map[string]any{"type": "aes256-gcm96"}); err != nil {
			return nil, err
		}
	}
	// The database roles Vault manages, made by the cluster's owner.
	rootPW, staticPW := randomHex(16), randomHex(16)
	e.rootPassword = rootPW
	conn, err := pgx.Connect(ctx, s.Postgres.admin)
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close(ctx) }() // its statements are done (autocommit): nothing to lose
	for _, stmt := range []string{
		fmt.Sprintf(`CREATE ROLE %s LOGIN CREATEROLE PASSWORD '%s'`, e.RootUser, rootPW),
		fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD '%s'`, e.StaticUser, staticPW),
		// PostgreSQL 15: a CREATEROLE role may alter only roles it has
		// admin option on.
		fmt.Sprintf(`GRANT %s TO %s WITH ADMIN OPTION`, e.StaticUser, e.RootUser),
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return nil, fmt.Errorf("seed database roles: %w", err)
		}
	}
	if _, err := write("database/config/"+e.Connection, map[string]any{
		"plugin_name":    "postgresql-database-plugin",
		"connection_url": fmt.Sprintf("postgresql://{{username}}:{{password}}@127.0.0.1:%d/%s?sslmode=disable", s.Postgres.Port, postgresDB),
		"username":       e.RootUser, "password": rootPW, "allowed_roles": "*",
		"verify_connection": true,
	}); err != nil {
		return nil, err
	}
	if _, err := write("database/static-roles/"+e.StaticRole, map[string]any{"db_name": e.Connection, "username": e.StaticUser, "rotation_period": "720h"}); err != nil {
		return nil, err
	}
	if _, err := write("pki/root/generate/internal", map[string]any{"common_name": "Lockdown test CA", "ttl": "87600h", "key_type": "ec", "key_bits": 256}); err != nil {
		return nil, err
	}
	if _, err := write("pki/roles/"+e.CertRole, map[string]any{"allowed_domains": "lockdown.test", "allow_subdomains": true, "max_ttl": "8760h", "key_type": "ec", "key_bits": 256}); err != nil {
		return nil, err
	}
	for i, cn := range []string{"relay.lockdown.test", "stray.lockdown.test"} {
		d, err := write("pki/issue/"+e.CertRole, map[string]any{"common_name": cn, "ttl": "720h"})
		if err != nil {
			return nil, err
		}
		serial, _ := d["serial_number"].(string)
		e.CertSerials = append(e.CertSerials, serial)
		if i == 0 {
			if _, err := c.KVv2(VaultKVMount).Put(ctx, e.CertStore, map[string]any{"certificate": d["certificate"], "private_key": d["private_key"], "serial_number": serial}); err != nil {
				return nil, err
			}
		}
	}
	for i, p := range e.Secrets {
		data := map[string]any{"password": randomHex(20), "username": "svc"}
		if i == 2 {
			data = map[string]any{"private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nold\n-----END OPENSSH PRIVATE KEY-----\n", "token": randomHex(32)}
		}
		if _, err := c.KVv2(VaultKVMount).Put(ctx, p, data); err != nil {
			return nil, err
		}
	}
	s.platform = e
	return e, nil
}

// catalogueFile is the rotator's catalogue: deploy's once SeedPlatform
// filled the platform engines, else an empty one (a stack without a
// platform estate rotates tenants only).
func (s *Stack) catalogueFile() string {
	if s.platform != nil {
		return s.platform.Catalogue
	}
	f := filepath.Join(s.Dir, "catalogue-empty.json")
	if _, err := os.Stat(f); err != nil {
		_ = os.WriteFile(f, []byte(`{"description": "no platform-wide entries", "entries": []}`+"\n"), 0o600)
	}
	return f
}
