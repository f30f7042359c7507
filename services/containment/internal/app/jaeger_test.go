package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

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

// parentOf returns the CHILD_OF parent span id of a service's span.
func (tr jaegerTrace) parentOf(service, operation string) string {
	for _, s := range tr.Spans {
		if tr.Processes[s.ProcessID].ServiceName != service || s.OperationName != operation {
			continue
		}
		for _, r := range s.References {
			if r.RefType == "CHILD_OF" {
				return r.SpanID
			}
		}
	}
	return ""
}

// waitForTrace polls Jaeger's query API until the trace has at least
// minSpans spans: exporters and the collector are asynchronous.
func waitForTrace(t *testing.T, ctx context.Context, queryURL, traceID string, minSpans int) jaegerTrace {
	t.Helper()
	u := fmt.Sprintf("%s/api/traces/%s", queryURL, url.PathEscape(traceID))
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			var body struct {
				Data []jaegerTrace `json:"data"`
			}
			err = json.NewDecoder(resp.Body).Decode(&body)
			_ = resp.Body.Close()
			if err == nil && len(body.Data) == 1 && len(body.Data[0].Spans) >= minSpans {
				return body.Data[0]
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("trace %s did not reach Jaeger with %d spans", traceID, minSpans)
	return jaegerTrace{}
}

func jsOf(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
