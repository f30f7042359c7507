package incident

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
)

// Seal methods recorded per node.
const (
	MethodAPI           = "api"
	MethodFence         = "fence"
	MethodAlreadySealed = "already_sealed"
)

// Sealer seals every configured Vault node: the active one through the
// API, unsealed standbys by fencing them (Vault refuses to seal a standby;
// a Shamir-sealed node restarts sealed), and confirms each with its seal
// status. It needs nothing but the nodes: no database, no NATS.
type Sealer struct {
	vault  Vault
	fencer Fencer
	log    *slog.Logger
	// poll is how often a node still unsealed is re-read; fenceRetry how
	// long after a fence the node may be fenced again.
	poll, fenceRetry time.Duration
}

// NewSealer wires a Sealer.
func NewSealer(vault Vault, fencer Fencer, log *slog.Logger, poll, fenceRetry time.Duration) *Sealer {
	return &Sealer{vault: vault, fencer: fencer, log: log, poll: poll, fenceRetry: fenceRetry}
}

// Nodes lists the configured nodes.
func (s *Sealer) Nodes() []string { return s.vault.Nodes() }

// SealAll seals every node concurrently and returns when all are confirmed
// sealed, when budget has passed, or when ctx ends. A node not confirmed
// has a zero ConfirmedAt, and problems says why (its last error).
func (s *Sealer) SealAll(ctx context.Context, budget time.Duration) (seals []events.NodeSeal, problems map[string]string) {
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	nodes := s.vault.Nodes()
	seals = make([]events.NodeSeal, len(nodes))
	lastErr := make([]string, len(nodes))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, node := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seal := s.sealNode(ctx, node, func(msg string) { mu.Lock(); lastErr[i] = msg; mu.Unlock() })
			mu.Lock()
			seals[i] = seal
			mu.Unlock()
		}()
	}
	wg.Wait()
	problems = map[string]string{}
	for i, seal := range seals {
		if seal.ConfirmedAt.IsZero() {
			problems[nodes[i]] = lastErr[i]
			if problems[nodes[i]] == "" {
				problems[nodes[i]] = "not confirmed sealed in time"
			}
		}
	}
	return seals, problems
}

// AllConfirmed reports whether every node of a round is confirmed sealed.
func AllConfirmed(seals []events.NodeSeal) bool {
	for _, s := range seals {
		if s.ConfirmedAt.IsZero() {
			return false
		}
	}
	return len(seals) > 0
}

// sealNode drives one node to sealed: seal it through the API while it is
// the active node, fence it while it is an unsealed standby, and confirm
// with its seal status. A standby that becomes active meanwhile is sealed
// through the API on the next read.
func (s *Sealer) sealNode(ctx context.Context, node string, problem func(string)) events.NodeSeal {
	seal := events.NodeSeal{Address: node}
	var fencedAt time.Time
	for ctx.Err() == nil {
		st := s.vault.Status(ctx, node)
		switch {
		case st.Reachable && st.Sealed:
			if seal.Method == "" {
				seal.Method = MethodAlreadySealed
			}
			seal.ConfirmedAt = time.Now().UTC()
			return seal
		case st.Reachable && st.Active:
			if seal.RequestedAt.IsZero() {
				seal.RequestedAt = time.Now().UTC()
			}
			err := s.vault.Seal(ctx, node)
			if err == nil {
				seal.Method = MethodAPI
				continue // confirm at once
			}
			if !errors.Is(err, ErrStandby) {
				problem(err.Error())
				break
			}
			fallthrough // it turned standby between the two calls
		case st.Reachable: // an unsealed standby: Vault will not seal it
			if time.Since(fencedAt) < s.fenceRetry {
				break
			}
			if seal.RequestedAt.IsZero() {
				seal.RequestedAt = time.Now().UTC()
			}
			fencedAt = time.Now()
			seal.Method = MethodFence
			if err := s.fencer.Fence(ctx, node); err != nil {
				problem("fence: " + err.Error())
				s.log.Error("fence failed", slog.String("node", node), slog.Any("error", err))
			}
		default:
			problem(st.Error) // unreachable: restarting after a fence, or down
		}
		select {
		case <-ctx.Done():
		case <-time.After(s.poll):
		}
	}
	return seal
}

// Statuses reads every node's seal status concurrently.
func (s *Sealer) Statuses(ctx context.Context) []NodeStatus {
	nodes := s.vault.Nodes()
	out := make([]NodeStatus, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() { defer wg.Done(); out[i] = s.vault.Status(ctx, n) }()
	}
	wg.Wait()
	return out
}
