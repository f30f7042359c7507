package reporting_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/services/containment/internal/reporting"
)

func TestReview(t *testing.T) {
	at := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	entry := func(i int, d events.IncidentReviewData) reporting.Entry {
		d.IncidentID = "inc"
		raw, _ := json.Marshal(d)
		return reporting.Entry{EventID: string(rune('a' + i)), Type: events.IncidentReviewRequested, Time: at.Add(time.Duration(i) * time.Minute), Data: raw}
	}
	r := reporting.Build(reporting.Incident{ID: "inc"}, []reporting.Entry{
		entry(0, events.IncidentReviewData{RequestedBy: "alice", RootCause: "leaked token", LessonsLearned: []string{"l1", "l2"}}),
		entry(1, events.IncidentReviewData{RequestedBy: "bob", PreventiveMeasures: []string{"m1"}}),
		entry(2, events.IncidentReviewData{RequestedBy: "carol", Final: true}),
		entry(3, events.IncidentReviewData{RequestedBy: "mallory", RootCause: "nothing happened"}),
	}, "resolved", "", at)

	t.Run("given fields replace, empty ones keep what was recorded", func(t *testing.T) {
		if r.RootCause != "leaked token" || !slices.Equal(r.LessonsLearned, []string{"l1", "l2"}) || !slices.Equal(r.PreventiveMeasures, []string{"m1"}) {
			t.Fatalf("%q %v %v", r.RootCause, r.LessonsLearned, r.PreventiveMeasures)
		}
	})
	t.Run("a change after the review is final is listed, ignored", func(t *testing.T) {
		if r.ReviewState != report.ReviewFinal || len(r.ReviewHistory) != 4 || !r.ReviewHistory[3].Ignored || r.ReviewHistory[2].Ignored || r.ReviewHistory[3].By != "mallory" {
			t.Fatalf("%s %+v", r.ReviewState, r.ReviewHistory)
		}
	})
	t.Run("without a review the report is a draft with the root cause pending", func(t *testing.T) {
		empty := reporting.Build(reporting.Incident{ID: "inc"}, nil, "resolved", "", at)
		if empty.ReviewState != report.ReviewDraft || empty.RootCause != report.RootCausePending || empty.ReviewHistory == nil {
			t.Fatalf("%+v", empty)
		}
	})
}
