package notify

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Pace is the notifier's send rate, set from what the relay accepts
// rather than fixed: a platform's relay may take hundreds of messages a
// second or a dozen, and a fixed rate is either too slow for a large
// incident or gets the platform's mail blocked. Like TCP's congestion
// control, it starts at Start messages a second and doubles every second
// in which the relay refused nothing and the rate was used (slow start),
// up to Max; a refusal for load (ErrThrottled: SMTP's 4xx, "try again
// later") halves it, at most once a second and never below one a second,
// after which it grows by a tenth a second (additive increase,
// multiplicative decrease). Safe for concurrent use.
type Pace struct {
	mu        sync.Mutex
	lim       *rate.Limiter
	rate, max float64
	slowStart bool
	// windowStart begins the current second; sent and refused count its
	// outcomes.
	windowStart   time.Time
	sent          int
	refused       bool
	lastDecrease  time.Time
	now           func() time.Time
	onRateChanged func(from, to float64)
}

// NewPace returns a pace starting at start messages a second, growing to
// max, letting burst messages go at once above the rate. onRateChanged
// (may be nil) sees every change of the rate: the log.
func NewPace(start, max float64, burst int, onRateChanged func(from, to float64)) *Pace {
	return newPace(start, max, burst, time.Now, onRateChanged)
}

func newPace(start, max float64, burst int, now func() time.Time, onRateChanged func(from, to float64)) *Pace {
	if max < start {
		max = start
	}
	if onRateChanged == nil {
		onRateChanged = func(float64, float64) {}
	}
	return &Pace{lim: rate.NewLimiter(rate.Limit(start), burst), rate: start, max: max, slowStart: true,
		windowStart: now(), now: now, onRateChanged: onRateChanged}
}

// Wait blocks until the next send may go, or ctx ends.
func (p *Pace) Wait(ctx context.Context) error {
	p.mu.Lock()
	p.advance()
	lim := p.lim
	p.mu.Unlock()
	return lim.Wait(ctx)
}

// Accepted records a send the receiver took.
func (p *Pace) Accepted() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.advance()
	p.sent++
}

// Refused records a refusal for load: the rate halves (at most once a
// second: the sends already in flight were paced at the old rate).
func (p *Pace) Refused() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.advance()
	p.refused = true
	p.slowStart = false
	now := p.now()
	if now.Sub(p.lastDecrease) < time.Second {
		return
	}
	p.lastDecrease = now
	p.set(max(p.rate/2, 1))
}

// Rate is the current rate, in messages a second.
func (p *Pace) Rate() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.advance()
	return p.rate
}

// advance closes the seconds that have passed: one without a refusal in
// which at least half the rate was used raises it (twice as much in slow
// start, a tenth after); an idle one leaves it (no evidence the relay
// takes more). Called with mu held.
func (p *Pace) advance() {
	now := p.now()
	if now.Sub(p.windowStart) < time.Second {
		return
	}
	if !p.refused && float64(p.sent) >= p.rate/2 {
		if p.slowStart {
			p.set(min(p.rate*2, p.max))
		} else {
			p.set(min(p.rate+max(p.rate/10, 1), p.max))
		}
	}
	p.windowStart, p.sent, p.refused = now, 0, false
}

// set changes the rate. Called with mu held.
func (p *Pace) set(r float64) {
	if r == p.rate {
		return
	}
	from := p.rate
	p.rate = r
	p.lim.SetLimit(rate.Limit(r))
	p.onRateChanged(from, r)
}
