package stream_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/stream"
)

// startJetStream runs an embedded NATS server with JetStream on a random
// port and returns a JetStream context with the contract's topology.
func startJetStream(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	srv, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := stream.EnsureTopology(ctx, js); err != nil {
		t.Fatal(err)
	}
	// Idempotent: a second service starting does not fail.
	if err := stream.EnsureTopology(ctx, js); err != nil {
		t.Fatalf("second EnsureTopology: %v", err)
	}
	return nc, js
}

// testConsumer declares a consumer of breach events with short retries.
func testConsumer(t *testing.T, js jetstream.JetStream, durable string, maxDeliver int) events.ConsumerSpec {
	t.Helper()
	spec := events.ConsumerSpec{Durable: durable, Stream: events.StreamEvents, Service: "test",
		Events: []events.Name{events.BreachDetected}, AckWait: 5 * time.Second, MaxDeliver: maxDeliver,
		MaxAckPending: 16, RetryBase: 100 * time.Millisecond, RetryMax: time.Second}
	if _, err := js.CreateOrUpdateConsumer(context.Background(), spec.Stream, stream.ConsumerConfig(spec)); err != nil {
		t.Fatal(err)
	}
	return spec
}

// run starts a consumer and stops it when the test ends.
func run(t *testing.T, js jetstream.JetStream, spec events.ConsumerSpec, h stream.Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := stream.NewConsumer(js, spec, h, stream.ConsumerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consumer: %v", err)
		}
	})
}

// deadLetters subscribes to a consumer's dead-letter subject.
func deadLetters(t *testing.T, js jetstream.JetStream, durable string) <-chan events.DeadLetterData {
	t.Helper()
	out := make(chan events.DeadLetterData, 16)
	cons, err := js.OrderedConsumer(context.Background(), events.StreamDeadLetters, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.DeadLetterSubject(durable)}})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		ev, _, err := events.Decode(m.Headers(), m.Data())
		if err != nil {
			t.Errorf("dead letter is not a valid event: %v", err)
			return
		}
		d, err := events.DataAs[events.DeadLetterData](ev)
		if err != nil {
			t.Errorf("dead letter data: %v", err)
			return
		}
		out <- d
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return out
}

