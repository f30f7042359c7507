// Package directory is the platform's tenant directory in PostgreSQL
// (schema directory): who the tenants are, where their DKIM record goes and
// how to reach them. The rotator plans from it and the notifier writes to
// its contacts; both only read it. Its schema lives here, in one place: the
// install step (pkg/platform/pgroles) applies its migrations as the
// directory's owner, and the services check at start that it is there.
package directory

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockdown/lockdown/pkg/platform/migrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Schema is the PostgreSQL schema of the directory.
const Schema = "directory"

// ErrUnknownTenant is returned when a tenant id is not in the directory.
var ErrUnknownTenant = errors.New("tenant not in the directory")

// Tenant is one directory row.
type Tenant struct {
	ID           string
	Name         string
	Domain       string
	ContactEmail string
	WebhookURL   string // empty when the tenant has none
	// DKIMDelegation is the name in the platform's DKIM zone under which
	// the tenant's selectors are delegated by CNAME (empty: none).
	DKIMDelegation string
}

// ErrNotInstalled is returned by Ready when the directory's schema is
// missing or behind and this role may not bring it up to date (a
// service's role reads the directory and writes none of it).
var ErrNotInstalled = errors.New("the tenant directory is not installed or out of date: run `lockdown install postgres`")

// Migrate creates or upgrades the directory schema (the install step, or
// a development database).
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	_, err := migrate.Apply(ctx, pool, Schema, Migrations())
	return err
}

// Migrations are the directory's migration files.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded folder exists: a build that lost it is broken
	}
	return sub
}

// Ready checks at a service's start that every migration of the directory
// is applied. When one is not, it applies them if this role may (a
// development database) and returns ErrNotInstalled otherwise.
func Ready(ctx context.Context, pool *pgxpool.Pool) error {
	names, err := fs.Glob(Migrations(), "*.sql")
	if err != nil {
		return err
	}
	var applied int
	err = pool.QueryRow(ctx, `SELECT count(*) FROM directory.schema_migrations WHERE name = ANY($1)`, names).Scan(&applied)
	if err == nil && applied == len(names) {
		return nil
	}
	if merr := Migrate(ctx, pool); merr != nil {
		return fmt.Errorf("%w (%v)", ErrNotInstalled, merr)
	}
	return nil
}

// Get returns one tenant, or ErrUnknownTenant.
func Get(ctx context.Context, q interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}, id string) (Tenant, error) {
	var t Tenant
	err := q.QueryRow(ctx, `SELECT id, name, domain, contact_email, coalesce(webhook_url, ''), coalesce(dkim_delegation, '') FROM directory.tenants WHERE id = $1`, id).
		Scan(&t.ID, &t.Name, &t.Domain, &t.ContactEmail, &t.WebhookURL, &t.DKIMDelegation)
	if errors.Is(err, pgx.ErrNoRows) {
		return Tenant{}, fmt.Errorf("%w: %q", ErrUnknownTenant, id)
	}
	return t, err
}
