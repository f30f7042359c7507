package rotation

import (
	"encoding/json"
	"reflect"
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
		s := Steps{Secrets: map[credentials.Kind]*SecretStep{credentials.SSH: {}, credentials.SMTP: {}}, DKIM: &SecretStep{}, APIKeys: &KeysStep{Found: 3}, Cutover: &Cutover{Published: true}}
		if got, n := s.Replaced(); !slices.Equal(got, []string{"ssh", "smtp"}) || n != 0 {
			t.Fatalf("%v, %d", got, n)
		}
	})
	t.Run("an active DKIM key and destroyed API keys are replaced", func(t *testing.T) {
		s := Steps{Secrets: map[credentials.Kind]*SecretStep{credentials.SSH: {}}, APIKeys: &KeysStep{Found: 3, Done: true}, DKIM: &SecretStep{}, Cutover: &Cutover{Active: true}}
		if got, n := s.Replaced(); !slices.Equal(got, []string{"ssh", "api_keys", "dkim"}) || n != 3 {
			t.Fatalf("%v, %d", got, n)
		}
	})
}

func TestResults(t *testing.T) {
	t.Run("a job failed at its DKIM step reports every kind: done, failed, in the contract's order", func(t *testing.T) {
		s := Steps{Secrets: map[credentials.Kind]*SecretStep{credentials.SSH: {Fingerprint: "SHA256:x"}, credentials.SMTP: {}}, APIKeys: &KeysStep{Found: 2, Done: true},
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

func TestStepsJSON(t *testing.T) {
	t.Run("steps stored before the kinds moved to packages read back the same", func(t *testing.T) {
		stored := `{"ssh":{"version":2,"fingerprint":"SHA256:x"},"smtp":{"version":3},"dkim":{"version":1,"selector":"ld2","record":"v=DKIM1; p=AA"},` +
			`"api_keys":{"found":2,"done":true},"dkim_cutover":{"delegated":true,"published":true,"active":true}}`
		var s Steps
		if err := json.Unmarshal([]byte(stored), &s); err != nil {
			t.Fatal(err)
		}
		if s.Secret(credentials.SSH).Fingerprint != "SHA256:x" || s.Secret(credentials.SMTP).Version != 3 || s.DKIM.Selector != "ld2" ||
			!s.APIKeys.Done || !s.Cutover.Active {
			t.Fatalf("%+v", s)
		}
		again, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var a, b map[string]any
		if err := json.Unmarshal([]byte(stored), &a); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(again, &b); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("written back as %s", again)
		}
	})
}

func TestAwaitingDNSPath(t *testing.T) {
	raw, err := json.Marshal(Steps{Cutover: &Cutover{Awaiting: true}})
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if p := AwaitingDNSPath(); len(p) != 2 || doc[p[0]][p[1]] != true {
		t.Fatalf("the store queries %v; the steps are stored as %s", AwaitingDNSPath(), raw)
	}
}
