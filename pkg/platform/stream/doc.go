// Package stream moves Lockdown's CloudEvents over NATS JetStream: it
// creates the declared streams and durable consumers, publishes events in
// structured JSON mode with Nats-Msg-Id and trace context, and runs
// consumers whose handlers share one signature and whose every message's
// fate is decided explicitly — ack on success, NakWithDelay with exponential
// backoff on a transient error, TermWithReason plus a dead letter on a
// permanent one.
//
// sdk-go's nats_jetstream protocol binding is not used: it cannot Term or
// NakWithDelay (see shared/DESIGN.md), so events are encoded with sdk-go's
// event.Event and moved with nats.go/jetstream directly.
package stream
