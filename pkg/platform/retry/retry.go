// Package retry is the one backoff every Lockdown loop that waits out a
// failure uses: a fetch from JetStream, the outbox relay, the assessor's
// batch writes, containment's record of a breach, the Vault log stream,
// the notifier's record of a send, a circuit breaker's pause. A Policy
// says how long to wait (doubling from Initial up to Max, with optional
// jitter); a Backoff is one sequence of waits, reset by a success. The
// waits are computed by github.com/cenkalti/backoff.
package retry

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Policy is an exponential backoff: the first wait is Initial, each
// failure doubles it, up to Max. Jitter (0 to 1) spreads each wait by that
// fraction either way, so processes that failed together do not retry
// together.
type Policy struct {
	Initial time.Duration
	Max     time.Duration
	Jitter  float64
}

// Default is the policy of a loop waiting for a dependency that is away:
// 100 ms doubling to 5 s, without jitter.
func Default() Policy { return Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second} }

// Backoff is one sequence of waits of a Policy. It is not safe for
// concurrent use.
type Backoff struct {
	b backoff.ExponentialBackOff
}

// Start begins a sequence of waits. A Max below Initial caps the first
// wait too; a zero Initial is Default's (never a busy loop).
func (p Policy) Start() *Backoff {
	initial := p.Initial
	if initial <= 0 {
		initial = Default().Initial
	}
	if p.Max > 0 && p.Max < initial {
		initial = p.Max
	}
	b := &Backoff{b: backoff.ExponentialBackOff{InitialInterval: initial, MaxInterval: max(p.Max, initial),
		Multiplier: 2, RandomizationFactor: p.Jitter}}
	b.b.Reset()
	return b
}

// Next returns the next wait and moves the sequence on.
func (b *Backoff) Next() time.Duration { return b.b.NextBackOff() }

// Reset starts the sequence again from the first wait (after a success).
func (b *Backoff) Reset() { b.b.Reset() }

// Wait sleeps the next wait; false when ctx ended first.
func (b *Backoff) Wait(ctx context.Context) bool {
	return Sleep(ctx, b.Next())
}

// Sleep waits d; false when ctx ended first.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// ErrPermanent marks an error Do must not retry: wrap it with Permanent.
var ErrPermanent = errors.New("permanent")

type permanent struct{ err error }

func (p permanent) Error() string   { return p.err.Error() }
func (p permanent) Unwrap() []error { return []error{p.err, ErrPermanent} }

// Permanent wraps err so that Do returns it at once.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// Do runs op until it succeeds, returns an error wrapped by Permanent, or
// ctx ends; before each wait it calls notify (nil: none) with the failure
// and the wait. It returns nil, the error Permanent wrapped (unwrapped),
// or ctx's error joined with the last failure.
func Do(ctx context.Context, p Policy, op func(context.Context) error, notify func(err error, wait time.Duration)) error {
	b := p.Start()
	for {
		err := op(ctx)
		if p, ok := errors.AsType[permanent](err); ok {
			return p.err
		}
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return errors.Join(ctx.Err(), err)
		}
		wait := b.Next()
		if notify != nil {
			notify(err, wait)
		}
		if !Sleep(ctx, wait) {
			return errors.Join(ctx.Err(), err)
		}
	}
}
