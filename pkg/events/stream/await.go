package stream

import (
	"context"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lockdown/lockdown/pkg/events"
)

// Await reads the stored events of one name, oldest first, and returns the
// first whose data matches, waiting for new ones until ctx ends. It uses an
// ephemeral ordered consumer, so it needs only read access: the CLI
// follows an incident with it.
func Await[T any](ctx context.Context, js jetstream.JetStream, name events.Name, match func(event.Event, T) bool) (event.Event, T, error) {
	var zero T
	spec := events.SpecOf(name)
	cons, err := js.OrderedConsumer(ctx, spec.Stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{spec.FilterSubject()}})
	if err != nil {
		return event.Event{}, zero, fmt.Errorf("await %s: %w", name, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return event.Event{}, zero, fmt.Errorf("await %s: %w", name, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return event.Event{}, zero, fmt.Errorf("await %s: %w", name, ctx.Err())
			}
			return event.Event{}, zero, fmt.Errorf("await %s: %w", name, err)
		}
		ev, _, err := events.Decode(m.Headers(), m.Data())
		if err != nil {
			continue // not ours to judge: the consumers dead-letter it
		}
		data, err := events.DataAs[T](ev)
		if err == nil && match(ev, data) {
			return ev, data, nil
		}
	}
}
