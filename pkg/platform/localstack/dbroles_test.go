package localstack_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockdown/lockdown/pkg/platform/localstack"
	"github.com/lockdown/lockdown/pkg/platform/migrate"
	"github.com/lockdown/lockdown/pkg/platform/pgroles"
)

// TestDatabaseRoles checks the install step of pkg/platform/pgroles on a
// real PostgreSQL: each service's role writes its own schema and no other,
// creates no schema, and the CLI's role reads and writes nothing.
func TestDatabaseRoles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := localstack.Start(ctx, localstack.Options{Postgres: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	connect := func(t *testing.T, role string) *pgx.Conn {
		t.Helper()
		c, err := pgx.Connect(ctx, s.Postgres.RoleURL(role))
		if err != nil {
			t.Fatalf("connect as %s: %v", role, err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
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

	t.Run("the CLI's role reads every schema and writes none", func(t *testing.T) {
		cli := connect(t, pgroles.CLIRole)
		if err := exec(cli, "SELECT * FROM containment.probe"); err != nil {
			t.Fatalf("read containment's table: %v", err)
		}
		denied(t, "write containment's table", exec(cli, "INSERT INTO containment.probe VALUES ('x')"))
		denied(t, "create a table", exec(cli, "CREATE TABLE containment.evil (v text)"))
	})

	t.Run("a migration run by a superuser creates tables owned by the schema's role", func(t *testing.T) {
		admin, err := pgx.Connect(ctx, s.Postgres.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close(ctx)
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
}
