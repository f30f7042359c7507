package stream

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
)

// Message outcomes, as counted by lockdown.messages.processed.
const (
	outcomeAcked        = "acked"
	outcomeRetried      = "retried"
	outcomeDeadLettered = "dead_lettered"
)

// consumerMetrics are every consumer's instruments: what happened to each
// message (for the rotator's job consumer: jobs done and failed), how long
// handling took, and how far the consumer is behind its stream.
type consumerMetrics struct {
	processed metric.Int64Counter
	duration  metric.Float64Histogram
	lag       metric.Int64ObservableGauge
	waiting   metric.Int64UpDownCounter
	meter     metric.Meter
}

func newConsumerMetrics(mp metric.MeterProvider) consumerMetrics {
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	m := consumerMetrics{meter: mp.Meter(instrumentationName)}
	// Instrument creation fails only on invalid names; these are constant.
	m.processed, _ = m.meter.Int64Counter("lockdown.messages.processed",
		metric.WithDescription("Messages settled by a consumer, by event type and outcome (acked, retried, dead_lettered)."))
	m.duration, _ = m.meter.Float64Histogram("lockdown.message.duration", metric.WithUnit("s"),
		metric.WithDescription("Time a handler took for one message."))
	m.lag, _ = m.meter.Int64ObservableGauge("lockdown.consumer.lag",
		metric.WithDescription("Messages not yet acknowledged by a durable consumer: pending in the stream plus in flight."))
	m.waiting, _ = m.meter.Int64UpDownCounter("lockdown.dependency.waiting",
		metric.WithDescription("1 while a consumer is paused because a dependency it needs is down (its breaker is open), by dependency."))
	return m
}

// dependency records a consumer starting (down) or stopping to wait for a
// dependency.
func (m consumerMetrics) dependency(durable, dep string, down bool) {
	n := int64(-1)
	if down {
		n = 1
	}
	m.waiting.Add(context.Background(), n, metric.WithAttributes(attribute.String("messaging.consumer.group.name", durable),
		attribute.String("lockdown.dependency", dep)))
}

func (m consumerMetrics) record(ctx context.Context, durable, eventType, outcome string, seconds float64) {
	attrs := metric.WithAttributes(attribute.String("messaging.consumer.group.name", durable),
		attribute.String("cloudevents.event_type", eventType), attribute.String("lockdown.outcome", outcome))
	m.processed.Add(ctx, 1, attrs)
	m.duration.Record(ctx, seconds, attrs)
}

// observeLag reports the consumer's lag at each collection until the
// returned function unregisters it.
func (m consumerMetrics) observeLag(durable string, cons jetstream.Consumer) func() {
	reg, err := m.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		info, err := cons.Info(ctx)
		if err != nil {
			return nil // no figure this round; the next collection tries again
		}
		o.ObserveInt64(m.lag, int64(info.NumPending)+int64(info.NumAckPending),
			metric.WithAttributes(attribute.String("messaging.consumer.group.name", durable)))
		return nil
	}, m.lag)
	if err != nil {
		return func() {}
	}
	return func() { _ = reg.Unregister() }
}
