package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// busClient is a raw NATS client of one user that collects the server's
// asynchronous permission errors, so a test can tell "refused" from
// "lost".
type busClient struct {
	user string
	nc   *nats.Conn
	js   jetstream.JetStream
	errs chan error
}

func dialBus(t *testing.T, s *localstack.Stack, user string) *busClient {
	t.Helper()
	c := &busClient{user: user, errs: make(chan error, 64)}
	nc, err := nats.Connect(s.NATS.URL, nats.UserInfo(user, s.NATS.Password(user)), nats.CustomInboxPrefix(events.InboxPrefix(user)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case c.errs <- err:
			default:
			}
		}))
	must(t, err)
	t.Cleanup(nc.Close)
	c.nc = nc
	c.js, err = jetstream.New(nc)
	must(t, err)
	return c
}

// refused runs an attack and requires the server to answer it with a
// permissions violation. The attack's own error is not enough: a request
// the server refuses only times out on the client.
func (c *busClient) refused(t *testing.T, attack string, op func(ctx context.Context) error) {
	t.Helper()
	for len(c.errs) > 0 {
		t.Logf("%s: drained an earlier error: %v", attack, <-c.errs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = op(ctx)
	_ = c.nc.Flush()
	select {
	case err := <-c.errs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("%s as %s: server said %v, want a permissions violation", attack, c.user, err)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("%s as %s: the server allowed it", attack, c.user)
	}
}

// TestBusPermissions plays an intruder holding one NATS credential at a
// time against Lockdown's generated authorization (deploy/nats/auth.conf)
// after the install step: every attack the credential used to allow is
// refused by nats-server, and the streams and consumers are unchanged
// afterwards. What each user is meant to do still works.
func TestBusPermissions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.Options{NATS: true, NATSAuth: true})
	admin := dialBus(t, s, events.UserAdmin)
	siem, operator := dialBus(t, s, events.UserSIEM), dialBus(t, s, events.UserOperator)
	replayer := dialBus(t, s, events.UserReplayer)
	containment, rotator, notifier := dialBus(t, s, events.ServiceContainment), dialBus(t, s, events.ServiceRotator), dialBus(t, s, events.ServiceNotifier)

	// A breach waiting for containment, as during an incident.
	breach, err := stream.NewPublisher(siem.js, events.SourceOf(events.UserSIEM), nil).Publish(ctx, events.BreachDetected,
		events.BreachDetectedData{Summary: "red team", Severity: events.SeverityCritical})
	must(t, err)

	t.Run("a service cannot read another client's deliveries or replies", func(t *testing.T) {
		notifier.refused(t, "subscribe to every inbox", func(context.Context) error {
			_, err := notifier.nc.SubscribeSync("_INBOX.>")
			return err
		})
		notifier.refused(t, "subscribe to the rotator's inbox", func(context.Context) error {
			_, err := notifier.nc.SubscribeSync(events.InboxPrefix(events.ServiceRotator) + ".>")
			return err
		})
		notifier.refused(t, "subscribe to every event", func(context.Context) error {
			_, err := notifier.nc.SubscribeSync(events.SubjectPrefix + ">")
			return err
		})
	})

	t.Run("a service cannot create a consumer to read a stream", func(t *testing.T) {
		notifier.refused(t, "create a durable on the events stream", func(ctx context.Context) error {
			_, err := notifier.js.CreateOrUpdateConsumer(ctx, events.StreamEvents, jetstream.ConsumerConfig{Durable: "spy", AckPolicy: jetstream.AckNonePolicy})
			return err
		})
		notifier.refused(t, "create an ordered consumer on the job queue", func(ctx context.Context) error {
			_, err := notifier.js.OrderedConsumer(ctx, events.StreamJobs, jetstream.OrderedConsumerConfig{})
			return err
		})
		if _, err := admin.js.Consumer(ctx, events.StreamEvents, "spy"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Fatalf("the spy consumer exists: %v", err)
		}
	})

	t.Run("a service cannot edit a stream or another service's durable", func(t *testing.T) {
		cfg := stream.StreamConfig(events.Streams()[0])
		cfg.Subjects = []string{events.VaultSealed.Subject()} // drop breach.detected
		rotator.refused(t, "change the events stream's subjects", func(ctx context.Context) error {
			_, err := rotator.js.UpdateStream(ctx, cfg)
			return err
		})
		rotator.refused(t, "redefine containment's breach consumer", func(ctx context.Context) error {
			_, err := rotator.js.CreateOrUpdateConsumer(ctx, events.StreamEvents, jetstream.ConsumerConfig{Durable: events.ConsumerContainmentBreach,
				AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: events.IncidentStuck.Subject()})
			return err
		})
		rotator.refused(t, "delete containment's breach consumer", func(ctx context.Context) error {
			return rotator.js.DeleteConsumer(ctx, events.StreamEvents, events.ConsumerContainmentBreach)
		})
		st, err := admin.js.Stream(ctx, events.StreamEvents)
		must(t, err)
		if got := st.CachedInfo().Config.Subjects; !strings.Contains(strings.Join(got, " "), events.BreachDetected.Subject()) {
			t.Fatalf("events stream subjects now %v", got)
		}
		cons, err := admin.js.Consumer(ctx, events.StreamEvents, events.ConsumerContainmentBreach)
		must(t, err)
		if f := cons.CachedInfo().Config.FilterSubject; f != events.BreachDetected.Subject() {
			t.Fatalf("containment's breach consumer now filters %q", f)
		}
	})

	t.Run("a service cannot publish another's event, and the SIEM nothing but a breach", func(t *testing.T) {
		for _, c := range []*busClient{notifier, rotator, siem} {
			c.refused(t, "forge vault.sealed", func(context.Context) error {
				return c.nc.Publish(events.VaultSealed.Subject(), []byte(`{}`))
			})
		}
		siem.refused(t, "read a stream", func(ctx context.Context) error {
			_, err := siem.js.OrderedConsumer(ctx, events.StreamEvents, jetstream.OrderedConsumerConfig{})
			return err
		})
		assertNone(t, ctx, admin, events.VaultSealed)
	})

	t.Run("the operator cannot take, ack, purge or forge", func(t *testing.T) {
		operator.refused(t, "pull containment's breach deliveries", func(ctx context.Context) error {
			cons, err := operator.js.Consumer(ctx, events.StreamEvents, events.ConsumerContainmentBreach)
			if err != nil {
				return err
			}
			_, err = cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
			return err
		})
		operator.refused(t, "ack a breach for containment", func(context.Context) error {
			return operator.nc.Publish(fmt.Sprintf("$JS.ACK.%s.%s.1.1.1.%d.0", events.StreamEvents, events.ConsumerContainmentBreach, time.Now().UnixNano()), []byte("+ACK"))
		})
		operator.refused(t, "purge the events stream", func(ctx context.Context) error {
			st, err := operator.js.Stream(ctx, events.StreamEvents)
			if err != nil {
				return err
			}
			return st.Purge(ctx)
		})
		operator.refused(t, "delete the dead-letter stream", func(ctx context.Context) error {
			return operator.js.DeleteStream(ctx, events.StreamDeadLetters)
		})
		for _, name := range []events.Name{events.RotationCompleted, events.NotificationsCompleted, events.BreachDetected} {
			operator.refused(t, "forge "+string(name), func(context.Context) error {
				return operator.nc.Publish(name.Subject(), []byte(`{}`))
			})
		}
		assertNone(t, ctx, admin, events.RotationCompleted)
		assertNone(t, ctx, admin, events.NotificationsCompleted)
	})

	t.Run("no reader creates a consumer in any form: no legacy create of a durable, no push delivery into a bucket", func(t *testing.T) {
		// The legacy form names the consumer in the body only: before,
		// "$JS.API.CONSUMER.CREATE.<stream>" was allowed to readers and
		// redefined containment's durable (its filter pointed at a dead
		// subject, no breach would ever be sealed).
		legacy := fmt.Sprintf(`{"stream_name":%q,"config":{"durable_name":%q,"filter_subject":"lockdown.nothing","ack_policy":"explicit","deliver_policy":"all"}}`,
			events.StreamEvents, events.ConsumerContainmentBreach)
		// A push consumer delivers wherever its creator says: into the
		// incidents bucket's subject, a forged read-model document.
		push := fmt.Sprintf(`{"stream_name":%q,"config":{"name":"spy","deliver_subject":"$KV.%s.0b6e2f3a-1111-4222-8333-944445555666","ack_policy":"none","deliver_policy":"all"}}`,
			events.StreamEvents, events.BucketIncidents)
		for _, c := range []*busClient{operator, replayer} {
			c.refused(t, "redefine containment's durable through the legacy create", func(ctx context.Context) error {
				_, err := c.nc.RequestWithContext(ctx, "$JS.API.CONSUMER.CREATE."+events.StreamEvents, []byte(legacy))
				return err
			})
			c.refused(t, "create a push consumer delivering into the incidents bucket", func(ctx context.Context) error {
				_, err := c.nc.RequestWithContext(ctx, "$JS.API.CONSUMER.CREATE."+events.StreamEvents+".spy", []byte(push))
				return err
			})
			c.refused(t, "create an ordered consumer on the events stream", func(ctx context.Context) error {
				_, err := c.js.OrderedConsumer(ctx, events.StreamEvents, jetstream.OrderedConsumerConfig{})
				return err
			})
		}
		cons, err := admin.js.Consumer(ctx, events.StreamEvents, events.ConsumerContainmentBreach)
		must(t, err)
		if f := cons.CachedInfo().Config.FilterSubjects; len(f) != 1 || f[0] != events.BreachDetected.Subject() {
			if cf := cons.CachedInfo().Config.FilterSubject; cf != events.BreachDetected.Subject() {
				t.Fatalf("containment's durable was redefined: filter %v %q", f, cf)
			}
		}
		if _, err := admin.js.Consumer(ctx, events.StreamEvents, "spy"); err == nil {
			t.Fatal("a reader's push consumer exists")
		}
	})

	t.Run("the replayer cannot raise a breach or take deliveries", func(t *testing.T) {
		replayer.refused(t, "publish a breach", func(context.Context) error {
			return replayer.nc.Publish(events.BreachDetected.Subject(), []byte(`{}`))
		})
		replayer.refused(t, "pull the rotation jobs", func(ctx context.Context) error {
			_, err := replayer.js.OrderedConsumer(ctx, events.StreamJobs, jetstream.OrderedConsumerConfig{})
			return err
		})
	})

	t.Run("each user still does its own work", func(t *testing.T) {
		// The breach nobody else could take or ack reaches containment.
		cons, err := containment.js.Consumer(ctx, events.StreamEvents, events.ConsumerContainmentBreach)
		must(t, err)
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		must(t, err)
		var got []string
		for m := range batch.Messages() {
			ev, _, err := events.Decode(m.Headers(), m.Data())
			must(t, err)
			got = append(got, ev.ID())
			must(t, m.Ack())
		}
		if len(got) != 1 || got[0] != breach.ID() {
			t.Fatalf("containment received %v (%v), want the breach %s", got, batch.Error(), breach.ID())
		}
		// The operator reads the stream and asks for a resume.
		if _, _, err := stream.Await(ctx, operator.js, events.BreachDetected, func(event.Event, events.BreachDetectedData) bool { return true }); err != nil {
			t.Fatalf("the operator cannot read the events stream: %v", err)
		}
		_, err = stream.NewPublisher(operator.js, events.SourceOf(events.ServiceCLI), nil).Publish(ctx, events.IncidentResumeRequested,
			events.IncidentControlData{IncidentID: "inc-redteam", RequestedBy: "red team", Reason: "red team"})
		must(t, err)
	})
}

// assertNone fails when the events stream holds any event of name.
func assertNone(t *testing.T, ctx context.Context, admin *busClient, name events.Name) {
	t.Helper()
	st, err := admin.js.Stream(ctx, events.StreamEvents)
	must(t, err)
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(name.Subject()))
	must(t, err)
	if n := info.State.Subjects[name.Subject()]; n != 0 {
		t.Fatalf("%d forged %s in the stream", n, name)
	}
}
