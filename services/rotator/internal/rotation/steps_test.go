package rotation

import (
	"slices"
	"testing"
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
