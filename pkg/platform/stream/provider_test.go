package stream_test

import (
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// newRecordingProvider returns a real SDK tracer provider that samples
// everything, so spans have valid contexts to propagate.
func newRecordingProvider() *sdktrace.TracerProvider {
	return sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
}
