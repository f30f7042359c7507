// Package events is Lockdown's event contract: every CloudEvent the services
// exchange, with its type, NATS subject, producer, consumers and the Go
// struct of its data, plus the JetStream streams and durable consumers that
// carry them. It knows nothing of NATS connections; package
// github.com/lockdown/lockdown/pkg/platform/stream moves these events over
// JetStream.
//
// The catalog (Catalog) is the single source of truth: docs/events.md and
// the JSON Schemas under docs/schemas are generated from it and a test
// fails when they drift.
//
// Its packages:
//   - stream: the JetStream transport (publisher, consumer with retry,
//     dead letters and poison handling, readers that need no consumer, the
//     read-model buckets, the topology's creation and verification).
//   - credentials: the credential kinds, the rotation catalogue, what a
//     plan covers, and the results a rotation reports per kind.
//   - readmodel: the incident document readers (CLI, console) follow.
//   - report: the post-incident report, its type and Markdown renderer.
//   - webhook: the signed webhook a tenant receives, and its verification.
package events
