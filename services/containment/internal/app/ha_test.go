package app_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/services/containment/internal/app"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// clusterFence fences a node the way a deployment's fence command does —
// it restarts the node's process, and a Shamir-sealed node comes back
// sealed. With ineffectiveFirst, the first fence of each node does nothing
// (a restart that did not happen), as when an orchestrator is slow.
type clusterFence struct {
	cluster          *localstack.VaultCluster
	ineffectiveFirst bool

	mu    sync.Mutex
	calls map[string]int
}

func (f *clusterFence) Fence(ctx context.Context, node string) error {
	f.mu.Lock()
	f.calls[node]++
	n := f.calls[node]
	f.mu.Unlock()
	if f.ineffectiveFirst && n == 1 {
		return nil
	}
	return f.cluster.Restart(ctx, node)
}

func (f *clusterFence) count(node string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[node]
}

// TestContainmentHA seals a real 3-node Vault raft cluster: the active node
// through the API, the standbys (which Vault refuses to seal) by fencing,
// and a standby that becomes active during containment through the API.
func TestContainmentHA(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.Options{NATS: true, NATSAuth: true, Postgres: true})
	cluster, err := s.StartVaultCluster(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, n := range cluster.Nodes {
		addrs = append(addrs, n.Addr)
	}
	siem, _ := connectAs(t, s, events.UserSIEM)
	pool, err := pgxpool.New(ctx, s.Postgres.URL)
	must(t, err)
	defer pool.Close()

	run := func(t *testing.T, fence *clusterFence, fenceRetry time.Duration) events.VaultSealedData {
		t.Helper()
		c := startContainment(t, s, addrs, &cluster.LockdownTokens, fence, func(cfg *app.Config) { cfg.FenceRetry = fenceRetry })
		defer c.stop()
		ev := newBreach(t, "HA breach")
		publishAsSIEM(t, siem, ev, nil)
		_, opened := waitEvent(t, s, events.IncidentOpened, 10*time.Second, func(d events.IncidentOpenedData) bool { return d.BreachEventID == ev.ID() })
		_, sealedData := waitEvent(t, s, events.VaultSealed, 60*time.Second, func(d events.VaultSealedData) bool { return d.IncidentID == opened.IncidentID })
		for _, a := range addrs {
			if !sealed(t, a) {
				t.Errorf("%s reports unsealed after vault.sealed", a)
			}
		}
		return sealedData
	}
	methods := func(d events.VaultSealedData) map[string]string {
		out := map[string]string{}
		for _, n := range d.Nodes {
			out[n.Address] = n.Method
		}
		return out
	}

	t.Run("every node ends sealed: the active by the API, the standbys by the fence", func(t *testing.T) {
		active, err := cluster.Active(ctx)
		if err != nil || active == "" {
			t.Fatalf("no active node: %v", err)
		}
		fence := &clusterFence{cluster: cluster, calls: map[string]int{}}
		got := methods(run(t, fence, 15*time.Second))
		for _, a := range addrs {
			want := "fence"
			if a == active {
				want = "api"
			}
			if got[a] != want {
				t.Errorf("%s sealed by %q, want %q (active was %s)", a, got[a], want, active)
			}
		}
		if fence.count(active) != 0 {
			t.Errorf("the active node was fenced")
		}
		must(t, cluster.UnsealAll(ctx))
		resolveOpen(t, s)
	})

	t.Run("a standby that becomes active during containment is sealed too", func(t *testing.T) {
		active, err := cluster.Active(ctx)
		if err != nil || active == "" {
			t.Fatalf("no active node: %v", err)
		}
		// The first fence of each standby does nothing, so when the
		// active node seals, a standby takes over: containment must seal
		// the new active node through the API, and fence the last one
		// again once FenceRetry has passed.
		fence := &clusterFence{cluster: cluster, ineffectiveFirst: true, calls: map[string]int{}}
		got := methods(run(t, fence, 2*time.Second))
		api, fenced := 0, 0
		for _, a := range addrs {
			switch got[a] {
			case "api":
				api++
			case "fence":
				fenced++
			}
		}
		if got[active] != "api" || api != 2 || fenced != 1 {
			t.Fatalf("methods %v (active was %s): want the old and the new active sealed by the API, one node fenced", got, active)
		}
		must(t, cluster.UnsealAll(ctx))
		resolveOpen(t, s)
	})

	t.Run("the key holders unseal the other nodes first: access is revoked through the active one while the first stays sealed", func(t *testing.T) {
		fence := &clusterFence{cluster: cluster, calls: map[string]int{}}
		c := startContainment(t, s, addrs, &cluster.LockdownTokens, fence, nil)
		defer c.stop()
		ev := newBreach(t, "HA breach, holders reach the other nodes first")
		publishAsSIEM(t, siem, ev, nil)
		_, opened := waitEvent(t, s, events.IncidentOpened, 10*time.Second, func(d events.IncidentOpenedData) bool { return d.BreachEventID == ev.ID() })
		waitEvent(t, s, events.VaultSealed, 60*time.Second, func(d events.VaultSealedData) bool { return d.IncidentID == opened.IncidentID })
		must(t, cluster.UnsealNodes(ctx, addrs[1:]...))
		_, revoked := waitEvent(t, s, events.AccessRevoked, 60*time.Second, func(d events.AccessRevokedData) bool { return d.IncidentID == opened.IncidentID })
		if !sealed(t, addrs[0]) {
			t.Fatal("the first node was unsealed: the test proves nothing")
		}
		if len(revoked.TokensReplaced) != 3 {
			t.Errorf("access.revoked %+v", revoked)
		}
		must(t, cluster.UnsealAll(ctx))
		resolveOpen(t, s)
	})
}
