package rotation

import (
	"slices"
	"testing"

	"github.com/lockdown/lockdown/pkg/events/credentials"
)

func TestReplaced(t *testing.T) {
	t.Run("a job that never started has replaced nothing", func(t *testing.T) {
		if got, n := (Steps{}).Replaced(); len(got) != 0 || n != 0 {
			t.Fatalf("%v, %d", got, n)
		}
	})
	t.Run("a staged DKIM key is not a replaced one, nor API keys counted but not all destroyed", func(t *testing.T) {
		s := Steps{SSH: &SecretStep{}, SMTP: &SecretStep{}, DKIM: &SecretStep{}, APIKeys: &KeysStep{Found: 3}, Cutover: &Cutover{Published: true}}
		if got, n := s.Replaced(); !slices.Equal(got, []string{"ssh", "smtp"}) || n != 0 {
			t.Fatalf("%v, %d", got, n)
		}
	})
	t.Run("an active DKIM key and destroyed API keys are replaced", func(t *testing.T) {
		s := Steps{SSH: &SecretStep{}, APIKeys: &KeysStep{Found: 3, Done: true}, DKIM: &SecretStep{}, Cutover: &Cutover{Active: true}}
		if got, n := s.Replaced(); !slices.Equal(got, []string{"ssh", "api_keys", "dkim"}) || n != 3 {
			t.Fatalf("%v, %d", got, n)
		}
	})
}

func TestResults(t *testing.T) {
	t.Run("a job failed at its DKIM step reports every kind: done, failed, in the contract's order", func(t *testing.T) {
		s := Steps{SSH: &SecretStep{Fingerprint: "SHA256:x"}, SMTP: &SecretStep{}, APIKeys: &KeysStep{Found: 2, Done: true},
			DKIM: &SecretStep{Selector: "ld1"}, Cutover: &Cutover{Delegated: true}}
		got := s.Results("dkim", "REFUSED")
		want := []credentials.Result{
			{Kind: credentials.SSH, State: credentials.Rotated, Count: 1, Public: "SHA256:x"},
			{Kind: credentials.SMTP, State: credentials.Rotated, Count: 1},
			{Kind: credentials.APIKeys, State: credentials.Destroyed, Count: 2},
			{Kind: credentials.DKIM, State: credentials.Failed, Public: "ld1", Reason: "REFUSED"},
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%+v\nwant %+v", got, want)
		}
	})
	t.Run("a key waiting for the tenant's DNS is not failed, and not counted as replaced", func(t *testing.T) {
		s := Steps{DKIM: &SecretStep{Selector: "ld1"}, Cutover: &Cutover{Awaiting: true}}
		got := s.Results("", "")
		if got[3].State != credentials.AwaitingDNS || got[0].State != credentials.Pending {
			t.Fatalf("%+v", got)
		}
		if r, _ := s.Replaced(); len(r) != 0 {
			t.Fatalf("replaced %v", r)
		}
	})
}
