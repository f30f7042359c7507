package localstack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// vaultNodeStopGrace is how long a Vault node gets to shut down after SIGTERM
// before it is killed, the same grace Stack.Close gives every server.
const vaultNodeStopGrace = 10 * time.Second

// vaultNodeEnv keeps a developer's own Vault settings away from the servers.
var vaultNodeEnv = []string{"VAULT_ADDR=", "VAULT_TOKEN=", "SKIP_SETCAP=1"}

// VaultCluster is a real N-node Vault HA cluster with integrated (raft)
// storage on loopback, Shamir-sealed, initialised with VaultShares /
// VaultThreshold, every node unsealed: one active, the rest standbys.
//
// Unlike Stack.Vault it has no audit device, mounts or auth methods beyond
// Vault's defaults: it exists to exercise sealing, fencing and failover.
type VaultCluster struct {
	// Nodes are in start order; Nodes[0] is the node that was initialised
	// and the one the others retry_join.
	Nodes []*VaultNode
	// RootToken and UnsealKeys stay inside the process that started the
	// cluster, like Vault's: tests and the drill play the key holders.
	RootToken string
	// Lockdown's tokens, as on the single node.
	LockdownTokens
	UnsealKeys []string

	s   *Stack
	bin string
	// mu guards every node's proc and, while a node is being replaced,
	// s.procs.
	mu sync.Mutex
}

// VaultNode is one server of a VaultCluster.
type VaultNode struct {
	// Name is vault-1, vault-2, ...: the raft node id and the log file
	// name (<Stack.Dir>/<Name>.log).
	Name string
	// Addr is the API address, http://127.0.0.1:<Port>.
	Addr        string
	Port        int
	ClusterPort int

	dir      string // <Stack.Dir>/<Name>: config and raft data
	confPath string
	api      *vault.Client // root token once the cluster is initialised
	proc     *process
}

// StartVaultCluster starts nodes Vault servers with raft storage, initialises
// the first with VaultShares / VaultThreshold, unseals it, then unseals the
// others (which completes their retry_join) and waits until the first is
// active, the others are standbys and every node is a healthy raft voter.
// The processes belong to the stack: Close stops them. If start-up fails,
// the nodes already started are stopped again. One cluster per stack.
func (s *Stack) StartVaultCluster(ctx context.Context, nodes int) (_ *VaultCluster, err error) {
	if nodes < 1 {
		return nil, fmt.Errorf("vault cluster: %d nodes", nodes)
	}
	bin, err := tool("vault")
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(2 * nodes)
	if err != nil {
		return nil, err
	}
	c := &VaultCluster{s: s, bin: bin}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("vault cluster: %w", err), c.stop())
		}
	}()
	for i := range nodes {
		n := &VaultNode{
			Name:        fmt.Sprintf("vault-%d", i+1),
			Port:        ports[2*i],
			ClusterPort: ports[2*i+1],
		}
		n.Addr = fmt.Sprintf("http://127.0.0.1:%d", n.Port)
		n.dir = filepath.Join(s.Dir, n.Name)
		n.confPath = filepath.Join(n.dir, "vault.hcl")
		if n.api, err = newVaultClient(n.Addr); err != nil {
			return nil, err
		}
		// Mkdir, not MkdirAll: a second cluster in the same stack would
		// share names, logs and data.
		if err := os.Mkdir(n.dir, 0o700); err != nil {
			return nil, fmt.Errorf("%s: %w", n.Name, err)
		}
		if err := os.Mkdir(filepath.Join(n.dir, "data"), 0o700); err != nil {
			return nil, err
		}
		leader := ""
		if i > 0 {
			leader = c.Nodes[0].Addr
		}
		if err := os.WriteFile(n.confPath, []byte(n.config(leader)), 0o600); err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
		if err := c.start(n); err != nil {
			return nil, err
		}
	}
	for _, n := range c.Nodes {
		if err := c.waitNode(ctx, n, vaultAnswers); err != nil {
			return nil, err
		}
	}

	first := c.Nodes[0]
	resp, err := first.api.Sys().InitWithContext(ctx, &vault.InitRequest{SecretShares: VaultShares, SecretThreshold: VaultThreshold})
	if err != nil {
		return nil, fmt.Errorf("%s: init: %w", first.Name, err)
	}
	c.RootToken, c.UnsealKeys = resp.RootToken, resp.Keys
	for _, n := range c.Nodes {
		n.api.SetToken(c.RootToken)
	}
	if err := c.unseal(ctx, first); err != nil {
		return nil, err
	}
	if err := c.waitNode(ctx, first, vaultIsActive); err != nil {
		return nil, err
	}
	if c.LockdownTokens, err = lockdownTokens(ctx, first.api, first.dir); err != nil {
		return nil, err
	}
	// Autopilot adds a joining node as a non-voter and promotes it once it
	// has been healthy for server_stabilization_time (10s by default). On
	// loopback a second is plenty, and it keeps bring-up and re-joins fast.
	if err := c.waitNode(ctx, first, func(ctx context.Context, api *vault.Client) error {
		_, err := api.Logical().WriteWithContext(ctx, "sys/storage/raft/autopilot/configuration",
			map[string]any{"server_stabilization_time": "1s"})
		return err
	}); err != nil {
		return nil, err
	}
	if err := eachNode(c.Nodes[1:], func(n *VaultNode) error {
		if err := c.unseal(ctx, n); err != nil {
			return err
		}
		return c.waitNode(ctx, n, vaultIsStandby)
	}); err != nil {
		return nil, err
	}
	if err := c.waitRaftHealthy(ctx, first); err != nil {
		return nil, err
	}
	return c, nil
}

