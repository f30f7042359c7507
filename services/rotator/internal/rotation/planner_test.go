package rotation

import (
	"context"
	"testing"
)

// directoryOnly is a Store whose directory holds tenants; plan reads
// nothing else (any other call panics on the nil Store).
type directoryOnly struct {
	Store
	tenants []string
}

func (d directoryOnly) Tenants(context.Context) ([]string, error) { return d.tenants, nil }

func TestPlanAffected(t *testing.T) {
	store := directoryOnly{tenants: []string{"tenant-1", "tenant-2", "tenant-3"}}
	affected := func(t *testing.T, jobs []Job) map[string]bool {
		t.Helper()
		out := map[string]bool{}
		for _, j := range jobs {
			out[j.TenantID] = j.Affected
		}
		return out
	}
	t.Run("with the assessment's whole list only the tenants it names are affected", func(t *testing.T) {
		jobs, err := plan(context.Background(), store, PolicyAll, []string{"tenant-2"}, false)
		if err != nil {
			t.Fatal(err)
		}
		if got := affected(t, jobs); len(got) != 3 || got["tenant-1"] || !got["tenant-2"] || got["tenant-3"] {
			t.Fatalf("affected %v, want tenant-2 alone of three", got)
		}
	})
	t.Run("with the list cut every tenant is affected: the readers past the cut are not known", func(t *testing.T) {
		jobs, err := plan(context.Background(), store, PolicyAll, []string{"tenant-1"}, true)
		if err != nil {
			t.Fatal(err)
		}
		if got := affected(t, jobs); len(got) != 3 || !got["tenant-1"] || !got["tenant-2"] || !got["tenant-3"] {
			t.Fatalf("affected %v, want all three", got)
		}
	})
}
