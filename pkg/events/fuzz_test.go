package events_test

import (
	"testing"

	"github.com/lockdown/lockdown/pkg/events"
)

// FuzzDecode feeds arbitrary payloads and headers to the decoder and the
// typed data decoder: they may refuse, never panic, and whatever they
// accept must be a catalog event that re-encodes.
func FuzzDecode(f *testing.F) {
	ev, _ := events.New(events.BreachDetected, "/siem", events.BreachDetectedData{Summary: "s", Severity: "low"})
	good, _ := events.Marshal(ev)
	f.Add(good, "", "")
	f.Add([]byte(`{"summary":"s","severity":"high"}`), "1.0", events.BreachDetected.Type())
	f.Add([]byte(`{"specversion":"1.0","id":"x","type":"io.lockdown.deadletter.v1","source":"/a","data":{"original_data":"!!"}}`), "", "")
	f.Add([]byte(`{"specversion":"1.0","id":"x","type":"io.lockdown.breach.detected.v1","source":"/a","data_base64":"e30="}`), "", "")
	f.Add([]byte(`null`), "", "")
	f.Fuzz(func(t *testing.T, body []byte, specversion, ceType string) {
		var headers map[string][]string
		if specversion != "" {
			headers = map[string][]string{"ce-specversion": {specversion}, "ce-type": {ceType}, "ce-id": {"id"}, "ce-source": {"/f"}}
		}
		got, spec, err := events.Decode(headers, body)
		if err != nil {
			return
		}
		if got.Type() != spec.Type() {
			t.Fatalf("decoded type %s but spec %s", got.Type(), spec.Type())
		}
		if _, err := events.Marshal(got); err != nil {
			t.Fatalf("accepted event does not re-encode: %v", err)
		}
		switch spec.Name {
		case events.BreachDetected:
			_, _ = events.DataAs[events.BreachDetectedData](got)
		case events.DeadLetter:
			_, _ = events.DataAs[events.DeadLetterData](got)
		case events.AssessmentCompleted:
			_, _ = events.DataAs[events.AssessmentCompletedData](got)
		}
	})
}
