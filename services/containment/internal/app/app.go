// Package app is containment's composition root: it reads the config,
// builds the adapters and wires the consumers.
package app

import (
	"context"
	"log/slog"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/stream"
	"github.com/lockdown/lockdown/pkg/platform/config"
	"github.com/lockdown/lockdown/pkg/platform/runner"
)

// Config is containment's configuration.
type Config struct {
	config.Common
	// Concurrency of the breach consumer: breaches are rare, but a burst
	// of detections of one incident must not queue behind each other.
	BreachConcurrency int `env:"CONTAINMENT_BREACH_CONCURRENCY" default:"4" doc:"Breach events handled at once by one process."`
}

// Validate checks containment's own fields and the common ones.
func (c *Config) Validate() error {
	var p []error
	if err := c.Common.Validate(); err != nil {
		p = append(p, err)
	}
	if c.BreachConcurrency < 1 {
		p = append(p, errBreachConcurrency)
	}
	return joinErrs(p)
}

// BreachSink receives every valid breach event. Issue 3 replaces the
// logging sink with the incident store and the sealer.
type BreachSink interface {
	BreachReceived(ctx context.Context, eventID, source string, breach events.BreachDetectedData) error
}

// BreachHandler validates a breach event and hands it to the sink. Invalid
// data is a permanent failure, so it ends on the dead-letter subject.
func BreachHandler(sink BreachSink) stream.Handler {
	return stream.Decoded(func(ctx context.Context, d *stream.Delivery, b events.BreachDetectedData) error {
		return sink.BreachReceived(ctx, d.Event.ID(), d.Event.Source(), b)
	})
}

// Run wires containment and blocks until ctx ends.
func Run(ctx context.Context, rt *runner.Runtime, cfg *Config) error {
	return RunWith(ctx, rt, cfg, logSink{rt.Logger})
}

// RunWith is Run with an explicit sink, for tests.
func RunWith(ctx context.Context, rt *runner.Runtime, cfg *Config, sink BreachSink) error {
	spec, _ := events.ConsumerOf(events.ConsumerContainmentBreach)
	c := stream.NewConsumer(rt.NATS.JS, spec, BreachHandler(sink), stream.ConsumerOptions{
		Logger: rt.Logger, TracerProvider: rt.TracerProvider, Concurrency: cfg.BreachConcurrency,
		DrainTimeout: cfg.ShutdownTimeout,
	})
	return c.Run(ctx)
}

// logSink records a breach in the log: what the foundation does before the
// seal exists. It logs no indicator contents beyond the summary.
type logSink struct{ logger *slog.Logger }

func (s logSink) BreachReceived(ctx context.Context, eventID, source string, b events.BreachDetectedData) error {
	s.logger.InfoContext(ctx, "breach received", slog.String("event_id", eventID), slog.String("source", source),
		slog.String("severity", string(b.Severity)), slog.Time("detected_at", b.DetectedAt))
	return nil
}
