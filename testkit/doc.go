// Package testkit holds what Lockdown's tests and its drill share and no
// service runs, kept out of the runtime modules as nats.go keeps its
// jetstream/test and Temporal its testsuite: no service and not the
// operator's lockdown links it (lockdown-drill does).
//
//   - localstack: the real servers (NATS, PostgreSQL, Vault, Jaeger,
//     Mailpit, Knot DNS) started as processes for tests, the drill and
//     `make dev`, and the services built from source for tests.
//   - tenantseed: fills the tenant directory and Vault with tenants as the
//     platform has them.
//   - testwait: the integration tests' polling wait for a positive
//     condition.
//   - golden: checks committed generated files against their generator.
//   - configtest: checks a service's generated configuration table.
package testkit
