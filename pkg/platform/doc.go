// Package platform is the root of Lockdown's shared runtime code that is not
// the event contract. Its packages:
//
//   - config: one config struct per service, loaded from LOCKDOWN_*
//     environment variables with documented defaults, validated once.
//   - telemetry: OpenTelemetry tracing (OTLP) and slog JSON logs carrying
//     trace and span ids.
//   - runner: the process skeleton every service main uses (signals,
//     telemetry, graceful drain).
//   - natsconn: NATS and JetStream connections.
//   - migrate: SQL migrations per service schema.
//   - vaultdecl: the declaration of Vault's security configuration
//     (Lockdown's token roles, the baseline and its loader, the audit
//     device comparison), and the baseline read from a live Vault.
//   - localstack: the real servers (NATS, PostgreSQL, Vault, Jaeger, Mailpit)
//     started as processes for tests, the drill and `lockdown dev`.
package platform
