// Package unavailable tells an outage from a failure: it recognises the
// errors of a dependency that is down — PostgreSQL refusing connections or
// shutting down, Vault sealed or answering 5xx, a connection refused or
// timed out — and marks them with stream.Unavailable, so the consumer
// retries them without limit and pauses while the dependency is away,
// instead of spending the message's deliveries. Adapters that know their
// dependency mark their own errors (Vault, SMTP); Classify catches the
// database's errors wherever they come from.
package unavailable

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"

	vault "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lockdown/lockdown/pkg/platform/stream"
)

// Dependency names.
const (
	Postgres = "postgres"
	Vault    = "vault"
	SMTP     = "smtp"
	NATS     = "nats"
)

// Classify marks err when it says PostgreSQL is away, and as permanent
// when PostgreSQL refused the message's own data (SQLSTATE class 22, a
// data exception: a "\u0000" PostgreSQL's jsonb cannot hold, a value too
// long — no retry changes the data); other errors are returned as they
// are (the consumer's poison budget bounds them).
func Classify(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := stream.UnavailableDependency(err); ok {
		return err
	}
	if PostgresDown(err) {
		return stream.Unavailable(Postgres, err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "22") {
		return stream.Permanent(err)
	}
	return err
}

// PostgresDown reports whether err is PostgreSQL being unreachable or
// going away (not a query's own error).
func PostgresDown(err error) bool {
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Class 08: connection exception; 57P01-03: admin shutdown, crash
		// shutdown, cannot connect now; 53300: too many connections.
		return strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03" || pgErr.Code == "53300"
	}
	if errors.Is(err, pgx.ErrTxClosed) {
		return false
	}
	// A connection broken mid-query: pgconn says it is safe to retry (the
	// query was not sent), or the pool hands out a closed connection. Only
	// pgconn's own errors count: a network error of another client (a
	// webhook) must not pause a consumer for the database.
	return pgconn.SafeToRetry(err) || strings.Contains(err.Error(), "conn closed") || strings.Contains(err.Error(), "failed to connect to `")
}

// VaultDown reports whether err is Vault being away: sealed, answering
// 5xx or 429, or not answering at all.
func VaultDown(err error) bool {
	if err == nil {
		return false
	}
	var resp *vault.ResponseError
	if errors.As(err, &resp) {
		return resp.StatusCode >= 500 || resp.StatusCode == 429
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "Vault is sealed")
}

// Middleware classifies every handler error (stream.Middleware).
func Middleware(next stream.Handler) stream.Handler {
	return func(ctx context.Context, d *stream.Delivery) error { return Classify(next(ctx, d)) }
}
