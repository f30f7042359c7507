package failpoint_test

import (
	"slices"
	"testing"

	"github.com/lockdown/lockdown/pkg/platform/failpoint"
)

func TestParse(t *testing.T) {
	t.Run("names and counts are read, an empty list arms nothing", func(t *testing.T) {
		s, err := failpoint.Parse(" a , b:3 ,")
		if err != nil {
			t.Fatal(err)
		}
		got := s.Armed()
		slices.Sort(got)
		if !slices.Equal(got, []string{"a", "b"}) {
			t.Fatalf("armed %v", got)
		}
		empty, err := failpoint.Parse("")
		if err != nil || len(empty.Armed()) != 0 {
			t.Fatalf("empty: %v %v", empty.Armed(), err)
		}
	})
	t.Run("a count that is not a positive number is refused", func(t *testing.T) {
		for _, bad := range []string{"a:0", "a:x", "a:-1"} {
			if _, err := failpoint.Parse(bad); err == nil {
				t.Errorf("%q accepted", bad)
			}
		}
	})
	t.Run("an unarmed point and a nil set do nothing", func(t *testing.T) {
		s, _ := failpoint.Parse("elsewhere")
		s.Hit("here")
		var none *failpoint.Set
		none.Hit("here")
	})
	t.Run("an armed point fires only on its Nth hit", func(t *testing.T) {
		s, _ := failpoint.Parse("p:3")
		s.Hit("p")
		s.Hit("p")
		// The third hit would kill the test binary: a child process covers
		// firing (the crash tests of cmd/lockdown arm real services).
	})
}
