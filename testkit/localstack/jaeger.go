package localstack

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// Jaeger is a Jaeger v2 all-in-one with in-memory storage: OTLP in, the
// query API out.
type Jaeger struct {
	// OTLPHTTPEndpoint is the OTLP/HTTP base URL (OTEL_EXPORTER_OTLP_ENDPOINT).
	OTLPHTTPEndpoint string
	// OTLPGRPCEndpoint is host:port of the OTLP/gRPC receiver.
	OTLPGRPCEndpoint string
	// QueryURL is the base of the query API (GET /api/traces?service=…).
	QueryURL string
	ports    []int
}

func (s *Stack) startJaeger(ctx context.Context) error {
	bin, err := tool("jaeger")
	if err != nil {
		return err
	}
	// otlp grpc, otlp http, query http, query grpc
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	dir := filepath.Join(s.Dir, "jaeger")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// Every listener is on a free loopback port, and the collector's own
	// metrics (fixed port 8888 by default) are off, so several stacks can
	// run side by side.
	conf := fmt.Sprintf(`service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: []
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:%d
    grpc:
      endpoint: 127.0.0.1:%d
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:%d
      http:
        endpoint: 127.0.0.1:%d
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`, ports[2], ports[3], ports[0], ports[1])
	confPath := filepath.Join(dir, "jaeger.yaml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return err
	}
	p, err := startProcess("jaeger", s.Dir, bin, []string{"--config", confPath}, nil, nil)
	if err != nil {
		return err
	}
	s.procs = append(s.procs, p)
	j := &Jaeger{
		OTLPGRPCEndpoint: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		OTLPHTTPEndpoint: fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		QueryURL:         fmt.Sprintf("http://127.0.0.1:%d", ports[2]),
		ports:            ports,
	}
	if err := p.waitReady(ctx, func(ctx context.Context) error { return httpOK(ctx, j.QueryURL+"/api/services") }); err != nil {
		return err
	}
	s.Jaeger = j
	return nil
}
