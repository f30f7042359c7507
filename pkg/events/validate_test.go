package events_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/lockdown/lockdown/pkg/events"
)

func TestIDs(t *testing.T) {
	t.Run("tenant ids are DNS labels: a slash, a newline, an upper case or a leading dash is refused", func(t *testing.T) {
		for _, ok := range []string{"tenant-001", "acme", "a", "test-tenant-id", strings.Repeat("a", 63)} {
			if err := events.ValidTenantID(ok); err != nil {
				t.Errorf("%q refused: %v", ok, err)
			}
		}
		for _, bad := range []string{"", "../other", "acme/ssh", "acme\nssh-ed25519 AAAA", "Acme", "-acme", "a b", strings.Repeat("a", 64)} {
			if err := events.ValidTenantID(bad); !errors.Is(err, events.ErrInvalidID) {
				t.Errorf("%q accepted", bad)
			}
		}
	})
	t.Run("external event ids take no slash, space or control character", func(t *testing.T) {
		for _, ok := range []string{"0b6e2f3a-1111-4222-8333-944445555666", "siem:alert.42", "a@b"} {
			if err := events.ValidExternalID(ok); err != nil {
				t.Errorf("%q refused: %v", ok, err)
			}
		}
		for _, bad := range []string{"", "inc/vault.unsealed", "a b", "x\n", strings.Repeat("a", 129)} {
			if err := events.ValidExternalID(bad); !errors.Is(err, events.ErrInvalidID) {
				t.Errorf("%q accepted", bad)
			}
		}
	})
}

func TestReviewValidate(t *testing.T) {
	long := string(make([]byte, 5000))
	for name, d := range map[string]events.IncidentReviewData{
		"nothing to record": {IncidentID: "i", RequestedBy: "a"},
		"no author":         {IncidentID: "i", RootCause: "x"},
		"a huge root cause": {IncidentID: "i", RequestedBy: "a", RootCause: long},
		"an empty item":     {IncidentID: "i", RequestedBy: "a", LessonsLearned: []string{" "}},
	} {
		if err := d.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := (events.IncidentReviewData{IncidentID: "i", RequestedBy: "a", Final: true}).Validate(); err != nil {
		t.Errorf("marking final alone: %v", err)
	}
}
