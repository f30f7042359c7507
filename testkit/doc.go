// Package testkit holds what Lockdown's tests share and no service runs:
// helpers that import package testing, kept out of the runtime modules as
// nats.go keeps its jetstream/test and Temporal its testsuite.
//
//   - testwait: the integration tests' polling wait for a positive
//     condition.
//   - golden: checks committed generated files against their generator.
//   - configtest: checks a service's generated configuration table.
package testkit
