package stream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lockdown/lockdown/pkg/platform/retry"
)

// ErrUnavailable marks an error as a dependency being down (Vault sealed
// or answering 503, PostgreSQL unreachable, the SMTP relay refusing
// connections): the message is retried without limit and its consumer
// stops fetching until the dependency answers again. Wrap with
// Unavailable.
var ErrUnavailable = errors.New("dependency unavailable")

type unavailableError struct {
	dependency string
	err        error
}

func (e unavailableError) Error() string { return e.dependency + " unavailable: " + e.err.Error() }
func (e unavailableError) Unwrap() []error {
	return []error{e.err, ErrUnavailable}
}

// Unavailable marks err as the named dependency being down. Unavailable
// of nil is nil.
func Unavailable(dependency string, err error) error {
	if err == nil {
		return nil
	}
	return unavailableError{dependency: dependency, err: err}
}

// UnavailableDependency names the dependency an error says is down.
func UnavailableDependency(err error) (string, bool) {
	var u unavailableError
	if errors.As(err, &u) {
		return u.dependency, true
	}
	return "", false
}

// breaker pauses a consumer while a dependency its handler needs is down:
// instead of spending every message's deliveries on a dead Vault it waits,
// then lets one message through as a probe; the probe's success closes it,
// its failure doubles the wait (up to max).
type breaker struct {
	mu         sync.Mutex
	dependency string // "" when closed
	reason     string
	since      time.Time
	until      time.Time
	// waits is the sequence of waits while open: the policy's first when
	// it opens, doubled by each failed probe.
	waits    *retry.Backoff
	onChange func(dependency string, open bool, reason string, since time.Time)
}

// trip opens (or keeps open, with a longer wait) the breaker.
func (b *breaker) trip(dependency, reason string) {
	b.mu.Lock()
	opened := b.dependency == ""
	if opened {
		b.dependency, b.since = dependency, time.Now()
		b.waits.Reset()
	}
	b.reason, b.until = reason, time.Now().Add(b.waits.Next())
	since, cb := b.since, b.onChange
	b.mu.Unlock()
	if opened && cb != nil {
		cb(dependency, true, reason, since)
	}
}

// reset closes the breaker after a message went through.
func (b *breaker) reset() {
	b.mu.Lock()
	dep, since, cb := b.dependency, b.since, b.onChange
	b.dependency, b.reason = "", ""
	b.mu.Unlock()
	if dep != "" && cb != nil {
		cb(dep, false, "", since)
	}
}

// pause waits while the breaker is open and reports whether it is
// half-open now (the caller lets one message through as a probe).
func (b *breaker) pause(ctx context.Context) (probe bool) {
	b.mu.Lock()
	until, open := b.until, b.dependency != ""
	b.mu.Unlock()
	if !open {
		return false
	}
	retry.Sleep(ctx, time.Until(until))
	return true
}

// state says what the breaker holds (readiness, status).
func (b *breaker) state() (dependency, reason string, since time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dependency, b.reason, b.since
}

// Check is a readiness check: it fails while the breaker is open, naming
// the dependency the consumer waits for.
func (c *Consumer) Check(context.Context) error {
	dep, reason, since := c.breaker.state()
	if dep == "" {
		return nil
	}
	return fmt.Errorf("%s waits for %s since %s: %s", c.spec.Durable, dep, since.UTC().Format(time.RFC3339), reason)
}
