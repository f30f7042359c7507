package projection

import (
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/services/containment/internal/reporting"
)

func TestTimelineAdd(t *testing.T) {
	at := time.Date(2026, 12, 3, 1, 0, 0, 0, time.UTC)
	entry := func(id string, sec int) reporting.Entry {
		return reporting.Entry{EventID: id, Type: events.NotificationSent, Time: at.Add(time.Duration(sec) * time.Second)}
	}
	ids := func(es []reporting.Entry) string {
		s := ""
		for _, e := range es {
			s += e.EventID
		}
		return s
	}
	var tl timeline
	if got := ids(tl.add([]reporting.Entry{entry("a", 1), entry("b", 2)}, "10")); got != "ab" {
		t.Fatalf("first read: %q", got)
	}
	t.Run("an entry read again is kept once", func(t *testing.T) {
		if got := ids(tl.add([]reporting.Entry{entry("b", 2), entry("c", 3)}, "12")); got != "abc" {
			t.Fatalf("got %q, want abc", got)
		}
	})
	t.Run("an entry stamped earlier but recorded later takes its place", func(t *testing.T) {
		if got := ids(tl.add([]reporting.Entry{entry("x", 0), entry("d", 4)}, "13")); got != "xabcd" {
			t.Fatalf("got %q, want xabcd", got)
		}
	})
	t.Run("the same id of another type is another entry", func(t *testing.T) {
		other := entry("d", 5)
		other.Type = events.RotationTenantCompleted
		if got := ids(tl.add([]reporting.Entry{other}, "14")); got != "xabcdd" {
			t.Fatalf("got %q, want xabcdd", got)
		}
	})
	if tl.cursor != "14" {
		t.Fatalf("cursor %q, want the last read's", tl.cursor)
	}
}
