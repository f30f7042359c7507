package stream_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/stream"
)

func TestConsumerMetrics(t *testing.T) {
	_, js := startJetStream(t)
	pub := stream.NewPublisher(js, "/test/siem", nil)
	spec := testConsumer(t, js, "metered", 5)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	ctx, cancel := context.WithCancel(context.Background())
	handled := make(chan struct{}, 8)
	c := stream.NewConsumer(js, spec, func(_ context.Context, d *stream.Delivery) error {
		defer func() { handled <- struct{}{} }()
		if d.Event.Subject() == "refuse" {
			return stream.Permanent(errors.New("no"))
		}
		if d.Attempt == 1 {
			return errors.New("try again")
		}
		return nil
	}, stream.ConsumerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), MeterProvider: mp})
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer stopRun(t, cancel, done)

	ev, _ := events.New(events.BreachDetected, "/test/siem", breach("ok"))
	if _, err := pub.PublishEvent(ctx, ev); err != nil {
		t.Fatal(err)
	}
	bad, _ := events.New(events.BreachDetected, "/test/siem", breach("refused"))
	bad.SetSubject("refuse")
	if _, err := pub.PublishEvent(ctx, bad); err != nil {
		t.Fatal(err)
	}
	for range 3 { // refused once, retried once, acked once
		within(t, handled, 10*time.Second, "a settled message")
	}
	collect := func() (map[string]int64, bool) {
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(ctx, &rm); err != nil {
			t.Fatal(err)
		}
		outcomes := map[string]int64{}
		lagSeen := false
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				switch data := m.Data.(type) {
				case metricdata.Sum[int64]:
					if m.Name == "lockdown.messages.processed" {
						for _, dp := range data.DataPoints {
							o, _ := dp.Attributes.Value("lockdown.outcome")
							outcomes[o.AsString()] += dp.Value
						}
					}
				case metricdata.Gauge[int64]:
					if m.Name == "lockdown.consumer.lag" && len(data.DataPoints) == 1 {
						lagSeen = true
					}
				}
			}
		}
		return outcomes, lagSeen
	}
	t.Run("messages are counted by outcome, and the lag is observed", func(t *testing.T) {
		// The outcome is recorded just after the handler returns: poll.
		deadline := time.Now().Add(10 * time.Second)
		for {
			outcomes, lagSeen := collect()
			if outcomes["acked"] == 1 && outcomes["retried"] == 1 && outcomes["dead_lettered"] == 1 && lagSeen {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("outcomes %v, lag observed %v", outcomes, lagSeen)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
