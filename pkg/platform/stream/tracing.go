package stream

import (
	"context"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"

	"github.com/lockdown/lockdown/pkg/events"
)

// headerCarrier adapts nats.Header to OpenTelemetry's TextMapCarrier so W3C
// trace context travels in NATS message headers.
type headerCarrier nats.Header

// Get is case-insensitive: NATS headers are case-sensitive, and producers
// write traceparent, Traceparent or TRACEPARENT.
func (c headerCarrier) Get(key string) string {
	if v := nats.Header(c).Get(key); v != "" {
		return v
	}
	for k, v := range c {
		if strings.EqualFold(k, key) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

func (c headerCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }

func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// extensionCarrier reads trace context from the CloudEvents distributed
// tracing extension, for events that arrive without NATS trace headers (an
// HTTP intake, a producer that only knows CloudEvents).
type extensionCarrier struct{ ev *event.Event }

func (c extensionCarrier) Get(key string) string {
	if v, ok := c.ev.Extensions()[key]; ok {
		if s, ok := v.(string); ok {
			return s
		}
	}
	return ""
}

func (c extensionCarrier) Set(key, value string) {
	if key == events.ExtTraceParent || key == events.ExtTraceState {
		c.ev.SetExtension(key, value)
	}
}

func (c extensionCarrier) Keys() []string {
	return []string{events.ExtTraceParent, events.ExtTraceState}
}

// traceContext is the only propagator: W3C trace context, the format both
// the traceparent header and the CloudEvents extension carry.
var traceContext = propagation.TraceContext{}

// inject writes the span context of ctx into both the headers and the event.
func inject(ctx context.Context, h nats.Header, ev *event.Event) {
	traceContext.Inject(ctx, headerCarrier(h))
	traceContext.Inject(ctx, extensionCarrier{ev})
}

// extract reads the producer's span context, preferring NATS headers and
// falling back to the CloudEvents extension.
func extract(ctx context.Context, h nats.Header, ev *event.Event) context.Context {
	if headerCarrier(h).Get(events.ExtTraceParent) != "" {
		return traceContext.Extract(ctx, headerCarrier(h))
	}
	if ev != nil {
		return traceContext.Extract(ctx, extensionCarrier{ev})
	}
	return ctx
}
