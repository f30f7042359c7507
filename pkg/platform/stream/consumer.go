package stream

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/retry"
)

// ConsumerOptions configure a Consumer. Zero values take the defaults.
type ConsumerOptions struct {
	// Logger receives one line per settled message. Default: slog.Default().
	Logger *slog.Logger
	// TracerProvider traces each message. Default: no tracing.
	TracerProvider trace.TracerProvider
	// Concurrency is how many messages one process handles at once. Default 1.
	Concurrency int
	// DrainTimeout bounds how long Run waits for in-flight handlers after
	// its context ends; unfinished messages are redelivered. Default 10s.
	DrainTimeout time.Duration
	// Middleware wraps the handler inside the built-in panic recovery.
	Middleware []Middleware
	// MeterProvider receives the consumer's metrics (messages by outcome,
	// handling time, lag, dependencies waited for). Default: none.
	MeterProvider metric.MeterProvider
	// OnPermanent is called before a message is dead-lettered for a
	// permanent cause (bad data, a handler's Permanent error, a panic),
	// with the decoded delivery (nil when the message could not be
	// decoded): the one place a service records what that means (a tenant
	// failed). An error from it retries the message: the record must be
	// written before the message goes.
	OnPermanent func(ctx context.Context, d *Delivery, cause error) error
	// OnDependency is told when the consumer starts and stops waiting for
	// a dependency that is down (Unavailable errors).
	OnDependency func(durable, dependency string, down bool, reason string, since time.Time)
	// BreakerMin and BreakerMax bound the consumer's pause while a
	// dependency is down. Default 1s and 30s.
	BreakerMin, BreakerMax time.Duration
	// OnPoison is told when a message is given up as poison (ErrPoison),
	// before its dead letter: the service's readiness alarm.
	OnPoison func(durable string, cause error)
}

// Consumer runs a handler over a declared durable pull consumer. Several
// processes running the same consumer divide its messages.
type Consumer struct {
	js          jetstream.JetStream
	spec        events.ConsumerSpec
	handler     Handler
	logger      *slog.Logger
	tracer      trace.Tracer
	deadLetters *Publisher
	concurrency int
	drain       time.Duration
	metrics     consumerMetrics
	onPermanent func(ctx context.Context, d *Delivery, cause error) error
	onPoison    func(durable string, cause error)
	breaker     *breaker
	poison      *poisonLedger
}

// NewConsumer prepares a consumer for the declared spec. dlqSource is the
// CloudEvents source of the dead letters it writes.
func NewConsumer(js jetstream.JetStream, spec events.ConsumerSpec, handler Handler, opts ConsumerOptions) *Consumer {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.TracerProvider == nil {
		opts.TracerProvider = noop.NewTracerProvider()
	}
	if opts.Concurrency < 1 {
		opts.Concurrency = 1
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 10 * time.Second
	}
	logger := opts.Logger.With(slog.String("consumer", spec.Durable))
	mw := append([]Middleware{Recoverer(logger)}, opts.Middleware...)
	if opts.BreakerMin <= 0 {
		opts.BreakerMin = time.Second
	}
	if opts.BreakerMax < opts.BreakerMin {
		opts.BreakerMax = max(30*time.Second, opts.BreakerMin)
	}
	metrics := newConsumerMetrics(opts.MeterProvider)
	br := &breaker{waits: retry.Policy{Initial: opts.BreakerMin, Max: opts.BreakerMax}.Start(), onChange: func(dep string, open bool, reason string, since time.Time) {
		metrics.dependency(spec.Durable, dep, open)
		if open {
			logger.Warn("dependency down: pausing this consumer until it answers", slog.String("dependency", dep), slog.String("reason", reason))
		} else {
			logger.Info("dependency answering again: consuming", slog.String("dependency", dep), slog.Duration("paused", time.Since(since)))
		}
		if opts.OnDependency != nil {
			opts.OnDependency(spec.Durable, dep, open, reason, since)
		}
	}}
	return &Consumer{
		onPermanent: opts.OnPermanent,
		onPoison:    opts.OnPoison,
		breaker:     br,
		poison:      newPoisonLedger(spec),
		js:          js,
		spec:        spec,
		handler:     Chain(handler, mw...),
		logger:      logger,
		tracer:      opts.TracerProvider.Tracer(instrumentationName),
		deadLetters: NewPublisher(js, events.SourceOf(spec.Service), opts.TracerProvider),
		concurrency: opts.Concurrency,
		drain:       opts.DrainTimeout,
		metrics:     metrics,
	}
}

