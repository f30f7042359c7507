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
	// MethodFencedUnreachable: the node answered nothing for a whole
	// sealing pass (down, or cut off from containment only and perhaps
	// still serving whoever reaches it); the fence command ran, and the
	// node is taken as down so the round goes on.
	MethodFencedUnreachable = "fenced_unreachable"
)

// unreachableFenceTimeout bounds the fence of a node that never answered
// (the command's own timeout applies too).
const unreachableFenceTimeout = time.Minute

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
//
// A node that answers nothing for the whole budget is fenced once the
// budget is spent (fenceUnreachable): a node that cannot be reached cannot
// be confirmed sealed, and waiting for it would keep the round open for
// good.
func (s *Sealer) SealAll(ctx context.Context, budget time.Duration) (seals []events.NodeSeal, problems map[string]string) {
	parent := ctx
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
			problem := func(msg string) { mu.Lock(); lastErr[i] = msg; mu.Unlock() }
			seal, everReachable := s.sealNode(ctx, node, problem)
			if seal.ConfirmedAt.IsZero() && !everReachable {
				seal = s.fenceUnreachable(context.WithoutCancel(parent), node, seal, problem)
			}
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
// through the API on the next read. everReachable says whether the node
// answered at all.
func (s *Sealer) sealNode(ctx context.Context, node string, problem func(string)) (seal events.NodeSeal, everReachable bool) {
	seal = events.NodeSeal{Address: node}
	var fencedAt time.Time
	for ctx.Err() == nil {
		st := s.vault.Status(ctx, node)
		everReachable = everReachable || st.Reachable
		switch {
		case st.Reachable && st.Sealed:
			if seal.Method == "" {
				seal.Method = MethodAlreadySealed
			}
			seal.ConfirmedAt = time.Now().UTC()
			return seal, true
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
	return seal, everReachable
}

// fenceUnreachable fences a node that never answered during a sealing
// pass. Fenced, it is recorded as such and the round goes on; without a
// fence command, or when the command fails, it stays a problem and the
// round open (a person must take the node down).
func (s *Sealer) fenceUnreachable(ctx context.Context, node string, seal events.NodeSeal, problem func(string)) events.NodeSeal {
	ctx, cancel := context.WithTimeout(ctx, unreachableFenceTimeout)
	defer cancel()
	if seal.RequestedAt.IsZero() {
		seal.RequestedAt = time.Now().UTC()
	}
	if err := s.fencer.Fence(ctx, node); err != nil {
		problem("unreachable, and the fence failed: " + err.Error())
		s.log.Error("unreachable node not fenced", slog.String("node", node), slog.Any("error", err))
		return seal
	}
	s.log.Warn("unreachable node fenced; taken as down", slog.String("node", node))
	seal.Method, seal.ConfirmedAt = MethodFencedUnreachable, time.Now().UTC()
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
