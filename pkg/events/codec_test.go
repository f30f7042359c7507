package events_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
)

func breach() events.BreachDetectedData {
	return events.BreachDetectedData{Summary: "token used from unknown ASN", Severity: events.SeverityCritical,
		Indicators: []string{"asn:64512"}}
}

func TestCodec(t *testing.T) {
	t.Run("a structured event round-trips with id, type, source, time and data intact", func(t *testing.T) {
		ev, err := events.New(events.BreachDetected, "/siem/splunk", breach())
		if err != nil {
			t.Fatal(err)
		}
		body, err := events.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		var raw map[string]any
		if err := json.Unmarshal(body, &raw); err != nil {
			t.Fatal(err)
		}
		if raw["specversion"] != "1.0" || raw["datacontenttype"] != "application/json" {
			t.Fatalf("not structured CloudEvents JSON: %s", body)
		}
		got, spec, err := events.Decode(nil, body)
		if err != nil {
			t.Fatal(err)
		}
		if spec.Name != events.BreachDetected || got.ID() != ev.ID() || got.Source() != "/siem/splunk" || !got.Time().Equal(ev.Time()) {
			t.Fatalf("envelope changed: %v", got)
		}
		data, err := events.DataAs[events.BreachDetectedData](got)
		if err != nil {
			t.Fatal(err)
		}
		if data.Summary != breach().Summary || data.Severity != events.SeverityCritical || data.Indicators[0] != "asn:64512" {
			t.Fatalf("data changed: %+v", data)
		}
		if !data.DetectedAt.Equal(ev.Time()) {
			t.Fatalf("detected_at should default to the event time %v, got %v", ev.Time(), data.DetectedAt)
		}
	})

	t.Run("a binary-mode message with ce- headers decodes", func(t *testing.T) {
		headers := map[string][]string{
			"Ce-Specversion": {"1.0"}, "ce-type": {events.BreachDetected.Type()}, "ce-source": {"/siem/x"},
			"ce-id": {"b-1"}, "ce-time": {"2026-11-25T10:00:00Z"}, "content-type": {"application/json"},
			"ce-traceparent": {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		}
		ev, _, err := events.Decode(headers, []byte(`{"summary":"s","severity":"high","detected_at":"2026-11-25T09:59:00Z"}`))
		if err != nil {
			t.Fatal(err)
		}
		if ev.ID() != "b-1" || ev.Source() != "/siem/x" || ev.Extensions()["traceparent"] == nil {
			t.Fatalf("binary attributes lost: %v", ev)
		}
		data, err := events.DataAs[events.BreachDetectedData](ev)
		if err != nil {
			t.Fatal(err)
		}
		if want := time.Date(2026, 11, 25, 9, 59, 0, 0, time.UTC); !data.DetectedAt.Equal(want) {
			t.Fatalf("detected_at = %v, want %v", data.DetectedAt, want)
		}
	})

	t.Run("bad payloads are refused with the sentinel that names the problem", func(t *testing.T) {
		cases := map[string]struct {
			body string
			want error
		}{
			"not JSON":          {`hello`, events.ErrMalformed},
			"truncated JSON":    {`{"specversion":"1.0",`, events.ErrMalformed},
			"missing id":        {`{"specversion":"1.0","type":"io.lockdown.breach.detected.v1","source":"/x"}`, events.ErrMalformed},
			"unknown type":      {`{"specversion":"1.0","id":"1","type":"com.example.other","source":"/x"}`, events.ErrUnknownType},
			"wrong specversion": {`{"specversion":"0.1","id":"1","type":"io.lockdown.breach.detected.v1","source":"/x"}`, events.ErrMalformed},
		}
		for name, c := range cases {
			if _, _, err := events.Decode(nil, []byte(c.body)); !errors.Is(err, c.want) {
				t.Errorf("%s: got %v, want %v", name, err, c.want)
			}
		}
	})

	t.Run("invalid breach data reports every problem together", func(t *testing.T) {
		_, err := events.New(events.BreachDetected, "/x", events.BreachDetectedData{Severity: "catastrophic"})
		if !errors.Is(err, events.ErrInvalidData) || !strings.Contains(err.Error(), "summary is required") || !strings.Contains(err.Error(), "catastrophic") {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("data of another event's struct is refused", func(t *testing.T) {
		if _, err := events.New(events.BreachDetected, "/x", events.IncidentOpenedData{}); !errors.Is(err, events.ErrWrongType) {
			t.Fatalf("got %v", err)
		}
		ev, _ := events.New(events.BreachDetected, "/x", breach())
		if _, err := events.DataAs[events.IncidentOpenedData](ev); !errors.Is(err, events.ErrWrongType) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestCatalog(t *testing.T) {
	t.Run("every event has a v1 type, a lockdown subject, a stream and a schema", func(t *testing.T) {
		streams := map[string]bool{}
		for _, s := range events.Streams() {
			streams[s.Name] = true
		}
		seen := map[string]bool{}
		for _, s := range events.Catalog() {
			if !strings.HasPrefix(s.Type(), "io.lockdown.") || !strings.HasSuffix(s.Type(), ".v1") {
				t.Errorf("%s: type %s", s.Name, s.Type())
			}
			if seen[s.Subject()] {
				t.Errorf("%s: subject %s used twice", s.Name, s.Subject())
			}
			seen[s.Subject()] = true
			if !streams[s.Stream] {
				t.Errorf("%s: stream %q is not declared", s.Name, s.Stream)
			}
			if len(s.Publishers) == 0 || len(s.Consumers) == 0 || s.Description == "" {
				t.Errorf("%s: producer, consumers and description are required", s.Name)
			}
			schema := s.JSONSchema()
			if schema["type"] != "object" || len(schema["properties"].(map[string]any)) == 0 {
				t.Errorf("%s: empty schema", s.Name)
			}
		}
	})
	t.Run("every consumer reads events of its own stream", func(t *testing.T) {
		for _, c := range events.Consumers() {
			for _, n := range c.Events {
				if s := events.SpecOf(n); s.Stream != c.Stream {
					t.Errorf("%s reads %s from %s, but it is stored in %s", c.Durable, n, c.Stream, s.Stream)
				}
			}
		}
	})
	t.Run("the backoff grows exponentially up to its cap", func(t *testing.T) {
		c := events.ConsumerSpec{RetryBase: time.Second, RetryMax: 5 * time.Second}
		want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
		for i, w := range want {
			if got := c.Backoff(uint64(i + 1)); got != w {
				t.Errorf("delivery %d: %v, want %v", i+1, got, w)
			}
		}
	})
}
