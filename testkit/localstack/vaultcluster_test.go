package localstack_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/testkit/localstack"
)

func TestVaultCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.Options{})
	began := time.Now()
	c, err := s.StartVaultCluster(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("3-node raft cluster up in %v", time.Since(began).Round(time.Millisecond))
	if len(c.Nodes) != 3 || c.RootToken == "" || len(c.UnsealKeys) != localstack.VaultShares {
		t.Fatalf("cluster has %d nodes, root token set %t, %d unseal keys", len(c.Nodes), c.RootToken != "", len(c.UnsealKeys))
	}

	client := func(t *testing.T, addr string) *vault.Client {
		t.Helper()
		api, err := c.Client(addr)
		if err != nil {
			t.Fatal(err)
		}
		return api
	}
	// roles asks every node for its health: the active node's address and
	// the standbys'. Sealed nodes are in neither.
	roles := func(t *testing.T) (active []string, standbys []string) {
		t.Helper()
		for _, n := range c.Nodes {
			h, err := client(t, n.Addr).Sys().HealthWithContext(ctx)
			if err != nil {
				t.Fatalf("%s health: %v", n.Name, err)
			}
			switch {
			case h.Sealed:
			case h.Standby:
				standbys = append(standbys, n.Addr)
			default:
				active = append(active, n.Addr)
			}
		}
		return active, standbys
	}
	// oneActive checks, through the API, that exactly one node is active,
	// that every other node is an unsealed standby following it, and that
	// Active agrees.
	oneActive := func(t *testing.T) string {
		t.Helper()
		active, standbys := roles(t)
		if len(active) != 1 || len(standbys) != len(c.Nodes)-1 {
			t.Fatalf("active %v, standbys %v", active, standbys)
		}
		for _, addr := range standbys {
			l, err := client(t, addr).Sys().LeaderWithContext(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if l.IsSelf || l.LeaderAddress != active[0] {
				t.Fatalf("standby %s: is_self %t, leader %q; active is %s", addr, l.IsSelf, l.LeaderAddress, active[0])
			}
		}
		got, err := c.Active(ctx)
		if err != nil || got != active[0] {
			t.Fatalf("Active() = %q, %v; health says %s", got, err, active[0])
		}
		return active[0]
	}
	// waitFor polls cond every 100ms until it holds or d passes.
	waitFor := func(t *testing.T, d time.Duration, what string, cond func() error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		began := time.Now()
		for {
			err := cond()
			if err == nil {
				t.Logf("%s after %v", what, time.Since(began).Round(time.Millisecond))
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s: not within %v: %v", what, d, err)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}

	t.Run("one node is active and the others are standbys", func(t *testing.T) {
		active := oneActive(t)
		st, err := client(t, active).Sys().RaftAutopilotStateWithContext(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !st.Healthy || len(st.Voters) != 3 {
			t.Fatalf("autopilot: healthy %t, voters %v, non-voters %v", st.Healthy, st.Voters, st.NonVoters)
		}
		for _, n := range c.Nodes {
			ss, err := client(t, n.Addr).Sys().SealStatusWithContext(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ss.Type != "shamir" || ss.N != localstack.VaultShares || ss.T != localstack.VaultThreshold || ss.StorageType != "raft" {
				t.Errorf("%s: seal type %s, %d/%d shares, storage %s", n.Name, ss.Type, ss.T, ss.N, ss.StorageType)
			}
		}
	})

	t.Run("a standby refuses sys/seal and a restart brings it back sealed", func(t *testing.T) {
		_, standbys := roles(t)
		if len(standbys) == 0 {
			t.Fatal("no standby")
		}
		standby := standbys[0]
		err := client(t, standby).Sys().SealWithContext(ctx)
		if err == nil || !strings.Contains(err.Error(), "standby") {
			t.Fatalf("seal on standby %s: %v, want a refusal mentioning standby", standby, err)
		}
		began := time.Now()
		if err := c.Restart(ctx, standby); err != nil {
			t.Fatal(err)
		}
		t.Logf("restart answered after %v", time.Since(began).Round(time.Millisecond))
		ss, err := client(t, standby).Sys().SealStatusWithContext(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !ss.Sealed || !ss.Initialized {
			t.Fatalf("restarted standby: sealed %t, initialized %t", ss.Sealed, ss.Initialized)
		}
		// The rest of the cluster carries on with the fenced node sealed.
		if addr, err := c.Active(ctx); err != nil || addr == "" || addr == standby {
			t.Fatalf("Active() = %q, %v", addr, err)
		}
		// With one of three raft voters sealed, losing another would cost
		// quorum: the key holders unseal the fenced node again before the
		// next incident.
		if err := c.UnsealAll(ctx); err != nil {
			t.Fatal(err)
		}
		oneActive(t)
	})

	t.Run("when the active node seals, a standby takes over", func(t *testing.T) {
		old := oneActive(t)
		if err := client(t, old).Sys().SealWithContext(ctx); err != nil {
			t.Fatalf("seal active %s: %v", old, err)
		}
		waitFor(t, 60*time.Second, "a standby took over", func() error {
			addr, err := c.Active(ctx)
			switch {
			case err != nil:
				return err
			case addr == "":
				return errors.New("no active node")
			case addr == old:
				return errors.New("the sealed node is still active")
			}
			return nil
		})
		ss, err := client(t, old).Sys().SealStatusWithContext(ctx)
		if err != nil || !ss.Sealed {
			t.Fatalf("old active node: %+v, %v", ss, err)
		}
		active, standbys := roles(t)
		if len(active) != 1 || len(standbys) != 1 {
			t.Fatalf("after failover: active %v, standbys %v", active, standbys)
		}
	})

	t.Run("UnsealAll brings the cluster back", func(t *testing.T) {
		began := time.Now()
		if err := c.UnsealAll(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("UnsealAll took %v", time.Since(began).Round(time.Millisecond))
		active := oneActive(t)
		// The cluster serves requests again: a write on the active node.
		if err := client(t, active).Sys().MountWithContext(ctx, "probe", &vault.MountInput{Type: "kv"}); err != nil {
			t.Fatalf("mount on the active node: %v", err)
		}
	})

	t.Run("after Close no port answers", func(t *testing.T) {
		ports := c.Ports()
		if len(ports) != 6 {
			t.Fatalf("ports %v", ports)
		}
		began := time.Now()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("Close took %v", time.Since(began).Round(time.Millisecond))
		var busy []string
		for _, p := range ports {
			if !localstack.PortFree(p) {
				busy = append(busy, fmt.Sprint(p))
			}
		}
		if len(busy) > 0 {
			t.Fatalf("ports still answering: %s", strings.Join(busy, ", "))
		}
	})
}
