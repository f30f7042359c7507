package migrate_test

import (
	"context"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockdown/lockdown/pkg/platform/migrate"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// postgres starts PostgreSQL and returns a pool on it.
func postgres(t *testing.T, ctx context.Context) *pgxpool.Pool {
	t.Helper()
	s := localstack.StartTest(t, ctx, localstack.Options{Postgres: true})
	pool, err := pgxpool.New(ctx, s.Postgres.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func TestApply(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool := postgres(t, ctx)
	v1 := fstest.MapFS{"001_incidents.sql": {Data: []byte("CREATE TABLE incidents (id text PRIMARY KEY);")}}

	t.Run("migrations are applied once, in the service's own schema", func(t *testing.T) {
		applied, err := migrate.Apply(ctx, pool, "containment", v1)
		if err != nil || len(applied) != 1 {
			t.Fatalf("applied %v, %v", applied, err)
		}
		again, err := migrate.Apply(ctx, pool, "containment", v1)
		if err != nil || len(again) != 0 {
			t.Fatalf("second run applied %v, %v", again, err)
		}
		if _, err := pool.Exec(ctx, "INSERT INTO containment.incidents VALUES ('i-1')"); err != nil {
			t.Fatalf("table not in the schema: %v", err)
		}
	})

	t.Run("a new migration is applied after the old ones, and concurrent starts do not race", func(t *testing.T) {
		v2 := fstest.MapFS{"001_incidents.sql": v1["001_incidents.sql"], "002_detections.sql": {Data: []byte("CREATE TABLE detections (id text);")}}
		errs := make(chan error, 4)
		for range 4 {
			go func() { _, err := migrate.Apply(ctx, pool, "containment", v2); errs <- err }()
		}
		for range 4 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM containment.schema_migrations").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 2 {
			t.Fatalf("%d migrations recorded, want 2", n)
		}
	})

	t.Run("a failing migration leaves nothing half-applied", func(t *testing.T) {
		bad := fstest.MapFS{"001_x.sql": {Data: []byte("CREATE TABLE t1 (id int); SELECT broken syntax here;")}}
		if _, err := migrate.Apply(ctx, pool, "other", bad); err == nil {
			t.Fatal("want an error")
		}
		var exists bool
		if err := pool.QueryRow(ctx, "SELECT to_regclass('other.t1') IS NOT NULL").Scan(&exists); err != nil {
			t.Fatal(err)
		}
		if exists {
			t.Fatal("t1 was created by a failed migration")
		}
	})

	t.Run("a badly named file is refused", func(t *testing.T) {
		if _, err := migrate.Apply(ctx, pool, "x", fstest.MapFS{"init.sql": {Data: []byte("SELECT 1")}}); err == nil {
			t.Fatal("want an error")
		}
	})
}

// TestLockOnlyTheOwnerTakes: the migration lock was an advisory lock any
// role of the database could take by its key and hold, and a service could
// then not start. Held on the old key, it no longer stops anything.
func TestLockOnlyTheOwnerTakes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool := postgres(t, ctx)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtext('lockdown-migrate-svc'))`); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(context.Background(), `SELECT pg_advisory_unlock_all()`) //nolint:errcheck // cleanup
	actx, acancel := context.WithTimeout(ctx, 10*time.Second)
	defer acancel()
	applied, err := migrate.Apply(actx, pool, "svc", fstest.MapFS{"001_t.sql": {Data: []byte("CREATE TABLE t (id int);")}})
	if err != nil || len(applied) != 1 {
		t.Fatalf("a lock held on the old advisory key stopped the migrations: %v, %v", applied, err)
	}
}
