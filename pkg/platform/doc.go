// Package platform is the root of Lockdown's shared runtime code that is not
// the event contract. Every package under it, by what it is for:
//
// Process skeleton (every service's main and composition root):
//   - runner: the process every service runs (config, signals, telemetry,
//     NATS, health, graceful drain) and the Runtime handed to its app.
//   - config: one config struct per service, loaded from LOCKDOWN_*
//     environment variables with documented defaults, validated once.
//   - telemetry: OpenTelemetry tracing and metrics (OTLP) and slog JSON
//     logs carrying trace and span ids.
//   - health: /healthz and /readyz, readiness checks and alarms.
//   - httpserve: an HTTP server for a service's lifetime (health, intake).
//   - failpoint: test-only kill points (SIGKILL at a named line), inert
//     unless LOCKDOWN_TEST_FAILPOINTS arms them.
//
// Adapters shared by services:
//   - natsconn: NATS and JetStream connections.
//   - outbox: the transactional outbox (events committed with the state
//     that caused them, then published by a relay).
//   - migrate: SQL migrations per service schema, under a lock.
//   - unavailable: tells an outage (retry) from a failure.
//   - vaultdecl: the declaration of the Vault objects Lockdown owns (token
//     roles, baseline, audit devices) and the baseline read from a Vault.
//   - vaulttoken: keeps Lockdown's install-time Vault tokens alive.
//   - dkimdns: publishes and reads DKIM records on an authoritative DNS
//     server (RFC 2136 with TSIG).
//   - keycheck: proves a public part recorded or published matches its
//     private key.
//   - directory: the platform's tenant directory in PostgreSQL (the
//     tenants' contacts and webhooks; owned by the platform, read by the
//     notifier).
//   - pgroles: the install step of Lockdown's PostgreSQL roles.
//
// The local stack (localstack), the tenant seed (tenantseed) and the
// tests' own helpers (testwait, golden, configtest) are in the testkit
// module: no service and not the operator's lockdown links them.
package platform
