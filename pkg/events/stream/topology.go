package stream

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lockdown/lockdown/pkg/events"
)

// EnsureTopology creates or updates every stream and durable consumer the
// contract declares. It is idempotent, so every service calls it at start
// and the first one to run creates what is missing. All failures are
// reported together.
func EnsureTopology(ctx context.Context, js jetstream.JetStream) error {
	var errs []error
	for _, s := range events.Streams() {
		if _, err := js.CreateOrUpdateStream(ctx, StreamConfig(s)); err != nil {
			errs = append(errs, fmt.Errorf("stream %s: %w", s.Name, err))
		}
	}
	for _, c := range events.Consumers() {
		if _, err := js.CreateOrUpdateConsumer(ctx, c.Stream, ConsumerConfig(c)); err != nil {
			errs = append(errs, fmt.Errorf("consumer %s: %w", c.Durable, err))
		}
	}
	return errors.Join(errs...)
}

// StreamConfig turns a declared stream into JetStream's configuration.
func StreamConfig(s events.StreamSpec) jetstream.StreamConfig {
	cfg := jetstream.StreamConfig{
		Name:       s.Name,
		Subjects:   s.Subjects,
		Retention:  jetstream.LimitsPolicy,
		Duplicates: s.DuplicateWindow,
		MaxAge:     s.MaxAge,
		Storage:    jetstream.MemoryStorage,
		Replicas:   max(s.Replicas, 1),
		Discard:    jetstream.DiscardOld,
	}
	if s.FileStorage {
		cfg.Storage = jetstream.FileStorage
	}
	if s.Retention == events.RetentionWorkQueue {
		cfg.Retention = jetstream.WorkQueuePolicy
		// A work queue must refuse new jobs rather than drop planned ones.
		cfg.Discard = jetstream.DiscardNew
	}
	return cfg
}

// ConsumerConfig turns a declared consumer into JetStream's configuration.
func ConsumerConfig(c events.ConsumerSpec) jetstream.ConsumerConfig {
	cfg := jetstream.ConsumerConfig{
		Durable:       c.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    c.MaxDeliver,
		MaxAckPending: c.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	subjects := c.FilterSubjects()
	if len(subjects) == 1 {
		cfg.FilterSubject = subjects[0]
	} else {
		cfg.FilterSubjects = subjects
	}
	return cfg
}