// config renders the node's server configuration. leader, when set, is the
// API address of the node to retry_join.
func (n *VaultNode) config(leader string) string {
	join := ""
	if leader != "" {
		join = fmt.Sprintf(`
  retry_join {
    leader_api_addr = %q
  }`, leader)
	}
	// performance_multiplier 1 gives raft its tightest timings (a second
	// to notice a lost leader instead of five, a 500ms leader lease): right
	// on loopback, and it halves bring-up (the first node's election) and
	// Close (the last node gives up on its lost quorum sooner). The
	// autopilot intervals are shortened from 10s / 2s so that promotions
	// and health show within about a second.
	return fmt.Sprintf(`storage "raft" {
  path                         = %q
  node_id                      = %q
  performance_multiplier       = 1
  autopilot_reconcile_interval = "1s"
  autopilot_update_interval    = "500ms"%s
}
`, filepath.Join(n.dir, "data"), n.Name, join) + vaultServerConfig(n.Port, n.ClusterPort)
}

// start starts the node's server and records the process in the stack.
func (c *VaultCluster) start(n *VaultNode) error {
	p, err := startProcess(n.Name, c.s.Dir, c.bin, []string{"server", "-config", n.confPath}, vaultNodeEnv, nil)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if i := slices.Index(c.s.procs, n.proc); n.proc != nil && i >= 0 {
		c.s.procs[i] = p
	} else {
		c.s.procs = append(c.s.procs, p)
	}
	n.proc = p
	return nil
}

// stop stops every node and forgets its process: used when start-up fails
// and the stack lives on.
func (c *VaultCluster) stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, n := range c.Nodes {
		if n.proc == nil {
			continue
		}
		if err := n.proc.stop(vaultNodeStopGrace); err != nil {
			errs = append(errs, err)
		}
		c.s.procs = slices.DeleteFunc(c.s.procs, func(p *process) bool { return p == n.proc })
	}
	return errors.Join(errs...)
}

func (c *VaultCluster) node(addr string) (*VaultNode, error) {
	for _, n := range c.Nodes {
		if n.Addr == addr {
			return n, nil
		}
	}
	return nil, fmt.Errorf("vault cluster: no node at %s", addr)
}

func (c *VaultCluster) process(n *VaultNode) *process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return n.proc
}

// waitNode polls check against the node until it succeeds, the node's
// process exits or ctx ends.
func (c *VaultCluster) waitNode(ctx context.Context, n *VaultNode, check func(context.Context, *vault.Client) error) error {
	return c.process(n).waitReady(ctx, func(ctx context.Context) error { return check(ctx, n.api) })
}

func vaultAnswers(ctx context.Context, api *vault.Client) error {
	_, err := api.Sys().SealStatusWithContext(ctx)
	return err
}

