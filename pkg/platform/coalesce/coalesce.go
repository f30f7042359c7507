// Package coalesce lets many concurrent callers share one operation
// without weakening what each would get alone: a caller's item goes into a
// round that begins after the caller asked, so a look (the rotator's audit
// gate) sees at least what was there when the caller asked, and a write
// (a DNS update carrying many records) carries the caller's item. Callers
// that arrive while a round runs wait for the next one, which starts as
// soon as the running one ends and serves them all: with N callers in
// flight, a burst costs about two rounds instead of N. A batch built with
// MinInterval also spaces its rounds, for a server whose cost is per
// round rather than per item.
package coalesce

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrNoResult is returned to a caller whose round returned fewer results
// than it had items (a fault of the round function).
var ErrNoResult = errors.New("coalesce: the round gave no result for this item")

// Batch runs rounds of items. Use New.
type Batch[T any] struct {
	run func(context.Context, []T) []error
	// interval is the least time from one round's start to the next's.
	interval time.Duration

	mu sync.Mutex
	// next is the round callers join; it starts when none runs.
	next *round[T]
	// running: a round is in flight (all its callers asked before it began).
	running bool
}

type round[T any] struct {
	items []T
	errs  []error
	done  chan struct{}
}

// New returns a batch whose rounds call run with the items of that round's
// callers, in arrival order; run returns one error (or nil) per item, in
// the same order. A round has as many items as callers arrived during the
// previous one: run splits them if its medium has a limit.
func New[T any](run func(ctx context.Context, items []T) []error, opts ...Option) *Batch[T] {
	b := &Batch[T]{run: run}
	for _, o := range opts {
		o(&b.interval)
	}
	return b
}

// Option configures a Batch.
type Option func(interval *time.Duration)

// MinInterval makes rounds start at least d apart: callers arriving within
// d of a round's start wait for the next one, which then carries them all.
// A round after a quiet spell starts at once, so a lone caller waits no
// longer than without it. For a server whose work per round does not
// depend much on the items in it (an authoritative DNS server commits its
// zone once per update, at a cost that grows with the zone), this bounds
// the server's rounds per second whatever the callers' rate, at the price
// of up to d of waiting for each caller in a busy spell. Zero or less:
// rounds follow each other as soon as one ends.
func MinInterval(d time.Duration) Option {
	return func(interval *time.Duration) { *interval = d }
}

// Do adds item to the next round and waits for the round's result for it.
// A caller whose ctx ends stops waiting; the round still runs for the
// others, on a context no caller's cancellation ends (run bounds its own
// time).
func (b *Batch[T]) Do(ctx context.Context, item T) error {
	b.mu.Lock()
	if b.next == nil {
		b.next = &round[T]{done: make(chan struct{})}
	}
	r := b.next
	i := len(r.items)
	r.items = append(r.items, item)
	if !b.running {
		b.start(ctx)
	}
	b.mu.Unlock()
	select {
	case <-r.done:
		if i < len(r.errs) {
			return r.errs[i]
		}
		return ErrNoResult
	case <-ctx.Done():
		return ctx.Err()
	}
}

// start runs the next round (b.mu held) and, when it ends, the round that
// gathered meanwhile.
func (b *Batch[T]) start(ctx context.Context) {
	r := b.next
	b.next, b.running = nil, true
	go func() {
		began := time.Now()
		r.errs = b.run(context.WithoutCancel(ctx), r.items)
		close(r.done)
		// Still running while the interval lasts: callers meanwhile join
		// the next round instead of starting one.
		if wait := b.interval - time.Since(began); wait > 0 {
			time.Sleep(wait)
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		b.running = false
		if b.next != nil {
			b.start(ctx)
		}
	}()
}

// Each is a round function for a batch whose every item gets the same
// result: one operation for the whole round (a look), its error for all.
func Each[T any](op func(ctx context.Context) error) func(context.Context, []T) []error {
	return func(ctx context.Context, items []T) []error {
		err := op(ctx)
		errs := make([]error, len(items))
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
}
