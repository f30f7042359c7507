package stream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lockdown/lockdown/pkg/events"
)

// EnsureTopology creates or updates every stream and durable consumer the
// contract declares. It is idempotent, so every service calls it at start
// and the first one to run creates what is missing. All failures are
// reported together.
//
// Streams get the declared replicas, bounded by the servers of the
// cluster the connection sees (one on a lone server, three on a cluster of
// three or more); an existing stream is never scaled down, so a service
// starting while a node is away does not shrink the streams.
func EnsureTopology(ctx context.Context, js jetstream.JetStream) error {
	var errs []error
	nodes := clusterSize(js.Conn())
	for _, s := range events.Streams() {
		cfg := StreamConfig(s)
		cfg.Replicas = min(cfg.Replicas, nodes)
		if err := retryJS(ctx, func(ctx context.Context) error { return ensureStream(ctx, js, cfg) }); err != nil {
			errs = append(errs, fmt.Errorf("stream %s: %w", s.Name, err))
		}
	}
	for _, c := range events.Consumers() {
		if err := retryJS(ctx, func(ctx context.Context) error { return ensureConsumer(ctx, js, c.Stream, ConsumerConfig(c)) }); err != nil {
			errs = append(errs, fmt.Errorf("consumer %s: %w", c.Durable, err))
		}
	}
	return errors.Join(errs...)
}

// apiAttempt bounds one JetStream API call of EnsureTopology.
const apiAttempt = 3 * time.Second

// retryJS runs op with a short deadline per attempt until it succeeds,
// fails for a reason other than an unanswered request, or ctx ends. On a
// freshly started cluster a JetStream API request was seen to go
// unanswered now and then (the server did the work, the reply never came):
// the operations are idempotent, so asking again is safe.
func retryJS(ctx context.Context, op func(context.Context) error) error {
	pause := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, apiAttempt)
		err := op(actx)
		cancel()
		unanswered := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
			errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, jetstream.ErrJetStreamNotEnabled)
		if err == nil || !unanswered || ctx.Err() != nil {
			return err
		}
		// No responders and "not enabled" come back at once while a
		// cluster forms: wait a little instead of flooding it.
		select {
		case <-ctx.Done():
			return err
		case <-time.After(pause):
		}
		pause = min(2*pause, 2*time.Second)
	}
}

// errCodeInsufficientResources is nats-server's JSInsufficientResourcesErr
// (not among nats.go's named codes): more replicas than peers, say.
const errCodeInsufficientResources jetstream.ErrorCode = 10023

// ensureStream creates the stream, or updates it only when its settings
// differ. Services start together: on a cluster, concurrent updates of a
// stream whose replicas are still forming were seen to hang until the
// deadline, so an unchanged stream is left alone and a creation lost to
// another service counts as done.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	st, err := js.Stream(ctx, cfg.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		for {
			_, err = js.CreateStream(ctx, cfg)
			// The server count is a guess from the URLs the client knows
			// (one server can be known by two names): when the cluster has
			// fewer peers than asked for, ask for fewer.
			var apiErr *jetstream.APIError
			if cfg.Replicas > 1 && errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeInsufficientResources {
				cfg.Replicas--
				continue
			}
			break
		}
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil
		}
		return err
	case err != nil:
		return err
	}
	have := st.CachedInfo().Config
	cfg.Replicas = max(cfg.Replicas, have.Replicas) // never scale down
	if slices.Equal(have.Subjects, cfg.Subjects) && have.Retention == cfg.Retention && have.Duplicates == cfg.Duplicates &&
		have.MaxAge == cfg.MaxAge && have.Storage == cfg.Storage && have.Replicas == cfg.Replicas && have.Discard == cfg.Discard {
		return nil
	}
	_, err = js.UpdateStream(ctx, cfg)
	return err
}

// ensureConsumer creates the durable consumer, or updates it only when its
// settings differ (see ensureStream).
func ensureConsumer(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig) error {
	c, err := js.Consumer(ctx, stream, cfg.Durable)
	if err == nil {
		have := c.CachedInfo().Config
		if have.AckPolicy == cfg.AckPolicy && have.AckWait == cfg.AckWait && have.MaxDeliver == cfg.MaxDeliver &&
			have.MaxAckPending == cfg.MaxAckPending && have.DeliverPolicy == cfg.DeliverPolicy &&
			have.FilterSubject == cfg.FilterSubject && slices.Equal(have.FilterSubjects, cfg.FilterSubjects) {
			return nil
		}
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return err
	}
	_, err = js.CreateOrUpdateConsumer(ctx, stream, cfg)
	return err
}

// clusterSize is the number of servers of the connection's cluster: the
// ones the client knows, configured or announced by the cluster (INFO
// connect_urls); 1 outside a cluster.
func clusterSize(nc *nats.Conn) int {
	if nc == nil || nc.ConnectedClusterName() == "" {
		return 1
	}
	return max(len(nc.Servers()), 1)
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