// vaultIsActive succeeds when the node is unsealed, not a standby and names
// itself the leader.
func vaultIsActive(ctx context.Context, api *vault.Client) error {
	h, err := api.Sys().HealthWithContext(ctx)
	if err != nil {
		return err
	}
	if !h.Initialized || h.Sealed || h.Standby {
		return fmt.Errorf("not active (initialized %t, sealed %t, standby %t)", h.Initialized, h.Sealed, h.Standby)
	}
	l, err := api.Sys().LeaderWithContext(ctx)
	if err != nil {
		return err
	}
	if !l.IsSelf {
		return fmt.Errorf("not the leader (leader %q)", l.LeaderAddress)
	}
	return nil
}

// vaultIsStandby succeeds when the node is unsealed, a standby, connected to the
// active node and knows its address.
func vaultIsStandby(ctx context.Context, api *vault.Client) error {
	h, err := api.Sys().HealthWithContext(ctx)
	if err != nil {
		return err
	}
	if h.Sealed || !h.Standby {
		return fmt.Errorf("not a standby (sealed %t, standby %t)", h.Sealed, h.Standby)
	}
	if h.HAConnectionHealthy != nil && !*h.HAConnectionHealthy {
		return errors.New("standby not connected to the active node")
	}
	l, err := api.Sys().LeaderWithContext(ctx)
	if err != nil {
		return err
	}
	if l.IsSelf || l.LeaderAddress == "" {
		return fmt.Errorf("no active node known (is_self %t, leader %q)", l.IsSelf, l.LeaderAddress)
	}
	return nil
}

// unseal submits shares to the node as the key holders would, once it can
// take them: a node still joining the cluster reports itself uninitialised
// until its retry_join has fetched the leader's challenge, and refuses
// shares until then. It returns once the node has consumed a threshold of
// shares; with raft the unseal itself may complete a moment later.
func (c *VaultCluster) unseal(ctx context.Context, n *VaultNode) error {
	var st *vault.SealStatusResponse
	if err := c.waitNode(ctx, n, func(ctx context.Context, api *vault.Client) error {
		var err error
		if st, err = api.Sys().SealStatusWithContext(ctx); err != nil {
			return err
		}
		if !st.Initialized {
			return errors.New("not initialised (still joining)")
		}
		return nil
	}); err != nil {
		return err
	}
	if !st.Sealed {
		return nil
	}
	// Shares already submitted by someone else count; a share given twice
	// is ignored. So submit them in turn until the node is unsealed or its
	// progress resets, which means a threshold was reached.
	for _, key := range c.UnsealKeys {
		st, err := n.api.Sys().UnsealWithContext(ctx, key)
		if err != nil {
			return fmt.Errorf("%s: unseal: %w", n.Name, err)
		}
		if !st.Sealed || st.Progress == 0 {
			return nil
		}
	}
	return fmt.Errorf("%s: still sealed after every share", n.Name)
}

// waitRaftHealthy waits until autopilot, asked on the active node api,
// reports every node a healthy voter.
func (c *VaultCluster) waitRaftHealthy(ctx context.Context, active *VaultNode) error {
	return c.waitNode(ctx, active, func(ctx context.Context, api *vault.Client) error {
		st, err := api.Sys().RaftAutopilotStateWithContext(ctx)
		if err != nil {
			return err
		}
		if st == nil || !st.Healthy || len(st.Voters) != len(c.Nodes) {
			if st == nil {
				return errors.New("no autopilot state")
			}
			return fmt.Errorf("raft not healthy yet (healthy %t, voters %v, non-voters %v)", st.Healthy, st.Voters, st.NonVoters)
		}
		return nil
	})
}

// Restart stops the node's process (SIGTERM, then SIGKILL after a grace
// period) and starts it again with the same config and data dir; it waits
// until the node answers sys/seal-status again. A Shamir-sealed node comes
// back sealed: this is how Lockdown fences a standby, which refuses
// sys/seal.
func (c *VaultCluster) Restart(ctx context.Context, addr string) error {
	n, err := c.node(addr)
	if err != nil {
		return err
	}
	if err := c.process(n).stop(vaultNodeStopGrace); err != nil {
		return fmt.Errorf("vault cluster: restart %s: %w", n.Name, err)
	}
	if err := c.start(n); err != nil {
		return fmt.Errorf("vault cluster: restart %s: %w", n.Name, err)
	}
	if err := c.waitNode(ctx, n, vaultAnswers); err != nil {
		return fmt.Errorf("vault cluster: restart: %w", err)
	}
	return nil
}

