package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lockdown/lockdown/pkg/events"
)

// Handler processes one delivered event. Returning nil acks the message; an
// error marked with Permanent (or one wrapping events.ErrInvalidData) ends it
// on the dead-letter subject; any other error is retried later with
// exponential backoff.
type Handler func(ctx context.Context, d *Delivery) error

// Middleware wraps a handler with behaviour shared by every consumer.
type Middleware func(Handler) Handler

// Chain applies middlewares so the first listed is the outermost.
func Chain(h Handler, mw ...Middleware) Handler {
	for i := len(mw) - 1; i >= 0; i-- {
		h = mw[i](h)
	}
	return h
}

// Delivery is one event handed to a handler.
type Delivery struct {
	// Event is the decoded CloudEvent.
	Event event.Event
	// Spec is the catalog entry of the event's type.
	Spec events.Spec
	// Subject is the NATS subject it arrived on.
	Subject string
	// Attempt counts deliveries of this message, from 1.
	Attempt uint64
	// Consumer is the durable consumer that delivered it.
	Consumer string

	msg jetstream.Msg
}

// InProgress tells JetStream the handler is still working, resetting the
// ack deadline: long jobs call it so they are not redelivered meanwhile.
func (d *Delivery) InProgress() error {
	if d.msg == nil {
		return nil
	}
	return d.msg.InProgress()
}

// ErrPermanent marks errors that retrying cannot fix: the message is
// terminated and dead-lettered.
var ErrPermanent = errors.New("permanent failure")

type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() []error {
	return []error{e.err, ErrPermanent}
}

// Permanent marks err as permanent. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err: err}
}

// IsPermanent reports whether retrying err is pointless: marked Permanent,
// or bad data that no retry will change.
func IsPermanent(err error) bool {
	return errors.Is(err, ErrPermanent) ||
		errors.Is(err, events.ErrInvalidData) ||
		errors.Is(err, events.ErrWrongType) ||
		errors.Is(err, events.ErrMalformed) ||
		errors.Is(err, events.ErrUnknownType)
}

// Recoverer turns a handler's panic into a permanent error, so one poison
// message cannot crash a consumer. The stack goes to the log for the
// developer; the dead letter carries the panic value only.
func Recoverer(logger *slog.Logger) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, d *Delivery) (err error) {
			defer func() {
				if r := recover(); r != nil {
					logger.ErrorContext(ctx, "handler panicked",
						slog.String("event_id", d.Event.ID()), slog.String("event_type", d.Event.Type()),
						slog.Any("panic", r), slog.String("stack", string(debug.Stack())))
					err = Permanent(fmt.Errorf("handler panicked: %v", r))
				}
			}()
			return next(ctx, d)
		}
	}
}

// Decoded is a convenience for typed handlers: it decodes the delivery's data
// into T (validated) before calling fn. Bad data is a permanent error.
func Decoded[T any](fn func(ctx context.Context, d *Delivery, data T) error) Handler {
	return func(ctx context.Context, d *Delivery) error {
		data, err := events.DataAs[T](d.Event)
		if err != nil {
			return Permanent(err)
		}
		return fn(ctx, d, data)
	}
}

// Route dispatches by event name, for consumers that receive several
// events. An event with no route is a permanent error.
func Route(routes map[events.Name]Handler) Handler {
	return func(ctx context.Context, d *Delivery) error {
		h, ok := routes[d.Spec.Name]
		if !ok {
			return Permanent(fmt.Errorf("%w: no handler for %s", events.ErrUnknownType, d.Spec.Name))
		}
		return h(ctx, d)
	}
}
