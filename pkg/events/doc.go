// Package events is Lockdown's event contract: every CloudEvent the services
// exchange, with its type, NATS subject, producer, consumers and the Go
// struct of its data, plus the JetStream streams and durable consumers that
// carry them. It knows nothing of NATS connections; package
// github.com/lockdown/lockdown/pkg/events/stream moves these events over
// JetStream.
//
// The catalog (Catalog) is the single source of truth: docs/events.md and
// the JSON Schemas under docs/schemas are generated from it and a test
// fails when they drift.
package events
