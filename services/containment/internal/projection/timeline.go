package projection

import (
	"cmp"
	"slices"

	"github.com/lockdown/lockdown/services/containment/internal/reporting"
)

// timeline is one incident's timeline as the projector has read it, kept
// between rebuilds so that each reads only the entries recorded since the
// last (Source.Snapshot's cursor).
type timeline struct {
	entries []reporting.Entry
	keys    map[entryKey]struct{}
	cursor  string
}

// entryKey is what makes a timeline entry one (the table's key).
type entryKey struct {
	typ string
	id  string
}

// add merges entries read since the cursor (in order; some may be known
// already) and moves the cursor; it returns the whole timeline in order.
func (t *timeline) add(read []reporting.Entry, cursor string) []reporting.Entry {
	if t.keys == nil {
		t.keys = map[entryKey]struct{}{}
	}
	before := len(t.entries)
	for _, e := range read {
		k := entryKey{string(e.Type), e.EventID}
		if _, ok := t.keys[k]; ok {
			continue
		}
		t.keys[k] = struct{}{}
		t.entries = append(t.entries, e)
	}
	// Usually every new entry is later than the last known one; an event
	// stamped earlier but recorded later is put in its place.
	if before > 0 && len(t.entries) > before && less(t.entries[before], t.entries[before-1]) {
		slices.SortStableFunc(t.entries, order)
	}
	t.cursor = cursor
	return t.entries
}

// order is the timeline's order: the Source's (time, then event id).
func order(a, b reporting.Entry) int {
	return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.EventID, b.EventID))
}

func less(a, b reporting.Entry) bool { return order(a, b) < 0 }
