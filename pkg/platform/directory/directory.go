// Package directory is the platform's tenant directory in PostgreSQL
// (schema directory): who the tenants are, where their DKIM record goes and
// how to reach them. The rotator plans from it and the notifier writes to
// its contacts, so its schema lives here, in one place, and every service
// that reads it applies the same migrations (they are idempotent and
// serialised by an advisory lock).
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
}

// Migrate creates or upgrades the directory schema.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	_, err = migrate.Apply(ctx, pool, Schema, sub)
	return err
}

// Get returns one tenant, or ErrUnknownTenant.
func Get(ctx context.Context, q interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}, id string) (Tenant, error) {
	var t Tenant
	err := q.QueryRow(ctx, `SELECT id, name, domain, contact_email, coalesce(webhook_url, '') FROM directory.tenants WHERE id = $1`, id).
		Scan(&t.ID, &t.Name, &t.Domain, &t.ContactEmail, &t.WebhookURL)
	if errors.Is(err, pgx.ErrNoRows) {
		return Tenant{}, fmt.Errorf("%w: %q", ErrUnknownTenant, id)
	}
	return t, err
}
