// Package telemetry sets up what every Lockdown process reports: traces
// over OTLP/HTTP (standard OTEL_* variables) and JSON logs through log/slog
// that carry the trace and span id of the context they are written in, so
// a log line leads to its trace in Jaeger.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Options configure Setup.
type Options struct {
	// ServiceName is used when OTEL_SERVICE_NAME is not set.
	ServiceName string
	// LogOutput receives the JSON logs. Default: os.Stderr.
	LogOutput io.Writer
	// LogLevel is the minimum level logged. Default: info.
	LogLevel slog.Level
	// OTLPEndpoint, when set, is the OTLP/HTTP base URL to export to,
	// overriding the OTEL_* variables (the CLI points it at its own stack).
	OTLPEndpoint string
}

// Telemetry holds the process's tracer and meter providers and logger.
type Telemetry struct {
	TracerProvider *sdktrace.TracerProvider
	// MeterProvider exports metrics over OTLP/HTTP every
	// OTEL_METRIC_EXPORT_INTERVAL (default 60 s) when an endpoint is
	// configured and OTEL_METRICS_EXPORTER is not "none".
	MeterProvider *sdkmetric.MeterProvider
	Logger        *slog.Logger
	// Exporting is false when no OTLP endpoint is configured: spans are
	// then created (for log correlation) but not sent anywhere.
	Exporting bool
}

// Setup builds the tracer provider and logger. Spans are exported over
// OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, and OTEL_TRACES_EXPORTER is
// not "none"; the exporter reads the rest of the standard OTEL_* variables
// itself.
func Setup(ctx context.Context, opts Options) (*Telemetry, error) {
	name := os.Getenv("OTEL_SERVICE_NAME")
	if name == "" {
		name = opts.ServiceName
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(name)))
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	tpOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	exporting := opts.OTLPEndpoint != "" || exporterConfigured()
	if exporting {
		var expOpts []otlptracehttp.Option
		if opts.OTLPEndpoint != "" {
			expOpts = append(expOpts, otlptracehttp.WithEndpointURL(strings.TrimSuffix(opts.OTLPEndpoint, "/")+"/v1/traces"))
		}
		exp, err := otlptracehttp.New(ctx, expOpts...)
		if err != nil {
			return nil, fmt.Errorf("telemetry: otlp exporter: %w", err)
		}
		tpOpts = append(tpOpts, sdktrace.WithBatcher(exp))
	}
	mpOpts := []sdkmetric.Option{sdkmetric.WithResource(res)}
	if metricsConfigured() {
		exp, err := otlpmetrichttp.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("telemetry: otlp metric exporter: %w", err)
		}
		mpOpts = append(mpOpts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)))
	}
	out := opts.LogOutput
	if out == nil {
		out = os.Stderr
	}
	logger := slog.New(NewLogHandler(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: opts.LogLevel}))).
		With(slog.String("service", name))
	return &Telemetry{TracerProvider: sdktrace.NewTracerProvider(tpOpts...), MeterProvider: sdkmetric.NewMeterProvider(mpOpts...),
		Logger: logger, Exporting: exporting}, nil
}

// metricsConfigured follows the OTEL_* conventions: metrics go where the
// OTLP endpoint variables point unless OTEL_METRICS_EXPORTER says none.
// (Options.OTLPEndpoint is for the CLI's traces only; Jaeger takes no
// metrics, so the local stack turns them off.)
func metricsConfigured() bool {
	if os.Getenv("OTEL_METRICS_EXPORTER") == "none" {
		return false
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") != ""
}

func exporterConfigured() bool {
	if os.Getenv("OTEL_TRACES_EXPORTER") == "none" {
		return false
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Shutdown flushes spans and metrics still buffered and stops the exporters.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	return errors.Join(t.TracerProvider.ForceFlush(ctx), t.TracerProvider.Shutdown(ctx), t.MeterProvider.Shutdown(ctx))
}

// LogHandler adds trace_id and span_id to every record written with a
// context that carries a span.
type LogHandler struct{ slog.Handler }

// NewLogHandler wraps h.
func NewLogHandler(h slog.Handler) *LogHandler { return &LogHandler{Handler: h} }

// Handle adds the span context, then delegates.
func (h *LogHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

// WithAttrs keeps the wrapper around the derived handler.
func (h *LogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &LogHandler{Handler: h.Handler.WithAttrs(attrs)}
}

// WithGroup keeps the wrapper around the derived handler.
func (h *LogHandler) WithGroup(name string) slog.Handler {
	return &LogHandler{Handler: h.Handler.WithGroup(name)}
}