// Run consumes until ctx ends, then stops fetching and waits (up to the
// drain timeout) for handlers in flight. It returns an error only when it
// cannot bind to the consumer.
func (c *Consumer) Run(ctx context.Context) error {
	cons, err := c.js.Consumer(ctx, c.spec.Stream, c.spec.Durable)
	if err != nil {
		return fmt.Errorf("bind consumer %s: %w", c.spec.Durable, err)
	}
	// Handlers outlive ctx by up to the drain timeout so in-flight work
	// finishes instead of being cut mid-way.
	handlerCtx, cancelHandlers := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHandlers()

	defer c.metrics.observeLag(c.spec.Durable, cons)()
	slots := make(chan struct{}, c.concurrency)
	var inFlight sync.WaitGroup
	c.logger.InfoContext(ctx, "consumer started", slog.String("stream", c.spec.Stream), slog.Int("concurrency", c.concurrency))
	fetchFailing := retry.Default().Start()
	for ctx.Err() == nil {
		// While a dependency is down, fetch nothing; then one message, a
		// probe, before the full rate again.
		probe := c.breaker.pause(ctx)
		// Fetch only as many messages as there are free handler slots: a
		// message fetched is handled at once, so its ack wait never runs
		// out while it waits behind others in this process.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		want := 1
		for want < c.concurrency && !probe {
			select {
			case slots <- struct{}{}:
				want++
				continue
			default:
			}
			break
		}
		batch, err := cons.Fetch(want, jetstream.FetchMaxWait(fetchWait))
		got := 0
		if err == nil {
			for msg := range batch.Messages() {
				got++
				inFlight.Add(1)
				go func() {
					defer func() { <-slots; inFlight.Done() }()
					c.process(handlerCtx, msg)
				}()
			}
			err = batch.Error()
		}
		for range want - got {
			<-slots
		}
		if probe && got > 0 {
			// Wait for the probe's verdict (every slot free again) before
			// fetching more.
			for range c.concurrency {
				slots <- struct{}{}
			}
			for range c.concurrency {
				<-slots
			}
		}
		if err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			// NATS away or the consumer deleted: back off, never spin.
			wait := fetchFailing.Next()
			c.logger.WarnContext(ctx, "fetch failed; retrying", slog.Any("error", err), slog.Duration("retry_in", wait))
			retry.Sleep(ctx, wait)
			continue
		}
		fetchFailing.Reset()
	}
	done := make(chan struct{})
	go func() { inFlight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(c.drain):
		c.logger.Warn("drain timeout: handlers still running are cancelled; their messages will be redelivered")
		cancelHandlers()
		<-done
	}
	c.logger.Info("consumer stopped")
	return nil
}

// fetchWait bounds one pull request: how long a fetch waits for messages
// (and so how long a shutdown may wait for the last fetch to return).
const fetchWait = 2 * time.Second

// keepAlive tells JetStream the handler is still at work every third of
// the ack wait, until stop is closed: a handler that outlives the ack wait
// (a plan of thousands of jobs, a breach held while PostgreSQL is down) is
// not redelivered to another process meanwhile.
func (c *Consumer) keepAlive(msg jetstream.Msg, stop <-chan struct{}) {
	every := c.spec.AckWait / 3
	if every <= 0 {
		every = 10 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			_ = msg.InProgress() // a lost InProgress costs at worst a redelivery
		}
	}
}

