package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
)

var traceContext = propagation.TraceContext{}

// TraceParent returns ctx's span context as a W3C traceparent string (""
// without one), for a service to keep with long-lived state — an incident
// — and continue the trace from it later, after a restart too.
func TraceParent(ctx context.Context) string {
	carrier := propagation.MapCarrier{}
	traceContext.Inject(ctx, carrier)
	return carrier["traceparent"]
}

// WithTraceParent returns ctx carrying the remote span context of a
// traceparent kept by TraceParent: spans started from it belong to that
// trace. An empty or invalid traceparent leaves ctx as it is.
func WithTraceParent(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return traceContext.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent})
}
