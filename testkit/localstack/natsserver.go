package localstack

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/natsconn"
	"github.com/lockdown/lockdown/pkg/platform/stream"
)

// NATS is a running nats-server with JetStream on file storage, or a
// cluster of them on loopback.
type NATS struct {
	// URL is the client URL, nats://127.0.0.1:<port>; for a cluster, every
	// node's URL, comma-separated (as LOCKDOWN_NATS_URL takes them).
	URL         string
	Port        int
	MonitorPort int
	// Passwords maps each NATS user of deploy/nats/auth.conf to the
	// password generated for this stack; nil when the server runs without
	// authorization.
	Passwords map[string]string
	// Nodes are the servers (one unless Options.NATSNodes asks for more).
	Nodes []*NATSNode
}

// LeaderOf returns the index in Nodes of the server leading a stream's
// replicas (chaos tests kill it).
func (n *NATS) LeaderOf(ctx context.Context, js jetstream.JetStream, name string) (int, error) {
	st, err := js.Stream(ctx, name)
	if err != nil {
		return -1, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return -1, err
	}
	for i, node := range n.Nodes {
		if info.Cluster != nil && node.Name == info.Cluster.Leader {
			return i, nil
		}
	}
	return -1, fmt.Errorf("no leader for %s among the nodes: %+v", name, info.Cluster)
}

// NATSNode is one nats-server of the stack.
type NATSNode struct {
	Name        string
	URL         string
	MonitorPort int
	// ClusterPort takes the routes of the other nodes (0 for one node).
	ClusterPort int
	// ports: client, monitoring, cluster (routes).
	ports     []int
	args, env []string
	dir       string
	proc      *process
}

// Password returns a user's generated password ("" without authorization).
func (n *NATS) Password(user string) string { return n.Passwords[user] }

// startNATS starts nodes servers (a cluster named "lockdown" when more
// than one, routes between all of them, as deploy/nats/cluster.conf).
func (s *Stack) startNATS(ctx context.Context, auth bool, nodes int) error {
	nodes = max(nodes, 1)
	ports, err := freePorts(3 * nodes)
	if err != nil {
		return err
	}
	var authConfig string
	var env []string
	var passwords map[string]string
	if auth {
		// Lockdown's own least-privilege users, with fresh passwords handed
		// to nats-server through its environment, as in production.
		authConfig = events.NATSAuthConfig()
		passwords = map[string]string{}
		for _, u := range events.NATSUsers() {
			passwords[u] = randomHex(16)
			env = append(env, events.NATSPasswordEnv(u)+"="+passwords[u])
		}
	}
	var routes []string
	for i := range nodes {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3*i+2]))
	}
	n := &NATS{Passwords: passwords, Port: ports[0], MonitorPort: ports[1]}
	var urls []string
	routeTLSBlock := ""
	if nodes > 1 {
		if routeTLSBlock, err = RouteTLS(filepath.Join(s.Dir, "nats", "tls")); err != nil {
			return err
		}
	}
	for i := range nodes {
		name := "lockdown_local"
		cluster := ""
		if nodes > 1 {
			name = fmt.Sprintf("lockdown_%d", i+1)
			cluster = fmt.Sprintf("cluster {\n  name: lockdown\n  listen: 127.0.0.1:%d\n  routes: [%s]\n%s}\n", ports[3*i+2], strings.Join(routes, ", "), routeTLSBlock)
		}
		dir := filepath.Join(s.Dir, "nats", name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream {
  store_dir: %q
  max_memory_store: 256MB
  max_file_store: 2GB
}
%s%s
`, name, ports[3*i], ports[3*i+1], dir, cluster, authConfig)
		confPath := filepath.Join(dir, "nats.conf")
		if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
			return err
		}
		node := &NATSNode{Name: name, URL: fmt.Sprintf("nats://127.0.0.1:%d", ports[3*i]), MonitorPort: ports[3*i+1], ClusterPort: ports[3*i+2],
			ports: ports[3*i : 3*i+3], args: []string{"-c", confPath}, env: env, dir: s.Dir}
		if err := s.launchNATS(node); err != nil {
			return err
		}
		n.Nodes = append(n.Nodes, node)
		urls = append(urls, node.URL)
	}
	// Nodes start together (a cluster needs its peers to elect a
	// JetStream leader), then each must report JetStream healthy.
	for _, node := range n.Nodes {
		if err := node.waitHealthy(ctx); err != nil {
			return err
		}
	}
	n.URL = strings.Join(urls, ",")
	s.NATS = n
	return s.installNATS(ctx)
}

// installNATS provisions the streams and durable consumers with the admin
// identity, as `lockdown install nats` does in a deployment: services
// only check them.
func (s *Stack) installNATS(ctx context.Context) error {
	ictx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	user := ""
	if s.NATS.Passwords != nil {
		user = events.UserAdmin
	}
	conn, err := natsconn.Connect(ictx, natsconn.Options{URL: s.NATS.URL, User: user, Password: s.NATS.Password(user), Name: "lockdown-localstack-install"})
	if err != nil {
		return fmt.Errorf("install NATS topology: %w", err)
	}
	defer func() { _ = conn.Close(context.Background()) }() // nothing was published: nothing to lose
	if err := stream.EnsureTopology(ictx, conn.JS); err != nil {
		return fmt.Errorf("install NATS topology: %w", err)
	}
	return nil
}

func (s *Stack) launchNATS(node *NATSNode) error {
	bin, err := tool("nats-server")
	if err != nil {
		return err
	}
	p, err := startProcess("nats-"+node.Name, node.dir, bin, node.args, node.env, nil)
	if err != nil {
		return err
	}
	s.procs = append(s.procs, p)
	node.proc = p
	return nil
}

func (node *NATSNode) waitHealthy(ctx context.Context) error {
	healthz := fmt.Sprintf("http://127.0.0.1:%d/healthz", node.MonitorPort)
	return node.proc.waitReady(ctx, func(ctx context.Context) error { return httpOK(ctx, healthz) })
}

// KillNATSNode kills node i with SIGKILL, as a crashed machine would stop.
func (s *Stack) KillNATSNode(i int) error {
	p := s.NATS.Nodes[i].proc
	if err := syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		return err
	}
	<-p.exited
	return nil
}

// RestartNATSNode starts a killed node again with its data and waits
// until it reports JetStream healthy.
func (s *Stack) RestartNATSNode(ctx context.Context, i int) error {
	node := s.NATS.Nodes[i]
	if err := s.launchNATS(node); err != nil {
		return err
	}
	return node.waitHealthy(ctx)
}

// httpOK succeeds when GET url answers 200.
func httpOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close() // only the status matters
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
