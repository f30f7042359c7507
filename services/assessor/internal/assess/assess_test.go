package assess_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lockdown/lockdown/services/assessor/internal/assess"
	"github.com/lockdown/lockdown/services/assessor/internal/audit"
	"github.com/lockdown/lockdown/services/assessor/internal/store"
)

// fakeSource serves counts and links from memory: the assessment's
// decisions are pure logic over them (the store has its own tests against
// PostgreSQL).
type fakeSource struct {
	counts  []store.Count
	revoked []string
	links   map[string]string // accessor -> identity
}

func (f *fakeSource) Counts(context.Context, time.Time, time.Time) ([]store.Count, error) {
	return f.counts, nil
}
func (f *fakeSource) RevokedSince(context.Context, time.Time) ([]string, error) {
	return f.revoked, nil
}
func (f *fakeSource) Suspicious(context.Context, time.Time, time.Time, int) ([]store.Event, error) {
	return nil, nil
}
func (f *fakeSource) Reads(context.Context, []string, time.Time, time.Time, int) ([]store.Event, error) {
	return nil, nil
}
func (f *fakeSource) Tokens(_ context.Context, accessors []string) (map[string]store.Token, error) {
	out := map[string]store.Token{}
	for _, a := range accessors {
		id, ok := f.links[a]
		if !ok {
			out[a] = store.Token{Identity: a, Accessors: []store.DeviceAccessor{{Accessor: a}}}
			continue
		}
		tok := store.Token{Identity: id}
		for acc, other := range f.links {
			if other == id {
				tok.Accessors = append(tok.Accessors, store.DeviceAccessor{Device: "dev-" + acc, Accessor: acc})
			}
		}
		out[a] = tok
	}
	return out, nil
}

func (f *fakeSource) reads(accessor, entity, name, remote string, tenants ...string) {
	for _, t := range tenants {
		f.counts = append(f.counts, store.Count{Accessor: accessor, EntityID: entity, DisplayName: name, RemoteAddress: remote, Tenant: t, Kind: audit.KindRead, Count: 2})
	}
}

func (f *fakeSource) denied(accessor, entity, name, remote string, n int64) {
	f.counts = append(f.counts, store.Count{Accessor: accessor, EntityID: entity, DisplayName: name, RemoteAddress: remote, Kind: audit.KindDenied, Count: n})
}

func tenants(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("t%02d", i))
	}
	return out
}

const mailerEntity = "6b8f0c1e-3d0a-4c6e-9f1d-2a7e5b9c4d31"

