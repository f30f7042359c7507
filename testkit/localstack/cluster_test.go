package localstack_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/natsconn"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/testkit/localstack"
	"github.com/lockdown/lockdown/testkit/testwait"
)

// TestNATSCluster starts a three-node JetStream cluster (the stack runs
// the install step) and runs the install step three more times at once,
// as racing install jobs would: it stays idempotent and every stream gets
// three replicas.
func TestNATSCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := cluster(t, ctx)
	conn, err := natsconn.Connect(ctx, natsconn.Options{URL: s.NATS.URL, User: events.ServiceRotator, Password: s.NATS.Password(events.ServiceRotator)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	start := time.Now()
	tctx, tcancel := context.WithTimeout(ctx, 30*time.Second)
	defer tcancel()
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			c, err := natsconn.Connect(ctx, natsconn.Options{URL: s.NATS.URL, User: events.UserAdmin, Password: s.NATS.Password(events.UserAdmin)})
			if err != nil {
				errs <- err
				return
			}
			defer func() { _ = c.Close(context.Background()) }()
			errs <- stream.EnsureTopology(tctx, c.JS)
		}()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatalf("after %v: %v", time.Since(start), err)
		}
	}
	t.Logf("topology in %v", time.Since(start))
	for _, name := range []string{events.StreamEvents, events.StreamJobs, events.StreamDeadLetters} {
		st, err := conn.JS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if r := st.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("%s has %d replicas, want 3", name, r)
		}
	}
}

// cluster starts a three-node JetStream cluster with Lockdown's users.
func cluster(t *testing.T, ctx context.Context) *localstack.Stack {
	t.Helper()
	s := localstack.StartTest(t, ctx, localstack.Options{NATS: true, NATSAuth: true, NATSNodes: 3})
	return s
}

// TestNATSClusterRoutes: the cluster's routes are mutually authenticated.
// A server that could open a route would join the cluster, see every
// message and could lead JetStream; one without a certificate of the
// cluster's CA — none at all, or one of another CA — is refused by the
// real nats-server, and the three nodes keep their two routes each.
func TestNATSClusterRoutes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := cluster(t, ctx)
	bin, err := localstack.Binary("nats-server")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := localstack.RouteTLS(filepath.Join(t.TempDir(), "foreign"))
	if err != nil {
		t.Fatal(err)
	}
	for name, tls := range map[string]string{"without TLS": "", "with a certificate of another CA": foreign} {
		t.Run("a server "+name+" cannot join", func(t *testing.T) {
			ports := freeTCPPorts(t, 3)
			conf := fmt.Sprintf("server_name: rogue\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\ncluster {\n  name: lockdown\n  listen: 127.0.0.1:%d\n  routes: [nats-route://127.0.0.1:%d]\n%s}\n",
				ports[0], ports[1], ports[2], s.NATS.Nodes[0].ClusterPort, tls)
			path := filepath.Join(t.TempDir(), "rogue.conf")
			if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "-c", path)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			rogue := fmt.Sprintf("http://127.0.0.1:%d/routez", ports[1])
			testwait.For(t, 20*time.Second, "the rogue server to answer", func() bool { _, err := routedTo(rogue); return err == nil })
			// Its route attempts repeat every second or so: watch a while.
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
				if peers, err := routedTo(rogue); err == nil && len(peers) != 0 {
					t.Fatalf("the rogue server holds routes to %v", peers)
				}
				for _, node := range s.NATS.Nodes {
					if peers, err := routedTo(fmt.Sprintf("http://127.0.0.1:%d/routez", node.MonitorPort)); err == nil && peers["rogue"] {
						t.Fatalf("%s holds a route to the rogue server: it joined", node.Name)
					}
				}
			}
		})
	}
	t.Run("the nodes route to each other", func(t *testing.T) {
		for _, node := range s.NATS.Nodes {
			if peers, err := routedTo(fmt.Sprintf("http://127.0.0.1:%d/routez", node.MonitorPort)); err != nil || len(peers) != 2 {
				t.Fatalf("%s routes to %v (%v), want the two other nodes", node.Name, peers, err)
			}
		}
	})
}

// routedTo reads the names of the servers a server holds routes to, from
// its monitoring endpoint (pooled routes name the same peer several times).
func routedTo(url string) (map[string]bool, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	var r struct {
		Routes []struct {
			RemoteName string `json:"remote_name"`
			RemoteID   string `json:"remote_id"`
		} `json:"routes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, rt := range r.Routes {
		name := rt.RemoteName
		if name == "" {
			name = rt.RemoteID
		}
		out[name] = true
	}
	return out, nil
}

// freeTCPPorts returns n ports free on 127.0.0.1 now.
func freeTCPPorts(t *testing.T, n int) []int {
	t.Helper()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, l.Addr().(*net.TCPAddr).Port)
		defer func() { _ = l.Close() }()
	}
	return out
}
