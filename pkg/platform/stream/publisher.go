package stream

import (
	"context"
	"errors"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/lockdown/lockdown/pkg/events"
)

// instrumentationName names the tracer of this package.
const instrumentationName = "github.com/lockdown/lockdown/pkg/platform/stream"

// Publisher publishes Lockdown events on JetStream.
type Publisher struct {
	js     jetstream.JetStream
	tracer trace.Tracer
	source string
	// unchecked skips reading back the message a duplicate stands for.
	unchecked bool
}

// Unchecked returns a publisher that reports a duplicate as JetStream
// states it, without reading the stored message back (CheckDuplicate).
// It is for the SIEM, which may publish breaches and read nothing: a
// breach republished under its own id is reported as a duplicate, and a
// breach id someone else took first still opens the incident with the
// breach stored under it.
func (p *Publisher) Unchecked() *Publisher {
	c := *p
	c.unchecked = true
	return &c
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

// MsgID is the de-duplication id (Nats-Msg-Id) of an event on a subject:
// the subject and the event id together. JetStream de-duplicates within a
// stream, and every incident event shares one; with the subject in the id,
// an id chosen by a caller on one subject (a breach's, which the SIEM or
// the HTTP intake names) can never make JetStream drop an event of another
// subject as its duplicate.
func MsgID(subject, eventID string) string { return subject + "#" + eventID }

// ErrDuplicateMismatch is returned by CheckDuplicate when JetStream
// reported a publish as a duplicate of a stored message that is not the
// same event (another subject or type under the same de-duplication id):
// someone took the id first. The event was not stored.
var ErrDuplicateMismatch = errors.New("publish dropped as a duplicate of a different message: forged message id")

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
	msg.Header.Set(jetstream.MsgIDHeader, MsgID(subject, ev.ID()))
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
	ack, err := p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(MsgID(subject, ev.ID())))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "publish failed")
		return nil, fmt.Errorf("publish %s %s: %w", subject, ev.ID(), err)
	}
	if ack.Duplicate && !p.unchecked {
		if ack, _, err = Reissue(ctx, p.js, ack, msg); err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "publish failed")
			return nil, fmt.Errorf("publish %s %s: %w", subject, ev.ID(), err)
		}
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

// CheckDuplicate verifies that the message JetStream kept under a
// publish's id (a duplicate) is the same event: the same subject and the
// same CloudEvents type and id. A republish after a crash passes; a
// message whose id was taken by someone else returns ErrDuplicateMismatch.
func CheckDuplicate(ctx context.Context, js jetstream.JetStream, ack *jetstream.PubAck, msg *nats.Msg) error {
	st, err := js.Stream(ctx, ack.Stream)
	if err != nil {
		return fmt.Errorf("check duplicate: %w", err)
	}
	stored, err := st.GetMsg(ctx, ack.Sequence)
	if err != nil {
		return fmt.Errorf("check duplicate: %w", err)
	}
	if stored.Subject != msg.Subject {
		return fmt.Errorf("%w: %s holds message %d on %s", ErrDuplicateMismatch, msg.Header.Get(jetstream.MsgIDHeader), ack.Sequence, stored.Subject)
	}
	a, _, errA := events.Decode(stored.Header, stored.Data)
	b, _, errB := events.Decode(msg.Header, msg.Data)
	if errA != nil || errB != nil || a.Type() != b.Type() || a.ID() != b.ID() {
		return fmt.Errorf("%w: %s holds another event (message %d)", ErrDuplicateMismatch, msg.Header.Get(jetstream.MsgIDHeader), ack.Sequence)
	}
	return nil
}

// Reissue deals with a publish JetStream reported as a duplicate: when the
// stored message is the same event (a republish after a crash) it returns
// ack as it is; when someone else took the id (ErrDuplicateMismatch: a
// forged Nats-Msg-Id), the event is published again under a fresh
// de-duplication id — consumers know events by their CloudEvents id, which
// is unchanged — so a forged id costs an alarm, never the event. reissued
// tells the caller to raise the alarm (it is also the span's error).
func Reissue(ctx context.Context, js jetstream.JetStream, ack *jetstream.PubAck, msg *nats.Msg) (_ *jetstream.PubAck, reissued bool, _ error) {
	err := CheckDuplicate(ctx, js, ack, msg)
	if !errors.Is(err, ErrDuplicateMismatch) {
		return ack, false, err
	}
	trace.SpanFromContext(ctx).RecordError(err)
	fresh := nats.NewMsg(msg.Subject)
	for k, v := range msg.Header {
		fresh.Header[k] = v
	}
	fresh.Data = msg.Data
	fresh.Header.Set(jetstream.MsgIDHeader, msg.Header.Get(jetstream.MsgIDHeader)+"#reissued-"+uuid.NewString())
	again, err := js.PublishMsg(ctx, fresh)
	if err != nil {
		return nil, true, err
	}
	return again, true, nil
}
