package stream

import (
	"context"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/lockdown/lockdown/pkg/events"
)

// instrumentationName names the tracer of this package.
const instrumentationName = "github.com/lockdown/lockdown/pkg/events/stream"

// Publisher publishes Lockdown events on JetStream.
type Publisher struct {
	js     jetstream.JetStream
	tracer trace.Tracer
	source string
}

// NewPublisher returns a publisher whose events carry the given CloudEvents
// source (use events.SourceOf(service)). A nil tracer provider disables
// tracing.
func NewPublisher(js jetstream.JetStream, source string, tp trace.TracerProvider) *Publisher {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	return &Publisher{js: js, tracer: tp.Tracer(instrumentationName), source: source}
}

// Publish builds an event of the given name around data and publishes it.
// It returns the event as published (its id is the message id).
func (p *Publisher) Publish(ctx context.Context, name events.Name, data any) (event.Event, error) {
	ev, err := events.New(name, p.source, data)
	if err != nil {
		return event.Event{}, err
	}
	if _, err := p.PublishEvent(ctx, ev); err != nil {
		return event.Event{}, err
	}
	return ev, nil
}

// PublishWithID is Publish with a chosen event id. Services derive the id
// from what the event records (incident id and step), so a step retried
// after a crash publishes the same id and JetStream drops the duplicate.
func (p *Publisher) PublishWithID(ctx context.Context, name events.Name, id string, data any) error {
	ev, err := events.New(name, p.source, data)
	if err != nil {
		return err
	}
	ev.SetID(id)
	_, err = p.PublishEvent(ctx, ev)
	return err
}

// PublishEvent publishes a ready-made CloudEvent on its type's subject. The
// event must be of a catalog type. It returns JetStream's acknowledgement:
// once it returns without error the event is durably stored, and
// ack.Duplicate reports a publish JetStream de-duplicated by id.
func (p *Publisher) PublishEvent(ctx context.Context, ev event.Event) (*jetstream.PubAck, error) {
	spec, ok := events.Lookup(ev.Type())
	if !ok {
		return nil, fmt.Errorf("%w: %q", events.ErrUnknownType, ev.Type())
	}
	return p.publishOn(ctx, spec.Subject(), ev)
}

// Prepare builds the message that publishing an event of the given name,
// id and data would send — CloudEvent, trace context, Nats-Msg-Id — without
// sending it: the transactional outbox stores it with the state change
// that caused it and its relay publishes it later. The producer span
// starts and ends here, so the consumer's span is its child in the trace.
func (p *Publisher) Prepare(ctx context.Context, name events.Name, id string, data any) (*nats.Msg, error) {
	ev, err := events.New(name, p.source, data)
	if err != nil {
		return nil, err
	}
	ev.SetID(id)
	subject := name.Subject()
	ctx, span := p.tracer.Start(ctx, "send "+subject,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(messagingAttributes(subject, ev)...),
		trace.WithAttributes(attribute.String("messaging.operation.type", "create")))
	defer span.End()
	msg, err := message(ctx, subject, ev)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return nil, err
	}
	msg.Header.Set(jetstream.MsgIDHeader, ev.ID())
	return msg, nil
}

// message is the NATS message of an event: structured CloudEvent body,
// trace context in the headers.
func message(ctx context.Context, subject string, ev event.Event) (*nats.Msg, error) {
	msg := nats.NewMsg(subject)
	inject(ctx, msg.Header, &ev)
	body, err := events.Marshal(ev)
	if err != nil {
		return nil, err
	}
	msg.Header.Set("Content-Type", events.ContentTypeStructured)
	msg.Data = body
	return msg, nil
}

func (p *Publisher) publishOn(ctx context.Context, subject string, ev event.Event) (*jetstream.PubAck, error) {
	ctx, span := p.tracer.Start(ctx, "send "+subject,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(messagingAttributes(subject, ev)...),
		trace.WithAttributes(attribute.String("messaging.operation.type", "send")))
	defer span.End()

	msg, err := message(ctx, subject, ev)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return nil, err
	}
	ack, err := p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(ev.ID()))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "publish failed")
		return nil, fmt.Errorf("publish %s %s: %w", subject, ev.ID(), err)
	}
	span.SetAttributes(attribute.Bool("messaging.nats.duplicate", ack.Duplicate),
		attribute.Int64("messaging.nats.stream_sequence", int64(ack.Sequence)))
	return ack, nil
}

// messagingAttributes follow the OpenTelemetry messaging conventions plus
// the CloudEvents ones, so Jaeger shows which event a span moved.
func messagingAttributes(subject string, ev event.Event) []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.String("messaging.system", "nats"),
		attribute.String("messaging.destination.name", subject),
		attribute.String("messaging.message.id", ev.ID()),
		attribute.String("cloudevents.event_id", ev.ID()),
		attribute.String("cloudevents.event_type", ev.Type()),
		attribute.String("cloudevents.event_source", ev.Source()),
	}
}
