// Package migrate applies a service's SQL migrations to its own PostgreSQL
// schema at start. Migrations are files named NNN_description.sql, applied
// in name order, each once, each in its own transaction, under a lock on
// the schema's schema_migrations table so that several replicas starting
// together do not race. (An advisory lock could be taken, and held, by any
// role of the database — the notifier's, say — to stop a service from
// starting; a table lock only the schema's owner may take.)
package migrate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

var fileName = regexp.MustCompile(`^\d{3,}_[a-z0-9_]+\.sql$`)

// Apply creates schema if needed and applies the migrations in fsys (the
// files at its root) that are not yet recorded in schema.schema_migrations.
// It returns the names applied now.
func Apply(ctx context.Context, pool *pgxpool.Pool, schema string, fsys fs.FS) ([]string, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		if !fileName.MatchString(e.Name()) {
			return nil, fmt.Errorf("migrate: %q is not named NNN_description.sql", e.Name())
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	ident := pgx.Identifier{schema}.Sanitize()
	if err := ensureLedger(ctx, pool, schema); err != nil {
		return nil, fmt.Errorf("migrate %s: %w", schema, err)
	}
	var applied []string
	for _, name := range names {
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return applied, fmt.Errorf("migrate: %w", err)
		}
		did, err := applyOne(ctx, pool, schema, ident, name, string(body))
		if err != nil {
			return applied, fmt.Errorf("migrate %s/%s: %w", schema, name, err)
		}
		if did {
			applied = append(applied, name)
		}
	}
	return applied, nil
}

func applyOne(ctx context.Context, pool *pgxpool.Pool, schema, ident, name, body string) (bool, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	if err := Lock(ctx, tx, schema); err != nil {
		return false, err
	}
	var exists bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+ident+".schema_migrations WHERE name = $1)", name).Scan(&exists); err != nil {
		return false, err
	}
	if exists {
		return false, nil
	}
	if _, err := tx.Exec(ctx, "SET LOCAL search_path TO "+ident); err != nil {
		return false, err
	}
	if _, err := tx.Exec(ctx, body); err != nil {
		return false, err
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+ident+".schema_migrations (name) VALUES ($1)", name); err != nil {
		return false, err
	}
	return true, tx.Commit(ctx)
}

// ledgerDDL creates the table of applied migrations, whose lock is the
// schema's migration lock.
func ledgerDDL(ident string) string {
	return "CREATE TABLE IF NOT EXISTS " + ident + ".schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
}

// ensureLedger creates schema (in a development database) and its
// schema_migrations table when missing. CREATE … IF NOT EXISTS is not safe
// against itself: a process that loses the race to create it gets a
// duplicate error, and tries again (the table is there by then).
func ensureLedger(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if err := AsOwner(ctx, tx, schema); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, ledgerDDL(pgx.Identifier{schema}.Sanitize()))
			return err
		})
		var pgErr *pgconn.PgError
		if err == nil || attempt == 5 || !errors.As(err, &pgErr) || (pgErr.Code != "23505" && pgErr.Code != "42P07" && pgErr.Code != "42P06") {
			return err
		}
	}
}

// Lock takes schema's migration lock within tx — an exclusive lock on its
// schema_migrations table, which conflicts with itself and not with
// readers, and which only the schema's owner may take — and sets tx to act
// as the owner (AsOwner). The table must exist (Apply creates it; so does
// EnsureLedger).
func Lock(ctx context.Context, tx pgx.Tx, schema string) error {
	if err := AsOwner(ctx, tx, schema); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, "LOCK TABLE "+pgx.Identifier{schema, "schema_migrations"}.Sanitize()+" IN SHARE ROW EXCLUSIVE MODE")
	return err
}

// EnsureLedger creates schema's schema_migrations table when missing, for
// a caller that takes the migration lock outside Apply (outbox.Ensure).
func EnsureLedger(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	return ensureLedger(ctx, pool, schema)
}

// DefaultMaxConns is the least number of connections a service's pool
// opens when its URL does not set pool_max_conns.
const DefaultMaxConns = 16

// Open connects a pool to url and applies each schema's migrations (schema
// name → folder in fsys), closing the pool again if any step fails: the
// start of every service that owns tables. Steps in then (another package's schema, such as the tenant directory)
// run after, on the same pool.
func Open(ctx context.Context, url string, fsys fs.FS, schemas map[string]string, then ...func(context.Context, *pgxpool.Pool) error) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	if !strings.Contains(url, "pool_max_conns") {
		// pgx's default is the number of cores (4 at least): on a small
		// machine the rotator's 32 jobs in flight queued for 4
		// connections. A URL's pool_max_conns still decides.
		cfg.MaxConns = max(cfg.MaxConns, DefaultMaxConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database: %w", err)
	}
	for schema, dir := range schemas {
		sub, err := fs.Sub(fsys, dir)
		if err == nil {
			_, err = Apply(ctx, pool, schema, sub)
		}
		if err != nil {
			pool.Close()
			return nil, err
		}
	}
	for _, step := range then {
		if err := step(ctx, pool); err != nil {
			pool.Close()
			return nil, err
		}
	}
	return pool, nil
}

// AsOwner prepares tx to create objects in schema: it creates the schema
// when it does not exist (a development database; in a deployment the
// install step creates every schema with its owner, and a service's role
// may create none), and when the schema belongs to a role the current user
// may act as — a service's role, run by a superuser in tests, or the
// directory's role, which the rotator and the notifier are members of — it
// sets that role for the rest of tx, so every table belongs to the
// schema's owner whoever ran the migration.
func AsOwner(ctx context.Context, tx pgx.Tx, schema string) error {
	var owner string
	var member bool
	err := tx.QueryRow(ctx, `SELECT nspowner::regrole::text, pg_has_role(current_user, nspowner, 'MEMBER')
		FROM pg_namespace WHERE nspname = $1`, schema).Scan(&owner, &member)
	if errors.Is(err, pgx.ErrNoRows) {
		_, err = tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{schema}.Sanitize())
		return err
	}
	if err != nil {
		return err
	}
	if !member {
		return nil // the owner's grants decide; PostgreSQL reports what is refused
	}
	// regrole::text is already quoted where the name needs it.
	_, err = tx.Exec(ctx, "SET LOCAL ROLE "+owner)
	return err
}
