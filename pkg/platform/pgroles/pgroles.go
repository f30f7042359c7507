// Package pgroles is the install step of Lockdown's PostgreSQL roles: one
// login role per service owning that service's schema and nothing else.
// The operator CLI has none: it reads the read model containment keeps in
// NATS (pkg/events/readmodel). A compromised service can then
// write its own tables only: not containment's recovery state, not another
// service's outbox.
//
// The tenant directory (schema directory) belongs to a role without login
// (the platform's sync job may be made a member to write it); the install
// step applies its migrations as that role, and the rotator and the
// notifier may only read it: neither can redirect a tenant's notice.
package pgroles

import (
	"context"
	"fmt"
	"io/fs"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockdown/lockdown/pkg/platform/directory"
)

// Service roles and the schema each owns.
var owners = []struct{ Role, Schema string }{
	{"containment", "containment"},
	{"assessor", "assessor"},
	{"rotator", "rotator"},
	{"notifier", "notifier"},
	{DirectoryRole, "directory"},
}

// Roles that log in: the four services. The CLI has none: it reads the
// read model in NATS (pkg/events/readmodel), never a service's tables.
var logins = []string{"containment", "assessor", "rotator", "notifier"}

const (
	// retiredCLIRole read every schema before the read model; the
	// install step drops it where an earlier install created it.
	retiredCLIRole = "lockdown_cli"
	// DirectoryRole owns the tenant directory; it cannot log in.
	DirectoryRole = "lockdown_directory"
)

// Logins lists the roles that log in, each needing a password.
func Logins() []string { return append([]string(nil), logins...) }

// Statements returns the install step's SQL for database, as statements
// run one by one by a superuser (or the database owner with CREATEROLE).
// password(role) gives the SQL expression of each login role's password:
// a quoted literal (Literal) when run from Go, a psql variable (:'name')
// in the file operators run. Every statement can run again: re-running
// the step resets the passwords and grants.
func Statements(database string, password func(role string) string) []string {
	id := func(s string) string { return pgx.Identifier{s}.Sanitize() }
	var out []string
	add := func(format string, a ...any) { out = append(out, fmt.Sprintf(format, a...)) }
	for _, r := range append(Logins(), DirectoryRole) {
		add(`DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = %s) THEN CREATE ROLE %s NOLOGIN; END IF; END $$`, Literal(r), id(r))
	}
	for _, r := range logins {
		add(`ALTER ROLE %s LOGIN PASSWORD %s`, id(r), password(r))
	}
	// The CLI's old read-only role could read every service's tables:
	// gone with its grants (DROP OWNED also drops its default privileges).
	add(`DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = %s) THEN DROP OWNED BY %s; DROP ROLE %s; END IF; END $$`,
		Literal(retiredCLIRole), id(retiredCLIRole), id(retiredCLIRole))
	// Nobody creates objects in public, and only the install step creates
	// schemas: a service's role has no CREATE on the database.
	add(`REVOKE CREATE ON SCHEMA public FROM PUBLIC`)
	add(`REVOKE CREATE ON DATABASE %s FROM PUBLIC`, id(database))
	for _, o := range owners {
		add(`CREATE SCHEMA IF NOT EXISTS %s AUTHORIZATION %s`, id(o.Schema), id(o.Role))
		add(`ALTER SCHEMA %s OWNER TO %s`, id(o.Schema), id(o.Role))
	}
	// The directory is read, never written, by the services that use it
	// (an earlier install made them members of its owner: undone).
	readers := id("rotator") + ", " + id("notifier")
	add(`REVOKE %s FROM %s`, id(DirectoryRole), readers)
	add(`GRANT USAGE ON SCHEMA directory TO %s`, readers)
	add(`GRANT SELECT ON ALL TABLES IN SCHEMA directory TO %s`, readers)
	add(`ALTER DEFAULT PRIVILEGES FOR ROLE %s IN SCHEMA directory GRANT SELECT ON TABLES TO %s`, id(DirectoryRole), readers)
	return out
}

// Install runs the statements on conn (a superuser's, or the database
// owner's with CREATEROLE) with the given passwords, one per login role,
// then applies the tenant directory's migrations as its owner.
// An error never quotes a statement: they hold passwords.
func Install(ctx context.Context, conn *pgx.Conn, database string, passwords map[string]string) error {
	for _, st := range Statements(database, func(r string) string { return Literal(passwords[r]) }) {
		if _, err := conn.Exec(ctx, st); err != nil {
			return fmt.Errorf("install roles: %w", err)
		}
	}
	pool, err := pgxpool.New(ctx, conn.Config().ConnString())
	if err != nil {
		return fmt.Errorf("install the tenant directory: %w", err)
	}
	defer pool.Close()
	if err := directory.Migrate(ctx, pool); err != nil {
		return fmt.Errorf("install the tenant directory: %w", err)
	}
	return nil
}

// InstallURL connects with an administrator's URL and runs Install on the
// database it names.
func InstallURL(ctx context.Context, adminURL string, passwords map[string]string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.Background()) }() // its statements are done (autocommit): nothing to lose
	return Install(ctx, conn, conn.Config().Database, passwords)
}

// Literal quotes s as an SQL string literal.
func Literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// PsqlFile renders the statements as a psql script whose passwords come
// from psql variables (psql -v containment_password=… -f roles.sql):
// deploy/postgres/roles.sql.
func PsqlFile(database string) string {
	var b strings.Builder
	b.WriteString("-- Generated by make docs from pkg/platform/pgroles. Do not edit by hand.\n")
	b.WriteString("-- Lockdown's PostgreSQL roles: one per service owning its schema (the CLI has\n")
	b.WriteString("-- none: it reads the read model in NATS). Run as a superuser on the lockdown database:\n")
	b.WriteString("--   psql -v ON_ERROR_STOP=1")
	for _, r := range logins {
		fmt.Fprintf(&b, " -v %s_password=…", r)
	}
	b.WriteString(" -f roles.sql\n")
	for _, st := range Statements(database, func(r string) string { return ":'" + r + "_password'" }) {
		b.WriteString(st + ";\n")
	}
	// The directory's migrations, as its owner, each once (psql's \if over
	// the bookkeeping table migrate.Apply keeps): the file can run again.
	b.WriteString("-- The tenant directory's migrations (pkg/platform/directory), as its owner.\n")
	fmt.Fprintf(&b, "SET ROLE %s;\n", DirectoryRole)
	b.WriteString("CREATE TABLE IF NOT EXISTS directory.schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());\n")
	names, _ := fs.Glob(directory.Migrations(), "*.sql")
	for _, name := range names {
		body, _ := fs.ReadFile(directory.Migrations(), name)
		v := "apply_" + strings.TrimSuffix(name, ".sql")
		fmt.Fprintf(&b, "SELECT NOT EXISTS (SELECT 1 FROM directory.schema_migrations WHERE name = %s) AS %s \\gset\n", Literal(name), v)
		fmt.Fprintf(&b, "\\if :%s\nBEGIN;\nSET LOCAL search_path TO directory;\n%s\nINSERT INTO directory.schema_migrations (name) VALUES (%s);\nCOMMIT;\n\\endif\n",
			v, strings.TrimSpace(string(body)), Literal(name))
	}
	b.WriteString("RESET ROLE;\n")
	return b.String()
}
