// Package vaultnodes is containment's adapter to the Vault nodes it seals
// and watches, through github.com/hashicorp/vault/api, and to the fence
// action for standbys.
package vaultnodes

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/pkg/platform/vaultclient"
	"github.com/lockdown/lockdown/services/containment/internal/incident"
)

// Nodes implements incident.Vault over one API client per node.
type Nodes struct {
	addrs   []string
	clients map[string]*vault.Client
}

// New builds clients for the nodes. sealToken is the token whose only
// power is sys/seal (deploy/vault/policies/lockdown-seal.hcl); requests time
// out after timeout so an unreachable node never stalls the others.
func New(addrs []string, sealToken string, timeout time.Duration) (*Nodes, error) {
	n := &Nodes{addrs: addrs, clients: map[string]*vault.Client{}}
	for _, a := range addrs {
		// Reused connections: containment latency is a handful of round trips.
		c, err := vaultclient.New(vaultclient.Options{Address: a, Token: sealToken, Timeout: timeout})
		if err != nil {
			return nil, err
		}
		n.clients[a] = c
	}
	return n, nil
}

// Nodes implements incident.Vault.
func (n *Nodes) Nodes() []string { return n.addrs }

// SetToken swaps the seal token in on every node's client (its successor,
// after containment replaced it). The vault client guards its token, so
// a seal in flight is safe.
func (n *Nodes) SetToken(token string) {
	for _, c := range n.clients {
		c.SetToken(token)
	}
}

// Status implements incident.Vault with sys/seal-status and, for an
// unsealed node, sys/health (to tell the active node from a standby).
// Neither endpoint needs a token.
func (n *Nodes) Status(ctx context.Context, node string) incident.NodeStatus {
	st := incident.NodeStatus{Address: node}
	c := n.clients[node]
	ss, err := c.Sys().SealStatusWithContext(ctx)
	if err != nil {
		st.Error = errorText(err)
		return st
	}
	st.Reachable, st.Sealed, st.Threshold, st.Shares, st.Progress = true, ss.Sealed, ss.T, ss.N, ss.Progress
	if ss.Sealed {
		return st
	}
	h, err := c.Sys().HealthWithContext(ctx)
	if err != nil {
		st.Error = errorText(err)
		return st
	}
	st.Sealed = h.Sealed
	st.Active = !h.Sealed && !h.Standby && !h.PerformanceStandby
	return st
}

// Seal implements incident.Vault.
func (n *Nodes) Seal(ctx context.Context, node string) error {
	err := n.clients[node].Sys().SealWithContext(ctx)
	if err == nil {
		return nil
	}
	if strings.Contains(err.Error(), "standby") {
		return fmt.Errorf("%w: %s", incident.ErrStandby, node)
	}
	// A node that sealed between our status read and this call answers
	// 503 "Vault is sealed": the goal is met.
	if strings.Contains(err.Error(), "Vault is sealed") {
		return nil
	}
	return fmt.Errorf("seal %s: %s", node, errorText(err))
}

// errorText shortens Vault API errors to their status and message; they
// never contain the token.
func errorText(err error) string {
	var re *vault.ResponseError
	if errors.As(err, &re) {
		return fmt.Sprintf("%d %s", re.StatusCode, strings.Join(re.Errors, "; "))
	}
	return err.Error()
}

// CommandFencer implements incident.Fencer by running a configured
// command, e.g. `systemctl restart vault@{node}` or `kubectl delete pod
// {host}`: a Shamir-sealed node that restarts comes back sealed. The
// command runs without a shell; {node} is replaced by the node's address
// and {host} by its host name, and LOCKDOWN_FENCE_NODE is set too.
type CommandFencer struct {
	Argv    []string
	Timeout time.Duration
}

// ErrNoFence is returned when a standby must be fenced but no fence
// command is configured.
var ErrNoFence = errors.New("no fence command configured (LOCKDOWN_VAULT_FENCE_COMMAND)")

// Fence implements incident.Fencer.
func (f CommandFencer) Fence(ctx context.Context, node string) error {
	if len(f.Argv) == 0 {
		return ErrNoFence
	}
	host := node
	if i := strings.Index(host, "://"); i >= 0 {
		host = host[i+3:]
	}
	if i := strings.LastIndex(host, ":"); i >= 0 {
		host = host[:i]
	}
	args := make([]string, len(f.Argv))
	for i, a := range f.Argv {
		args[i] = strings.NewReplacer("{node}", node, "{host}", host).Replace(a)
	}
	ctx, cancel := context.WithTimeout(ctx, f.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(cmd.Environ(), "LOCKDOWN_FENCE_NODE="+node)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("fence %s: %w: %s", node, err, truncate(string(out), 300))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
