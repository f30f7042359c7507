// Package vaultclient builds every Vault API client Lockdown uses the same
// way, so that no client differs from the others by accident:
//
//   - TLS from the standard VAULT_CACERT/VAULT_CLIENT_* variables
//     (vault.DefaultConfig reads them);
//   - no namespace, agent address or token from the environment: a
//     VAULT_NAMESPACE, VAULT_AGENT_ADDR or VAULT_TOKEN left in a process's
//     environment must not redirect or authenticate Lockdown's calls (an
//     HTTP proxy set in the environment is still used: operators may need
//     one);
//   - no retries inside the client by default: every Lockdown loop retries
//     itself, with its own backoff and knowledge of what is safe to repeat;
//   - a bound on each request, and a pool of idle connections sized for
//     the caller (containment's few round trips, the rotator's many jobs).
package vaultclient

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// ErrNoAddress is returned by New when Options.Address is empty.
var ErrNoAddress = errors.New("vaultclient: no Vault address")

// Options configure New.
type Options struct {
	// Address is the Vault node's API address (required).
	Address string
	// Token authenticates the client; empty leaves it without one (seal
	// status, unseal, an operator's token set later).
	Token string
	// Timeout bounds one request. Default: 30 s.
	Timeout time.Duration
	// MaxRetries are the client's own retries of a 5xx or a failed
	// connection. Default: 0 (the caller's loop retries).
	MaxRetries int
	// IdleConnsPerHost is how many connections to the node are kept open
	// between requests. Default: 4; the rotator, with many jobs in flight
	// on one node, asks for more.
	IdleConnsPerHost int
}

// New returns a client for one Vault node.
func New(opts Options) (*vault.Client, error) {
	if opts.Address == "" {
		return nil, ErrNoAddress
	}
	cfg := vault.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("vaultclient: %w", cfg.Error)
	}
	cfg.Address = opts.Address
	// VAULT_AGENT_ADDR would send every request to that address instead.
	cfg.AgentAddress = ""
	cfg.Timeout = opts.Timeout
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	cfg.MaxRetries = max(opts.MaxRetries, 0)
	idle := opts.IdleConnsPerHost
	if idle <= 0 {
		idle = 4
	}
	if t, ok := cfg.HttpClient.Transport.(*http.Transport); ok {
		t.MaxIdleConnsPerHost = idle
	}
	c, err := vault.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vaultclient %s: %w", opts.Address, err)
	}
	c.ClearNamespace()
	c.ClearToken()
	if opts.Token != "" {
		c.SetToken(opts.Token)
	}
	return c, nil
}
