package localstack_test

import (
	"context"
	"net/url"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockdown/lockdown/pkg/platform/migrate"
	"github.com/lockdown/lockdown/pkg/platform/pgroles"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// TestDatabaseRoles checks the install step of pkg/platform/pgroles on a
// real PostgreSQL: each service's role writes its own schema and no other,
// creates no schema, and the CLI has no role (an old install's read-only
// one is dropped).
func TestDatabaseRoles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.Options{Postgres: true})
	connect := func(t *testing.T, role string) *pgx.Conn {
		t.Helper()
		c, err := pgx.Connect(ctx, s.Postgres.RoleURL(role))
		if err != nil {
			t.Fatalf("connect as %s: %v", role, err)
		}
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		return c
	}
	exec := func(c *pgx.Conn, sql string) error { _, err := c.Exec(ctx, sql); return err }
	denied := func(t *testing.T, what string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("%s: want permission denied, got %v", what, err)
		}
	}
	for _, svc := range []string{"containment", "assessor", "rotator", "notifier"} {
		if err := exec(connect(t, svc), "CREATE TABLE "+svc+".probe (v text)"); err != nil {
			t.Fatalf("%s cannot create a table in its own schema: %v", svc, err)
		}
	}

	t.Run("a service's role writes its own schema and no other, and creates no schema", func(t *testing.T) {
		notifier := connect(t, "notifier")
		if err := exec(notifier, "INSERT INTO notifier.probe VALUES ('ok')"); err != nil {
			t.Fatalf("write its own table: %v", err)
		}
		denied(t, "write containment's table", exec(notifier, "INSERT INTO containment.probe VALUES ('forged recovery state')"))
		denied(t, "read containment's table", exec(notifier, "SELECT * FROM containment.probe"))
		denied(t, "create a table in containment's schema", exec(notifier, "CREATE TABLE containment.evil (v text)"))
		denied(t, "create a schema", exec(notifier, "CREATE SCHEMA evil"))
		denied(t, "create a table in public", exec(notifier, "CREATE TABLE public.evil (v text)"))
		rotator := connect(t, "rotator")
		denied(t, "the rotator writes the assessor's table", exec(rotator, "DELETE FROM assessor.probe"))
	})

	t.Run("the rotator and the notifier read the tenant directory and write none of it", func(t *testing.T) {
		admin, err := pgx.Connect(ctx, s.Postgres.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = admin.Close(ctx) }()
		if err := exec(admin, "INSERT INTO directory.tenants (id, name, domain, contact_email) VALUES ('acme', 'Acme', 'acme.example', 'security@acme.example')"); err != nil {
			t.Fatalf("the install step did not create the directory: %v", err)
		}
		for _, svc := range []string{"rotator", "notifier"} {
			c := connect(t, svc)
			var email string
			if err := c.QueryRow(ctx, "SELECT contact_email FROM directory.tenants WHERE id = 'acme'").Scan(&email); err != nil {
				t.Fatalf("%s cannot read the directory: %v", svc, err)
			}
			denied(t, svc+" redirects a tenant's notice", exec(c, "UPDATE directory.tenants SET contact_email = 'eve@evil.example' WHERE id = 'acme'"))
			denied(t, svc+" adds a tenant", exec(c, "INSERT INTO directory.tenants (id, name, domain, contact_email) VALUES ('x', 'x', 'x', 'x')"))
			denied(t, svc+" acts as the directory's owner", exec(c, "SET ROLE "+pgroles.DirectoryRole))
		}
	})

	t.Run("the CLI has no role, and an earlier install's read-only one is dropped with its grants", func(t *testing.T) {
		admin, err := pgx.Connect(ctx, s.Postgres.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = admin.Close(context.Background()) }()
		// What an install before the read model left behind.
		for _, st := range []string{`CREATE ROLE lockdown_cli LOGIN PASSWORD 'old'`, `GRANT USAGE ON SCHEMA containment TO lockdown_cli`,
			`GRANT SELECT ON ALL TABLES IN SCHEMA containment TO lockdown_cli`,
			`ALTER DEFAULT PRIVILEGES FOR ROLE containment IN SCHEMA containment GRANT SELECT ON TABLES TO lockdown_cli`} {
			if err := exec(admin, st); err != nil {
				t.Fatalf("%s: %v", st, err)
			}
		}
		passwords := map[string]string{}
		for _, r := range pgroles.Logins() {
			u, err := url.Parse(s.Postgres.RoleURL(r))
			if err != nil {
				t.Fatal(err)
			}
			passwords[r], _ = u.User.Password()
		}
		if err := pgroles.Install(ctx, admin, admin.Config().Database, passwords); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname = 'lockdown_cli'`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("the old CLI role is still there (%d, %v)", n, err)
		}
	})

	t.Run("a migration run by a superuser creates tables owned by the schema's role", func(t *testing.T) {
		admin, err := pgx.Connect(ctx, s.Postgres.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = admin.Close(ctx) }()
		tx, err := admin.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := migrate.AsOwner(ctx, tx, "containment"); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "CREATE TABLE containment.by_admin (v text)"); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := exec(connect(t, "containment"), "INSERT INTO containment.by_admin VALUES ('mine')"); err != nil {
			t.Fatalf("containment cannot write a table a superuser migrated: %v", err)
		}
	})

	t.Run("roles.sql, run by psql on another database, installs the roles and the directory, and can run again", func(t *testing.T) {
		psql, err := localstack.PGTool("psql")
		if err != nil {
			t.Fatal(err)
		}
		admin, err := pgx.Connect(ctx, s.Postgres.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = admin.Close(ctx) }()
		if err := exec(admin, "CREATE DATABASE psqlcheck"); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), "roles.sql")
		if err := os.WriteFile(file, []byte(pgroles.PsqlFile("psqlcheck")), 0o600); err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(s.Postgres.URL)
		if err != nil {
			t.Fatal(err)
		}
		u.Path = "/psqlcheck"
		args := []string{"-X", "-q", "-v", "ON_ERROR_STOP=1"}
		for _, r := range pgroles.Logins() {
			// The roles are the cluster's: keep the passwords they have.
			ru, _ := url.Parse(s.Postgres.RoleURL(r))
			pw, _ := ru.User.Password()
			args = append(args, "-v", r+"_password="+pw)
		}
		args = append(args, "-f", file, u.String())
		for run := range 2 {
			if out, err := osexec.CommandContext(ctx, psql, args...).CombinedOutput(); err != nil {
				t.Fatalf("psql run %d: %v\n%s", run+1, err, out)
			}
		}
		ru, _ := url.Parse(s.Postgres.RoleURL("notifier"))
		ru.Path = "/psqlcheck"
		c, err := pgx.Connect(ctx, ru.String())
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Close(ctx) }()
		var owner string
		if err := c.QueryRow(ctx, "SELECT tableowner FROM pg_tables WHERE schemaname = 'directory' AND tablename = 'tenants'").Scan(&owner); err != nil || owner != pgroles.DirectoryRole {
			t.Fatalf("directory.tenants owned by %q (%v)", owner, err)
		}
		if err := exec(c, "SELECT * FROM directory.tenants"); err != nil {
			t.Fatalf("the notifier cannot read the directory: %v", err)
		}
		denied(t, "the notifier writes the directory", exec(c, "INSERT INTO directory.tenants (id, name, domain, contact_email) VALUES ('x', 'x', 'x', 'x')"))
	})
}