func run(t *testing.T, src *fakeSource) assess.Result {
	t.Helper()
	res, err := assess.Assess(context.Background(), src, assess.Config{Window: time.Hour, WidespreadAbove: 10,
		ExcludeTenants: []string{"test-tenant-id"}, TrustedEntities: []string{mailerEntity}, ListLimit: 10}, "inc", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestAssess(t *testing.T) {
	t.Run("ten affected tenants are a limited breach and eleven a widespread one", func(t *testing.T) {
		for n, want := range map[int]string{10: "limited", 11: "widespread"} {
			src := &fakeSource{}
			src.reads("hmac:intruder", "", "token", "203.0.113.7", tenants(0, n)...)
			if res := run(t, src); res.Scope != want || len(res.AffectedTenants) != n {
				t.Errorf("%d tenants read: scope %s with %d affected, want %s", n, res.Scope, len(res.AffectedTenants), want)
			}
		}
	})
	t.Run("a quiet reader's tenants stay affected when a noisier actor stands out", func(t *testing.T) {
		src := &fakeSource{}
		src.reads("hmac:quiet", "", "token-app", "10.0.0.5", tenants(0, 6)...)
		src.reads("hmac:noisy", "", "token-probe", "203.0.113.7", "t20")
		src.denied("hmac:noisy", "", "token-probe", "203.0.113.7", 5)
		res := run(t, src)
		if want := append(tenants(0, 6), "t20"); !slices.Equal(res.AffectedTenants, want) {
			t.Fatalf("affected %v, want %v", res.AffectedTenants, want)
		}
		if lead := res.Actors[0]; lead.Key != "token:hmac:noisy" || !lead.Suspect || len(lead.Reasons) == 0 {
			t.Fatalf("the noisy actor does not lead as a suspect with reasons: %+v", lead)
		}
		if second := res.Actors[1]; second.Key != "token:hmac:quiet" || second.Suspect || len(second.Tenants) != 6 {
			t.Fatalf("the quiet reader is not listed with its tenants: %+v", second)
		}
	})
	t.Run("a trusted entity's reads are ordinary traffic, a token with the same display name is not trusted", func(t *testing.T) {
		src := &fakeSource{}
		src.reads("hmac:mailer", mailerEntity, "token-mailer", "10.0.0.9", "t29")
		src.reads("hmac:impostor", "", "token-mailer", "10.0.0.9", "t10", "t11")
		res := run(t, src)
		if !slices.Equal(res.AffectedTenants, []string{"t10", "t11"}) {
			t.Fatalf("affected %v, want the impostor's t10 and t11 only", res.AffectedTenants)
		}
	})
	t.Run("a trusted entity that is refused stands out and its reads count", func(t *testing.T) {
		src := &fakeSource{}
		src.reads("hmac:mailer", mailerEntity, "token-mailer", "10.0.0.9", "t29")
		src.denied("hmac:mailer", mailerEntity, "token-mailer", "10.0.0.9", 1)
		if res := run(t, src); !slices.Equal(res.AffectedTenants, []string{"t29"}) || !res.Actors[0].Trusted || !res.Actors[0].Suspect {
			t.Fatalf("affected %v, actors %+v", res.AffectedTenants, res.Actors)
		}
	})
	t.Run("one token's accessors from two audit devices are one actor", func(t *testing.T) {
		src := &fakeSource{links: map[string]string{"hmac:file-x": "hmac:file-x", "hmac:socket-x": "hmac:file-x"}}
		src.reads("hmac:file-x", "", "token", "10.0.0.1", "t01", "t02")
		src.reads("hmac:socket-x", "", "token", "10.0.0.1", "t03")
		src.denied("hmac:socket-x", "", "token", "10.0.0.1", 3)
		res := run(t, src)
		if len(res.Actors) != 1 {
			t.Fatalf("%d actors, want 1: %+v", len(res.Actors), res.Actors)
		}
		a := res.Actors[0]
		if a.Key != "token:hmac:file-x" || len(a.Accessors) != 2 || a.Denied != 3 || !slices.Equal(a.Tenants, []string{"t01", "t02", "t03"}) {
			t.Fatalf("actor %+v", a)
		}
	})
	t.Run("an entity's tokens are one actor whatever names and addresses they use", func(t *testing.T) {
		src := &fakeSource{}
		src.reads("hmac:a", "e-1", "token-a", "10.0.0.1", "t01")
		src.reads("hmac:b", "e-1", "token-b", "10.0.0.2", "t02")
		res := run(t, src)
		if len(res.Actors) != 1 || len(res.Actors[0].DisplayNames) != 2 || len(res.Actors[0].RemoteAddresses) != 2 || len(res.Actors[0].Accessors) != 2 {
			t.Fatalf("actors %+v", res.Actors)
		}
	})
	t.Run("a revoked token stands out and excluded tenants are never reported", func(t *testing.T) {
		src := &fakeSource{revoked: []string{"hmac:gone"}}
		src.reads("hmac:gone", "", "token", "10.0.0.1", "t01", "test-tenant-id")
		res := run(t, src)
		if !slices.Equal(res.AffectedTenants, []string{"t01"}) || !res.Actors[0].Suspect {
			t.Fatalf("affected %v, actors %+v", res.AffectedTenants, res.Actors)
		}
	})
}
