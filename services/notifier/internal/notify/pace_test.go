package notify

import (
	"testing"
	"time"
)

// clock is a settable now for the pace's windows.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// second spends one second sending n messages that the relay accepts.
func (c *clock) second(p *Pace, n int) {
	for range n {
		p.Accepted()
	}
	c.t = c.t.Add(time.Second)
}

func TestPace(t *testing.T) {
	t.Run("while the relay takes everything the rate doubles each second up to the maximum", func(t *testing.T) {
		c := &clock{t: time.Unix(0, 0)}
		p := newPace(20, 200, 5, c.now, nil)
		var rates []float64
		for range 6 {
			c.second(p, int(p.Rate()))
			rates = append(rates, p.Rate())
		}
		want := []float64{40, 80, 160, 200, 200, 200}
		for i := range want {
			if rates[i] != want[i] {
				t.Fatalf("rates %v, want %v", rates, want)
			}
		}
	})
	t.Run("a refusal halves the rate once a second, then it grows by a tenth a second", func(t *testing.T) {
		c := &clock{t: time.Unix(0, 0)}
		p := newPace(100, 400, 5, c.now, nil)
		c.second(p, 100) // 200
		p.Refused()
		p.Refused() // same second: the sends in flight were paced at the old rate
		if r := p.Rate(); r != 100 {
			t.Fatalf("after two refusals in one second: %v, want 100", r)
		}
		c.t = c.t.Add(time.Second) // the refusal's second ends: no growth
		if r := p.Rate(); r != 100 {
			t.Fatalf("the second of the refusal raised the rate to %v", r)
		}
		c.second(p, 100)
		if r := p.Rate(); r != 110 {
			t.Fatalf("a clean second after a refusal: %v, want 110 (no more doubling)", r)
		}
	})
	t.Run("an idle second raises nothing: no evidence the relay takes more", func(t *testing.T) {
		c := &clock{t: time.Unix(0, 0)}
		p := newPace(20, 200, 5, c.now, nil)
		c.second(p, 3)
		if r := p.Rate(); r != 20 {
			t.Fatalf("3 messages in a second at 20/s raised the rate to %v", r)
		}
	})
	t.Run("refusals never take the rate below one a second", func(t *testing.T) {
		c := &clock{t: time.Unix(0, 0)}
		p := newPace(4, 4, 1, c.now, nil)
		for range 5 {
			p.Refused()
			c.t = c.t.Add(time.Second)
		}
		if r := p.Rate(); r != 1 {
			t.Fatalf("rate %v, want 1", r)
		}
	})
}