func within[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func breach(summary string) events.BreachDetectedData {
	return events.BreachDetectedData{Summary: summary, Severity: events.SeverityHigh}
}

func TestConsumer(t *testing.T) {
	ctx := context.Background()
	// Each case gets its own server, so one case's messages never reach
	// another's consumer.
	fresh := func(t *testing.T) (*nats.Conn, jetstream.JetStream, *stream.Publisher) {
		nc, js := startJetStream(t)
		return nc, js, stream.NewPublisher(js, "/test/siem", nil)
	}

	t.Run("a duplicate publish with the same id is delivered once", func(t *testing.T) {
		_, js, pub := fresh(t)
		spec := testConsumer(t, js, "dedupe", 3)
		got := make(chan string, 8)
		run(t, js, spec, func(_ context.Context, d *stream.Delivery) error { got <- d.Event.ID(); return nil })
		ev, err := events.New(events.BreachDetected, "/test/siem", breach("dup"))
		if err != nil {
			t.Fatal(err)
		}
		first, err := pub.PublishEvent(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		second, err := pub.PublishEvent(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		if first.Duplicate || !second.Duplicate {
			t.Fatalf("JetStream should flag only the second publish as duplicate: %v %v", first.Duplicate, second.Duplicate)
		}
		// A marker published after the duplicate proves the consumer has
		// moved past it, without sleeping.
		marker, _ := pub.Publish(ctx, events.BreachDetected, breach("marker"))
		ids := []string{within(t, got, 5*time.Second, "first delivery"), within(t, got, 5*time.Second, "marker")}
		if ids[0] != ev.ID() || ids[1] != marker.ID() {
			t.Fatalf("deliveries %v, want [%s %s]", ids, ev.ID(), marker.ID())
		}
	})

	t.Run("a malformed payload and an unknown type are dead-lettered and the consumer goes on", func(t *testing.T) {
		_, js, pub := fresh(t)
		spec := testConsumer(t, js, "poison", 3)
		dlq := deadLetters(t, js, spec.Durable)
		got := make(chan string, 8)
		run(t, js, spec, func(_ context.Context, d *stream.Delivery) error { got <- d.Event.ID(); return nil })
		if _, err := js.Publish(ctx, events.BreachDetected.Subject(), []byte("{not json")); err != nil {
			t.Fatal(err)
		}
		unknown := fmt.Sprintf(`{"specversion":"1.0","id":"u-1","type":"com.example.unknown","source":"/x","time":"%s"}`, time.Now().UTC().Format(time.RFC3339))
		if _, err := js.Publish(ctx, events.BreachDetected.Subject(), []byte(unknown)); err != nil {
			t.Fatal(err)
		}
		reasons := []string{within(t, dlq, 5*time.Second, "malformed dead letter").Reason, within(t, dlq, 5*time.Second, "unknown-type dead letter").Reason}
		if !contains(reasons[0], "malformed") || !contains(reasons[1], "unknown event type") {
			t.Fatalf("reasons %q", reasons)
		}
		good, _ := pub.Publish(ctx, events.BreachDetected, breach("after poison"))
		if id := within(t, got, 5*time.Second, "a good event after the poison"); id != good.ID() {
			t.Fatalf("got %s, want %s", id, good.ID())
		}
	})

	t.Run("a handler panic is a permanent failure, not a crash", func(t *testing.T) {
		_, js, pub := fresh(t)
		spec := testConsumer(t, js, "panics", 3)
		dlq := deadLetters(t, js, spec.Durable)
		run(t, js, spec, func(context.Context, *stream.Delivery) error { panic("boom") })
		ev, _ := pub.Publish(ctx, events.BreachDetected, breach("panic"))
		d := within(t, dlq, 5*time.Second, "dead letter")
		if !contains(d.Reason, "panicked: boom") || d.Deliveries != 1 {
			t.Fatalf("dead letter %+v", d)
		}
		orig, _, err := events.Decode(d.OriginalHeaders, d.OriginalData)
		if err != nil || orig.ID() != ev.ID() {
			t.Fatalf("the dead letter must carry the original event: %v %v", orig.ID(), err)
		}
	})

	t.Run("a transient error is retried with growing delay", func(t *testing.T) {
		_, js, pub := fresh(t)
		spec := testConsumer(t, js, "transient", 10)
		var mu sync.Mutex
		var at []time.Time
		done := make(chan struct{})
		run(t, js, spec, func(_ context.Context, d *stream.Delivery) error {
			mu.Lock()
			defer mu.Unlock()
			at = append(at, time.Now())
			if d.Attempt < 4 {
				return errors.New("vault unavailable")
			}
			close(done)
			return nil
		})
		publish(t, pub, ctx, breach("transient"))
		within(t, done, 10*time.Second, "fourth delivery")
		mu.Lock()
		defer mu.Unlock()
		for i := 1; i < len(at); i++ {
			gap, min := at[i].Sub(at[i-1]), spec.Backoff(uint64(i))
			// The server redelivers no earlier than the NakWithDelay asked.
			if gap < min-20*time.Millisecond {
				t.Errorf("retry %d came after %v, before its backoff %v", i, gap, min)
			}
		}
		if g1, g3 := at[1].Sub(at[0]), at[3].Sub(at[2]); g3 <= g1 {
			t.Errorf("delays did not grow: first %v, third %v", g1, g3)
		}
	})

	t.Run("a permanent error is terminated, not retried", func(t *testing.T) {
		_, js, pub := fresh(t)
		spec := testConsumer(t, js, "permanent", 5)
		dlq := deadLetters(t, js, spec.Durable)
		calls := make(chan uint64, 8)
		run(t, js, spec, func(_ context.Context, d *stream.Delivery) error {
			calls <- d.Attempt
			if d.Event.Source() == "/marker" {
				return nil
			}
			return stream.Permanent(errors.New("tenant does not exist"))
		})
		publish(t, pub, ctx, breach("permanent"))
		d := within(t, dlq, 5*time.Second, "dead letter")
		if d.Reason != "tenant does not exist" || d.Consumer != "permanent" {
			t.Fatalf("dead letter %+v", d)
		}
		if a := within(t, calls, time.Second, "first call"); a != 1 {
			t.Fatalf("first attempt %d", a)
		}
		// Nothing more arrives before a marker published afterwards: a
		// redelivery of the terminated message would come first.
		marker, _ := events.New(events.BreachDetected, "/marker", breach("marker"))
		publishEvent(t, pub, ctx, marker)
		if a := within(t, calls, 5*time.Second, "marker"); a != 1 {
			t.Fatalf("the terminated message was redelivered (attempt %d)", a)
		}
		info, err := js.Consumer(ctx, spec.Stream, spec.Durable)
		if err != nil {
			t.Fatal(err)
		}
		// The term and the marker's ack are asynchronous: wait for the
		// server to have processed them, then nothing may be pending or
		// redelivered.
		var ci *jetstream.ConsumerInfo
		for deadline := time.Now().Add(5 * time.Second); ; {
			ci, _ = info.Info(ctx)
			if ci.NumAckPending == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if ci.NumAckPending != 0 || ci.NumRedelivered != 0 {
			t.Fatalf("consumer still holds the message: pending %d redelivered %d", ci.NumAckPending, ci.NumRedelivered)
		}
	})

	t.Run("an outage is retried without limit and never dead-lettered", func(t *testing.T) {
		_, js, pub := fresh(t)
		spec := testConsumer(t, js, "unbounded", -1)
		spec.PoisonAttempts = 3 // an outage must not spend it
		dlq := deadLetters(t, js, spec.Durable)
		var calls atomic.Int64
		handled := make(chan uint64, 1)
		c := stream.NewConsumer(js, spec, func(_ context.Context, d *stream.Delivery) error {
			if calls.Add(1) <= 12 {
				return stream.Unavailable("postgres", errors.New("still down"))
			}
			handled <- d.Attempt
			return nil
		}, stream.ConsumerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), BreakerMin: 10 * time.Millisecond, BreakerMax: 50 * time.Millisecond})
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.Run(rctx) }()
		defer stopRun(t, cancel, done)
		publish(t, pub, ctx, breach("unbounded"))
		if attempt := within(t, handled, 30*time.Second, "the 13th delivery"); attempt != 13 {
			t.Fatalf("handled at delivery %d", attempt)
		}
		select {
		case d := <-dlq:
			t.Fatalf("dead-lettered: %+v", d)
		case <-time.After(300 * time.Millisecond):
		}
	})

	t.Run("an error nobody classified is poison after the budget: recorded, dead-lettered, and the consumer goes on", func(t *testing.T) {
		_, js, pub := fresh(t)
		spec := testConsumer(t, js, "budget", -1)
		spec.PoisonAttempts = 4
		dlq := deadLetters(t, js, spec.Durable)
		var recorded, alarms atomic.Int64
		got := make(chan string, 4)
		c := stream.NewConsumer(js, spec, func(_ context.Context, d *stream.Delivery) error {
			if d.Event.Source() == "/marker" {
				got <- d.Event.ID()
				return nil
			}
			// SQLSTATE 22P05 from PostgreSQL: neither an outage nor marked permanent.
			return errors.New(`ERROR: unsupported Unicode escape sequence (SQLSTATE 22P05)`)
		}, stream.ConsumerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			OnPermanent: func(_ context.Context, _ *stream.Delivery, cause error) error {
				if errors.Is(cause, stream.ErrPoison) {
					recorded.Add(1)
				}
				return nil
			},
			OnPoison: func(string, error) { alarms.Add(1) }})
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.Run(rctx) }()
		defer stopRun(t, cancel, done)
		publish(t, pub, ctx, breach("poison"))
		d := within(t, dlq, 20*time.Second, "the poison's dead letter")
		if d.Deliveries != 4 || !contains(d.Reason, "poison") || !contains(d.Reason, "22P05") {
			t.Fatalf("dead letter after %d deliveries: %q", d.Deliveries, d.Reason)
		}
		if recorded.Load() != 1 || alarms.Load() != 1 {
			t.Fatalf("OnPermanent saw the poison %d times, OnPoison %d", recorded.Load(), alarms.Load())
		}
		marker, _ := events.New(events.BreachDetected, "/marker", breach("marker"))
		publishEvent(t, pub, ctx, marker)
		if id := within(t, got, 5*time.Second, "a message after the poison"); id != marker.ID() {
			t.Fatalf("got %s", id)
		}
	})

	t.Run("poison never holds more than its window of the in-flight messages", func(t *testing.T) {
		_, js, pub := fresh(t)
		spec := testConsumer(t, js, "window", -1)
		spec.PoisonAttempts = 1000 // only the window can end them
		spec.MaxAckPending = 16    // a window of 4
		dlq := deadLetters(t, js, spec.Durable)
		c := stream.NewConsumer(js, spec, func(context.Context, *stream.Delivery) error { return errors.New("unclassified") },
			stream.ConsumerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Concurrency: 4})
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.Run(rctx) }()
		defer stopRun(t, cancel, done)
		for i := range 12 {
			publish(t, pub, ctx, breach(fmt.Sprint("poison ", i)))
		}
		for i := range 12 - spec.PoisonWindow() {
			d := within(t, dlq, 30*time.Second, fmt.Sprint("dead letter ", i))
			if !contains(d.Reason, "poison window") || d.Deliveries != 3 {
				t.Fatalf("dead letter %d: after %d deliveries: %q", i, d.Deliveries, d.Reason)
			}
		}
		select {
		case d := <-dlq:
			t.Fatalf("more than the window dead-lettered: %q", d.Reason)
		case <-time.After(2 * time.Second):
		}
		info, _ := js.Consumer(ctx, spec.Stream, spec.Durable)
		if ci, _ := info.Info(ctx); ci.NumAckPending > spec.PoisonWindow() {
			t.Fatalf("%d messages still held in flight, window %d", ci.NumAckPending, spec.PoisonWindow())
		}
	})

	t.Run("a dead letter of any size can be written: the body is cut, with its size, hash and stream sequence", func(t *testing.T) {
		_, js, _ := fresh(t)
		spec := testConsumer(t, js, "large", -1)
		dlq := deadLetters(t, js, spec.Durable)
		run(t, js, spec, func(context.Context, *stream.Delivery) error { return stream.Permanent(errors.New("refused")) })
		// 900 KB: under the server's 1 MiB, over what base64 in a dead
		// letter could carry whole.
		// Forged by hand: New would cut the summary.
		ev, _ := events.New(events.BreachDetected, "/siem", breach("large"))
		body := fmt.Sprintf(`{"specversion":"1.0","id":%q,"type":%q,"source":"/siem","time":"%s","datacontenttype":"application/json","data":{"summary":%q,"severity":"high"}}`,
			ev.ID(), ev.Type(), time.Now().UTC().Format(time.RFC3339), strings.Repeat("x", 900_000))
		msg := nats.NewMsg(events.BreachDetected.Subject())
		msg.Header.Set("Nats-Msg-Id", ev.ID())
		msg.Data = []byte(body)
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
		d := within(t, dlq, 10*time.Second, "dead letter")
		if !d.Truncated() || len(d.OriginalData) != events.DeadLetterDataLimit || d.OriginalSize < 900_000 || d.OriginalStream != events.StreamEvents || d.OriginalSequence == 0 {
			t.Fatalf("dead letter: %d of %d bytes, stream %q seq %d", len(d.OriginalData), d.OriginalSize, d.OriginalStream, d.OriginalSequence)
		}
		st, _ := js.Stream(ctx, events.StreamEvents)
		orig, err := st.GetMsg(ctx, d.OriginalSequence)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(orig.Data)
		if hex.EncodeToString(sum[:]) != d.OriginalSHA256 || !strings.HasSuffix(orig.Header.Get("Nats-Msg-Id"), ev.ID()) {
			t.Fatalf("the stream's original does not match the dead letter: hash %v, id %q vs %q", hex.EncodeToString(sum[:]) == d.OriginalSHA256, orig.Header.Get("Nats-Msg-Id"), ev.ID())
		}
	})

	t.Run("a dependency down pauses fetching until a probe goes through, and shows in the readiness check", func(t *testing.T) {
		_, js, pub := fresh(t)
		spec := testConsumer(t, js, "paused", -1)
		var calls atomic.Int64
		down := atomic.Bool{}
		down.Store(true)
		c := stream.NewConsumer(js, spec, func(context.Context, *stream.Delivery) error {
			calls.Add(1)
			if down.Load() {
				return stream.Unavailable("vault", errors.New("503 Vault is sealed"))
			}
			return nil
		}, stream.ConsumerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Concurrency: 4,
			BreakerMin: 400 * time.Millisecond, BreakerMax: 400 * time.Millisecond})
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.Run(rctx) }()
		defer stopRun(t, cancel, done)
		for i := range 8 {
			publish(t, pub, ctx, breach(fmt.Sprint("paused ", i)))
		}
		waitFor(t, 10*time.Second, "the breaker to open", func() bool { return c.Check(ctx) != nil })
		if err := c.Check(ctx); !contains(err.Error(), "vault") {
			t.Fatalf("readiness says %v", err)
		}
		// Open for 2 s: one probe per 400 ms, not eight messages retried
		// every 100 ms.
		before := calls.Load()
		time.Sleep(2 * time.Second)
		if n := calls.Load() - before; n > 8 {
			t.Fatalf("%d handler calls in 2 s with the dependency down: not paused", n)
		}
		down.Store(false)
		waitFor(t, 10*time.Second, "every message once the dependency answers", func() bool {
			info, _ := js.Consumer(ctx, spec.Stream, spec.Durable)
			ci, _ := info.Info(ctx)
			return ci.NumPending == 0 && ci.NumAckPending == 0
		})
		if err := c.Check(ctx); err != nil {
			t.Fatalf("readiness still failing: %v", err)
		}
	})

	t.Run("a permanent failure is recorded before its dead letter, and a failed record retries the message", func(t *testing.T) {
		_, js, pub := fresh(t)
		spec := testConsumer(t, js, "recorded", -1)
		dlq := deadLetters(t, js, spec.Durable)
		var records atomic.Int64
		c := stream.NewConsumer(js, spec, func(context.Context, *stream.Delivery) error {
			return stream.Permanent(errors.New("unknown tenant"))
		}, stream.ConsumerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			OnPermanent: func(_ context.Context, d *stream.Delivery, cause error) error {
				if records.Add(1) == 1 {
					return errors.New("database away") // the first record fails: the message must come back
				}
				if d == nil || !contains(cause.Error(), "unknown tenant") {
					t.Errorf("OnPermanent got %v, %v", d, cause)
				}
				return nil
			}})
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.Run(rctx) }()
		defer stopRun(t, cancel, done)
		publish(t, pub, ctx, breach("recorded"))
		d := within(t, dlq, 10*time.Second, "dead letter")
		if records.Load() != 2 || d.Deliveries != 2 {
			t.Fatalf("%d records, dead letter after %d deliveries", records.Load(), d.Deliveries)
		}
	})

	t.Run("trace context travels in the traceparent header", func(t *testing.T) {
		nc, js, _ := fresh(t)
		sub, err := nc.SubscribeSync(events.IncidentOpened.Subject())
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = sub.Unsubscribe() }()
		tp := newRecordingProvider()
		tpub := stream.NewPublisher(js, "/test", tp)
		if _, err := tpub.Publish(ctx, events.IncidentOpened, events.IncidentOpenedData{IncidentID: "i", BreachEventID: "b", Severity: events.SeverityHigh, Summary: "s"}); err != nil {
			t.Fatal(err)
		}
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get("traceparent") == "" || m.Header.Get("Nats-Msg-Id") == "" {
			t.Fatalf("headers %v", m.Header)
		}
		ev, _, err := events.Decode(m.Header, m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Extensions()["traceparent"] != m.Header.Get("traceparent") {
			t.Fatalf("the CloudEvents tracing extension should carry the same traceparent: %v", ev.Extensions())
		}
	})
	t.Run("without a traceparent header the CloudEvents extension continues the trace", func(t *testing.T) {
		_, js, _ := fresh(t)
		spec := testConsumer(t, js, "ext-trace", 3)
		traces := make(chan string, 1)
		tp := newRecordingProvider()
		c := stream.NewConsumer(js, spec, func(ctx context.Context, d *stream.Delivery) error {
			traces <- trace.SpanContextFromContext(ctx).TraceID().String()
			return nil
		}, stream.ConsumerOptions{TracerProvider: tp, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		runCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() { _ = c.Run(runCtx) }() // ends with runCtx
		ev, _ := events.New(events.BreachDetected, "/siem", breach("ext"))
		const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
		ev.SetExtension("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
		body, _ := events.Marshal(ev)
		if _, err := js.Publish(ctx, events.BreachDetected.Subject(), body); err != nil {
			t.Fatal(err)
		}
		if got := within(t, traces, 5*time.Second, "delivery"); got != traceID {
			t.Fatalf("handler trace %s, want %s", got, traceID)
		}
	})
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// waitFor polls cond until it holds or fails the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// publish publishes a breach the test waits for: a refused publish stops
// the test at once rather than at the wait.
func publish(t *testing.T, pub *stream.Publisher, ctx context.Context, data events.BreachDetectedData) {
	t.Helper()
	if _, err := pub.Publish(ctx, events.BreachDetected, data); err != nil {
		t.Fatal(err)
	}
}

// publishEvent is publish for an event built by the test.
func publishEvent(t *testing.T, pub *stream.Publisher, ctx context.Context, ev event.Event) {
	t.Helper()
	if _, err := pub.PublishEvent(ctx, ev); err != nil {
		t.Fatal(err)
	}
}

// stopRun cancels a consumer's Run and waits for it to return: it fails
// only when it cannot bind to the consumer.
func stopRun(t *testing.T, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
}
