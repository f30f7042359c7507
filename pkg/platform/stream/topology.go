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
	"github.com/lockdown/lockdown/pkg/platform/retry"
)

// EnsureTopology creates or updates every stream and durable consumer the
// contract declares. It is the install step (`lockdown install nats`, run
// with the admin identity; the local stack runs it too): services may not
// create JetStream objects and only check them (VerifyTopology). It is
// idempotent; all failures are reported together.
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
		if err := retryJS(ctx, js, func(ctx context.Context) error { return ensureStream(ctx, js, cfg) }); err != nil {
			errs = append(errs, fmt.Errorf("stream %s: %w", s.Name, err))
		}
	}
	for _, c := range events.Consumers() {
		if err := retryJS(ctx, js, func(ctx context.Context) error { return ensureConsumer(ctx, js, c.Stream, ConsumerConfig(c)) }); err != nil {
			errs = append(errs, fmt.Errorf("consumer %s: %w", c.Durable, err))
		}
	}
	for _, b := range events.Buckets() {
		if err := retryJS(ctx, js, func(ctx context.Context) error { return ensureBucket(ctx, js, b, nodes) }); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", b.Kind, b.Name, err))
		}
	}
	return errors.Join(errs...)
}

// ensureBucket creates a key-value bucket or object store, or updates it
// when its settings differ (replicas never scaled down, as for streams).
func ensureBucket(ctx context.Context, js jetstream.JetStream, b events.BucketSpec, nodes int) error {
	replicas := min(max(b.Replicas, 1), nodes)
	if st, err := js.Stream(ctx, b.BucketStream()); err == nil {
		have := st.CachedInfo().Config
		if have.MaxAge == b.MaxAge && have.Storage == jetstream.FileStorage && have.Replicas >= replicas &&
			(b.Kind == events.BucketObject || have.MaxMsgsPerSubject == int64(b.History)) {
			return nil
		}
		replicas = max(replicas, have.Replicas)
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	for attempt := 1; ; attempt++ {
		var err error
		if b.Kind == events.BucketObject {
			_, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: b.Name, Description: b.Description, TTL: b.MaxAge,
				Storage: jetstream.FileStorage, Replicas: replicas})
		} else {
			_, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: b.Name, Description: b.Description, History: uint8(b.History),
				TTL: b.MaxAge, Storage: jetstream.FileStorage, Replicas: replicas})
		}
		// On a cluster still forming, placement can fail while a peer is
		// not yet online (TestNATSCluster, in CI): wait for it a little,
		// then ask for fewer replicas, as for streams.
		var apiErr *jetstream.APIError
		if err == nil || !errors.As(err, &apiErr) || (apiErr.ErrorCode != errCodeNoPeers && apiErr.ErrorCode != errCodeInsufficientResources) {
			return err
		}
		if attempt%10 == 0 && replicas > 1 {
			replicas--
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// errCodeNoPeers is nats-server's JSClusterNoPeersErr: "no suitable peers
// for placement" (a peer offline while the cluster forms).
const errCodeNoPeers jetstream.ErrorCode = 10005

// apiAttempt bounds one JetStream API call of EnsureTopology.
const apiAttempt = 3 * time.Second

// retryJS runs op with a short deadline per attempt until it succeeds,
// fails for a reason other than an unanswered request, or ctx ends. On a
// freshly started cluster a JetStream API request was seen to go
// unanswered now and then (the server did the work, the reply never came):
// the operations are idempotent, so asking again is safe. A refusal for
// permissions is returned at once.
func retryJS(ctx context.Context, js jetstream.JetStream, op func(context.Context) error) error {
	// No responders and "not enabled" come back at once while a cluster
	// forms: the waits keep it from being flooded.
	err := retry.Do(ctx, retry.Policy{Initial: 100 * time.Millisecond, Max: 2 * time.Second}, func(ctx context.Context) error {
		actx, cancel := context.WithTimeout(ctx, apiAttempt)
		err := op(actx)
		cancel()
		unanswered := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
			errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, jetstream.ErrJetStreamNotEnabled)
		if err == nil || !unanswered {
			return retry.Permanent(err)
		}
		// A request the server refused for permissions goes unanswered
		// too; asking again will not help (the wrong identity).
		if nc := js.Conn(); nc != nil && errors.Is(nc.LastError(), nats.ErrPermissionViolation) {
			return retry.Permanent(fmt.Errorf("%w: %w", err, nc.LastError()))
		}
		return err
	}, nil)
	return err
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
			// A peer not yet online while the cluster forms (CI, a loaded
			// machine: TestThreeNodeJetStream): wait for it, with the
			// replicas asked for — a stream is never quietly made less
			// durable because a peer was late.
			if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeNoPeers {
				select {
				case <-ctx.Done():
					return err
				case <-time.After(200 * time.Millisecond):
				}
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
	if streamMatches(have, cfg) && have.Replicas == cfg.Replicas {
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
		if consumerMatches(c.CachedInfo().Config, cfg) {
			return nil
		}
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return err
	}
	_, err = js.CreateOrUpdateConsumer(ctx, stream, cfg)
	return err
}

// streamMatches reports whether a stream's settings are the declared ones
// (replicas aside: they depend on the cluster).
func streamMatches(have, want jetstream.StreamConfig) bool {
	return slices.Equal(have.Subjects, want.Subjects) && have.Retention == want.Retention && have.Duplicates == want.Duplicates &&
		have.MaxAge == want.MaxAge && have.Storage == want.Storage && have.Discard == want.Discard
}

// consumerMatches reports whether a durable's settings are the declared ones.
func consumerMatches(have, want jetstream.ConsumerConfig) bool {
	return have.AckPolicy == want.AckPolicy && have.AckWait == want.AckWait && have.MaxDeliver == want.MaxDeliver &&
		have.MaxAckPending == want.MaxAckPending && have.DeliverPolicy == want.DeliverPolicy &&
		have.FilterSubject == want.FilterSubject && slices.Equal(have.FilterSubjects, want.FilterSubjects)
}

// ErrTopologyMissing is returned by VerifyTopology when a stream or a
// durable consumer the service needs is missing or differs from the
// contract. Services cannot create them (only the admin identity can):
// run `lockdown install nats`.
var ErrTopologyMissing = errors.New("JetStream streams and consumers are not installed as the contract declares (run `lockdown install nats` with the admin identity)")

// verifyPoll is how often VerifyTopology looks again while it waits for
// the install step.
const verifyPoll = time.Second

// VerifyTopology waits until every declared stream and the service's own
// durable consumers exist with the declared settings, so a service started
// beside the install step (a Kubernetes Job, a compose one-shot) waits for
// it instead of failing. When ctx ends first it returns ErrTopologyMissing
// with every problem it saw.
func VerifyTopology(ctx context.Context, js jetstream.JetStream, service string) error {
	for {
		problems := topologyProblems(ctx, js, service)
		if len(problems) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrTopologyMissing, errors.Join(problems...))
		case <-time.After(verifyPoll):
		}
	}
}