// process decodes one message, runs the handler and settles the message.
func (c *Consumer) process(ctx context.Context, msg jetstream.Msg) {
	var attempt, streamSeq uint64 = 1, 0
	if meta, err := msg.Metadata(); err == nil {
		attempt, streamSeq = meta.NumDelivered, meta.Sequence.Stream
	}
	ev, spec, decodeErr := events.Decode(msg.Headers(), msg.Data())
	if decodeErr == nil && spec.Subject() != msg.Subject() {
		decodeErr = fmt.Errorf("%w: type %s does not belong on subject %s", events.ErrMalformed, ev.Type(), msg.Subject())
	}
	var evp *event.Event
	if decodeErr == nil {
		evp = &ev
	}
	ctx = extract(ctx, msg.Headers(), evp)
	ctx, span := c.tracer.Start(ctx, "process "+msg.Subject(),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(messagingAttributes(msg.Subject(), ev)...),
		trace.WithAttributes(
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.consumer.group.name", c.spec.Durable),
			attribute.Int64("messaging.nats.delivery_count", int64(attempt))))
	defer span.End()

	start, outcome := time.Now(), outcomeAcked
	defer func() { c.metrics.record(ctx, c.spec.Durable, ev.Type(), outcome, time.Since(start).Seconds()) }()
	log := c.logger.With(slog.String("subject", msg.Subject()), slog.Uint64("attempt", attempt))
	if decodeErr != nil {
		outcome = outcomeDeadLettered
		span.SetStatus(codes.Error, "undecodable message")
		c.deadLetter(ctx, msg, nil, attempt, decodeErr, log)
		return
	}
	log = log.With(slog.String("event_id", ev.ID()), slog.String("event_type", ev.Type()))
	stopKeepAlive := make(chan struct{})
	go c.keepAlive(msg, stopKeepAlive)
	d := &Delivery{Event: ev, Spec: spec, Subject: msg.Subject(), Attempt: attempt, Consumer: c.spec.Durable, msg: msg}
	err := c.handler(ctx, d)
	close(stopKeepAlive)
	// The one place a message's fate is decided: done, failed for good
	// (recorded, dead-lettered), or retried later — without limit for an
	// outage, since an outage must delay work, never fail it; within the
	// poison budget for an error nobody classified.
	if err != nil && !IsPermanent(err) {
		if _, outage := UnavailableDependency(err); !outage {
			if verdict := c.poison.failed(streamSeq); verdict != "" {
				err = Permanent(fmt.Errorf("%w: %s: %w", ErrPoison, verdict, err))
				if c.onPoison != nil {
					c.onPoison(c.spec.Durable, err)
				}
			}
		}
	}
	if err == nil || IsPermanent(err) {
		c.poison.settled(streamSeq)
	}
	switch {
	case err == nil:
		c.breaker.reset()
		if ackErr := msg.Ack(); ackErr != nil {
			log.WarnContext(ctx, "ack failed; the message will be redelivered", slog.Any("error", ackErr))
			return
		}
		log.InfoContext(ctx, "event handled")
	case IsPermanent(err):
		outcome = outcomeDeadLettered
		span.RecordError(err)
		span.SetStatus(codes.Error, "permanent failure")
		c.deadLetter(ctx, msg, d, attempt, err, log)
	default:
		outcome = outcomeRetried
		if dep, ok := UnavailableDependency(err); ok {
			c.breaker.trip(dep, err.Error())
		} else {
			// A handler that answers (even with an error of its own) means
			// the dependencies it reached are up.
			c.breaker.reset()
		}
		delay := c.spec.Backoff(attempt)
		span.RecordError(err)
		span.SetAttributes(attribute.String("lockdown.retry_in", delay.String()))
		log.WarnContext(ctx, "transient failure; retrying later", slog.Any("error", err), slog.Duration("retry_in", delay))
		if nakErr := msg.NakWithDelay(delay); nakErr != nil {
			log.WarnContext(ctx, "nak failed; the message will be redelivered after the ack wait", slog.Any("error", nakErr))
		}
	}
}

// deadLetter records what the permanent failure means (OnPermanent), writes
// the message on the consumer's dead-letter subject, then terminates it. If
// either record cannot be written the message is not terminated but
// retried — deliveries are unlimited, so it comes back — and is never lost.
func (c *Consumer) deadLetter(ctx context.Context, msg jetstream.Msg, d *Delivery, attempt uint64, cause error, log *slog.Logger) {
	reason := cause.Error()
	if c.onPermanent != nil {
		if err := c.onPermanent(ctx, d, cause); err != nil {
			log.ErrorContext(ctx, "permanent failure not recorded; retrying the message", slog.Any("error", err), slog.String("reason", reason))
			_ = msg.NakWithDelay(c.spec.Backoff(attempt))
			return
		}
	}
	if err := c.writeDeadLetter(ctx, msg, attempt, reason); err != nil {
		log.ErrorContext(ctx, "dead letter not written; retrying the message", slog.Any("error", err), slog.String("reason", reason))
		_ = msg.NakWithDelay(c.spec.Backoff(attempt))
		return
	}
	if err := msg.TermWithReason(truncate(reason, 256)); err != nil {
		log.WarnContext(ctx, "term failed", slog.Any("error", err))
	}
	log.ErrorContext(ctx, "message dead-lettered", slog.String("reason", reason))
}

