package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/stream"
	"github.com/lockdown/lockdown/pkg/platform/config"
	"github.com/lockdown/lockdown/pkg/platform/localstack"
	"github.com/lockdown/lockdown/pkg/platform/natsconn"
	"github.com/lockdown/lockdown/pkg/platform/runner"
	"github.com/lockdown/lockdown/pkg/platform/telemetry"
	"github.com/lockdown/lockdown/services/containment/internal/app"
)

// received is a BreachSink that hands every breach to the test.
type received struct {
	ch chan receivedBreach
}

type receivedBreach struct {
	id, source string
	data       events.BreachDetectedData
	traceID    string
	spanID     string
}

func (r received) BreachReceived(ctx context.Context, id, source string, b events.BreachDetectedData) error {
	sc := trace.SpanContextFromContext(ctx)
	r.ch <- receivedBreach{id: id, source: source, data: b, traceID: sc.TraceID().String(), spanID: sc.SpanID().String()}
	return nil
}

// TestBreachCrossesServices publishes a breach the way a SIEM does with
// `nats pub` — a structured CloudEvent on lockdown.breach.detected over
// plain NATS, with a traceparent header — and checks that containment, a
// service in another module, receives it intact, and that Jaeger shows one
// trace in which containment's span is the child of the SIEM's span.
func TestBreachCrossesServices(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	stack, err := localstack.Start(ctx, localstack.Options{NATS: true, Jaeger: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stack.Close() })
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", stack.Jaeger.OTLPHTTPEndpoint)
	t.Setenv("OTEL_SERVICE_NAME", "")

	var logs bytes.Buffer
	var logMu sync.Mutex
	siemTel, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: "test-siem"})
	if err != nil {
		t.Fatal(err)
	}
	containmentTel, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: "containment", LogOutput: lockedWriter{&logs, &logMu}})
	if err != nil {
		t.Fatal(err)
	}

	conn, err := natsconn.Connect(ctx, natsconn.Options{URL: stack.NATS.URL, Name: "containment-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := stream.EnsureTopology(ctx, conn.JS); err != nil {
		t.Fatal(err)
	}
	sink := received{ch: make(chan receivedBreach, 4)}
	cfg := &app.Config{BreachConcurrency: 2, Common: config.Common{ShutdownTimeout: 5 * time.Second}}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- app.RunWith(runCtx, &runner.Runtime{Service: "containment", Logger: containmentTel.Logger, TracerProvider: containmentTel.TracerProvider, NATS: conn}, cfg, sink)
	}()

	// The SIEM's side: a span, its context in the traceparent header, and a
	// structured-mode CloudEvent published on plain NATS.
	sent, err := events.New(events.BreachDetected, "/siem/splunk-prod", events.BreachDetectedData{
		Summary: "root token used from 203.0.113.7", Severity: events.SeverityCritical,
		DetectedAt: time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC), Indicators: []string{"ip:203.0.113.7"}, VaultCluster: "prod-eu",
	})
	if err != nil {
		t.Fatal(err)
	}
	body, err := events.Marshal(sent)
	if err != nil {
		t.Fatal(err)
	}
	spanCtx, span := siemTel.TracerProvider.Tracer("siem").Start(ctx, "send lockdown.breach.detected", trace.WithSpanKind(trace.SpanKindProducer))
	msg := nats.NewMsg(events.BreachDetected.Subject())
	propagation.TraceContext{}.Inject(spanCtx, propagation.HeaderCarrier(msg.Header))
	msg.Data = body
	plain, err := nats.Connect(stack.NATS.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if err := plain.PublishMsg(msg); err != nil {
		t.Fatal(err)
	}
	span.End()
	producer := span.SpanContext()

	var got receivedBreach
	select {
	case got = <-sink.ch:
	case <-time.After(30 * time.Second):
		t.Fatal("containment did not receive the breach")
	}

	t.Run("containment receives id, source, time and data intact", func(t *testing.T) {
		d := got.data
		if got.id != sent.ID() || got.source != "/siem/splunk-prod" {
			t.Fatalf("envelope: %+v", got)
		}
		if d.Summary != "root token used from 203.0.113.7" || d.Severity != events.SeverityCritical || d.VaultCluster != "prod-eu" ||
			!d.DetectedAt.Equal(time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)) || len(d.Indicators) != 1 {
			t.Fatalf("data: %+v", d)
		}
	})

	t.Run("the consumer's span continues the SIEM's trace", func(t *testing.T) {
		if got.traceID != producer.TraceID().String() {
			t.Fatalf("handler ran in trace %s, the SIEM's is %s", got.traceID, producer.TraceID())
		}
	})

	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	flush, cancelFlush := context.WithTimeout(ctx, 10*time.Second)
	defer cancelFlush()
	if err := siemTel.Shutdown(flush); err != nil {
		t.Fatal(err)
	}
	if err := containmentTel.Shutdown(flush); err != nil {
		t.Fatal(err)
	}

	t.Run("Jaeger shows one trace with containment's span a child of the SIEM's", func(t *testing.T) {
		trace := waitForTrace(t, ctx, stack.Jaeger.QueryURL, producer.TraceID().String(), 2)
		services := map[string]string{}
		for id, p := range trace.Processes {
			services[id] = p.ServiceName
		}
		var consumer *jaegerSpan
		for i, s := range trace.Spans {
			if services[s.ProcessID] == "containment" && s.OperationName == "process lockdown.breach.detected" {
				consumer = &trace.Spans[i]
			}
		}
		if consumer == nil {
			t.Fatalf("no containment consumer span in %+v", trace)
		}
		parent := ""
		for _, r := range consumer.References {
			if r.RefType == "CHILD_OF" {
				parent = r.SpanID
			}
		}
		if parent != producer.SpanID().String() {
			t.Fatalf("consumer span's parent is %q, want the SIEM's span %s", parent, producer.SpanID())
		}
	})

	t.Run("containment's log line carries the trace id", func(t *testing.T) {
		logMu.Lock()
		defer logMu.Unlock()
		if !bytes.Contains(logs.Bytes(), []byte(`"trace_id":"`+producer.TraceID().String()+`"`)) {
			t.Fatalf("no log line with the trace id:\n%s", logs.String())
		}
	})
}

type lockedWriter struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

type jaegerSpan struct {
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	ProcessID     string `json:"processID"`
	References    []struct {
		RefType string `json:"refType"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
}

type jaegerTrace struct {
	TraceID   string       `json:"traceID"`
	Spans     []jaegerSpan `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

// waitForTrace polls Jaeger's query API until the trace has at least
// minSpans spans: the exporter and the collector are asynchronous.
func waitForTrace(t *testing.T, ctx context.Context, queryURL, traceID string, minSpans int) jaegerTrace {
	t.Helper()
	u := fmt.Sprintf("%s/api/traces/%s", queryURL, url.PathEscape(traceID))
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			var body struct {
				Data []jaegerTrace `json:"data"`
			}
			err = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if err == nil && len(body.Data) == 1 && len(body.Data[0].Spans) >= minSpans {
				return body.Data[0]
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("trace %s did not reach Jaeger with %d spans (last: %s)", traceID, minSpans, last)
	return jaegerTrace{}
}