// UnsealNodes submits threshold shares to the nodes at addrs only (key
// holders who reach some nodes first) and waits until one node is active.
func (c *VaultCluster) UnsealNodes(ctx context.Context, addrs ...string) error {
	for _, a := range addrs {
		n, err := c.node(a)
		if err != nil {
			return err
		}
		if err := c.unseal(ctx, n); err != nil {
			return fmt.Errorf("vault cluster: %w", err)
		}
	}
	return pollVault(ctx, func(ctx context.Context) error {
		addr, err := c.Active(ctx)
		if err == nil && addr == "" {
			err = errors.New("no active node")
		}
		return err
	})
}

// UnsealAll submits threshold shares to every sealed node, as the key
// holders would, and waits until one node is active, the others are
// standbys and autopilot reports every node a healthy raft voter (so the
// cluster can lose a node again straight away).
func (c *VaultCluster) UnsealAll(ctx context.Context) error {
	if err := eachNode(c.Nodes, func(n *VaultNode) error { return c.unseal(ctx, n) }); err != nil {
		return fmt.Errorf("vault cluster: %w", err)
	}
	var active *VaultNode
	if err := pollVault(ctx, func(ctx context.Context) error {
		addr, err := c.Active(ctx)
		if err != nil {
			return err
		}
		if addr == "" {
			return errors.New("no active node")
		}
		active, err = c.node(addr)
		return err
	}); err != nil {
		return fmt.Errorf("vault cluster: %w", err)
	}
	if err := eachNode(c.Nodes, func(n *VaultNode) error {
		if n == active {
			return nil
		}
		return c.waitNode(ctx, n, vaultIsStandby)
	}); err != nil {
		return fmt.Errorf("vault cluster: %w", err)
	}
	if err := c.waitRaftHealthy(ctx, active); err != nil {
		return fmt.Errorf("vault cluster: %w", err)
	}
	return nil
}

// Active returns the address of the active node: the one node that is
// unsealed, not a standby and names itself leader in sys/leader. It
// returns "" when no node is active, and an error when no node answers or
// more than one claims to be active.
func (c *VaultCluster) Active(ctx context.Context) (string, error) {
	var (
		mu       sync.Mutex
		active   []string
		answered bool
		errs     []error
	)
	_ = eachNode(c.Nodes, func(n *VaultNode) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		h, err := n.api.Sys().HealthWithContext(ctx)
		if err != nil {
			mu.Lock()
			errs = append(errs, fmt.Errorf("%s: %w", n.Name, err))
			mu.Unlock()
			return nil
		}
		// A node that answers health but not sys/leader counts as
		// answering, not as active.
		self := false
		if h.Initialized && !h.Sealed && !h.Standby {
			l, err := n.api.Sys().LeaderWithContext(ctx)
			self = err == nil && l.IsSelf
		}
		mu.Lock()
		defer mu.Unlock()
		answered = true
		if self {
			active = append(active, n.Addr)
		}
		return nil
	})
	switch {
	case len(active) == 1:
		return active[0], nil
	case len(active) > 1:
		slices.Sort(active)
		return "", fmt.Errorf("vault cluster: several nodes claim to be active: %v", active)
	case !answered:
		return "", fmt.Errorf("vault cluster: no node answers: %w", errors.Join(errs...))
	}
	return "", nil
}

// Client returns an API client for the node at addr authenticated with the
// root token, ignoring VAULT_* environment variables like Vault.Client.
func (c *VaultCluster) Client(addr string) (*vault.Client, error) {
	if _, err := c.node(addr); err != nil {
		return nil, err
	}
	api, err := newVaultClient(addr)
	if err != nil {
		return nil, err
	}
	api.SetToken(c.RootToken)
	return api, nil
}

// Ports lists the API and cluster ports of every node, so a caller can
// check that they are free again after Stack.Close.
func (c *VaultCluster) Ports() []int {
	out := make([]int, 0, 2*len(c.Nodes))
	for _, n := range c.Nodes {
		out = append(out, n.Port, n.ClusterPort)
	}
	return out
}

// eachNode runs f for every node at once and joins the errors.
func eachNode(nodes []*VaultNode, f func(*VaultNode) error) error {
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() { errs[i] = f(n) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// pollVault calls check every 50ms until it succeeds or ctx ends, bounding each
// attempt to 2s.
func pollVault(ctx context.Context, check func(context.Context) error) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := check(attempt)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last check: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}