func topologyProblems(ctx context.Context, js jetstream.JetStream, service string) []error {
	var problems []error
	for _, s := range events.Streams() {
		want := StreamConfig(s)
		err := retryJS(ctx, js, func(ctx context.Context) error {
			st, err := js.Stream(ctx, s.Name)
			if err == nil && !streamMatches(st.CachedInfo().Config, want) {
				err = errors.New("settings differ from the contract")
			}
			return err
		})
		if err != nil {
			problems = append(problems, fmt.Errorf("stream %s: %w", s.Name, err))
		}
	}
	for _, c := range events.Consumers() {
		if c.Service != service {
			continue
		}
		want := ConsumerConfig(c)
		err := retryJS(ctx, js, func(ctx context.Context) error {
			cons, err := js.Consumer(ctx, c.Stream, c.Durable)
			if err == nil && !consumerMatches(cons.CachedInfo().Config, want) {
				err = errors.New("settings differ from the contract")
			}
			return err
		})
		if err != nil {
			problems = append(problems, fmt.Errorf("consumer %s: %w", c.Durable, err))
		}
	}
	for _, b := range events.Buckets() {
		if b.Owner != service {
			continue
		}
		err := retryJS(ctx, js, func(ctx context.Context) error {
			_, err := js.Stream(ctx, b.BucketStream())
			return err
		})
		if err != nil {
			problems = append(problems, fmt.Errorf("%s %s: %w", b.Kind, b.Name, err))
		}
	}
	return problems
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