func (c *Consumer) writeDeadLetter(ctx context.Context, msg jetstream.Msg, attempt uint64, reason string) error {
	data := DeadLetterOf(msg.Subject(), msg.Headers(), msg.Data())
	data.Consumer, data.Reason, data.Deliveries, data.FailedAt = c.spec.Durable, truncate(reason, events.DeadLetterReasonLimit), attempt, time.Now().UTC()
	meta, metaErr := msg.Metadata()
	if metaErr == nil {
		data.OriginalStream, data.OriginalSequence = meta.Stream, meta.Sequence.Stream
	}
	ev, err := events.New(events.DeadLetter, events.SourceOf(c.spec.Service), data)
	if err != nil {
		return err
	}
	// One dead letter per stored message and delivery count: a retried
	// write after a lost ack is de-duplicated by JetStream.
	if metaErr == nil {
		ev.SetID(fmt.Sprintf("%s-%d-%d", c.spec.Durable, meta.Sequence.Stream, attempt))
	}
	_, err = c.deadLetters.publishOn(ctx, events.DeadLetterSubject(c.spec.Durable), ev)
	return err
}

// DeadLetterOf fills the part of a dead letter that describes the
// original message, within the contract's limits: the body is cut at
// events.DeadLetterDataLimit (its size and SHA-256 tell what was cut),
// header values at events.DeadLetterHeaderLimit. A dead letter is then
// always small enough to publish, whatever it carries.
func DeadLetterOf(subject string, headers map[string][]string, body []byte) events.DeadLetterData {
	sum := sha256.Sum256(body)
	d := events.DeadLetterData{Subject: truncate(subject, events.DeadLetterHeaderLimit), OriginalSize: len(body), OriginalSHA256: hex.EncodeToString(sum[:]),
		OriginalData: body[:min(len(body), events.DeadLetterDataLimit)]}
	keys := slices.Sorted(maps.Keys(headers))
	if len(keys) > 0 {
		d.OriginalHeaders = map[string][]string{}
	}
	for _, k := range keys[:min(len(keys), events.DeadLetterHeaders)] {
		vs := headers[k]
		cut := make([]string, 0, min(len(vs), 4))
		for _, v := range vs[:min(len(vs), 4)] {
			cut = append(cut, truncate(v, events.DeadLetterHeaderLimit))
		}
		d.OriginalHeaders[truncate(k, 256)] = cut
	}
	return d
}

// truncate cuts s at n bytes, on a UTF-8 boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// ErrPoison is returned (wrapped, and permanent) for a message whose
// handler kept failing with an error that is neither an outage nor
// classified permanent: past the consumer's poison budget it is
// dead-lettered instead of being retried forever.
var ErrPoison = errors.New("poison: gave up on a message that keeps failing")

// poisonLedger counts, per stored message, the failures that were neither
// outages nor permanent. It lives in the process: a restart forgets the
// counts (each process of a consumer spends at most its own budget), which
// bounds the retries of a poison message by processes × budget rather than
// never.
type poisonLedger struct {
	mu       sync.Mutex
	attempts int
	window   int
	failures map[uint64]int
}

// suspectAfter is the failure count from which a message counts against
// the poison window: one or two failures are ordinary (a serialization
// conflict, a dropped connection), three in a row are suspicious.
const suspectAfter = 3

// maxLedger bounds the ledger's memory.
const maxLedger = 4096

func newPoisonLedger(spec events.ConsumerSpec) *poisonLedger {
	return &poisonLedger{attempts: spec.PoisonAttempts, window: spec.PoisonWindow(), failures: map[uint64]int{}}
}

// failed counts one unclassified failure of the message at seq and returns
// why it must be given up now ("" to retry it).
func (p *poisonLedger) failed(seq uint64) string {
	if p.attempts <= 0 || seq == 0 {
		return ""
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.failures) > maxLedger {
		// Messages settled by another process are never seen settling
		// here: forget them all rather than grow without bound.
		clear(p.failures)
	}
	n := p.failures[seq] + 1
	p.failures[seq] = n
	if n >= p.attempts {
		return fmt.Sprintf("%d failures with errors that are neither an outage nor permanent", n)
	}
	if n == suspectAfter {
		suspects := 0
		for s, f := range p.failures {
			if s != seq && f >= suspectAfter {
				suspects++
			}
		}
		if suspects >= p.window {
			return fmt.Sprintf("%d other messages of this consumer already keep failing (poison window %d): this one would stall the ones behind it", suspects, p.window)
		}
	}
	return ""
}

// settled forgets a message that was acknowledged or terminated.
func (p *poisonLedger) settled(seq uint64) {
	p.mu.Lock()
	delete(p.failures, seq)
	p.mu.Unlock()
}
