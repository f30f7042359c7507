package retry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/platform/retry"
)

func TestBackoff(t *testing.T) {
	t.Run("waits double from Initial up to Max, and a reset starts again", func(t *testing.T) {
		b := retry.Policy{Initial: 100 * time.Millisecond, Max: time.Second}.Start()
		var got []time.Duration
		for range 6 {
			got = append(got, b.Next())
		}
		want := []time.Duration{100, 200, 400, 800, 1000, 1000}
		for i := range want {
			if got[i] != want[i]*time.Millisecond {
				t.Fatalf("waits %v, want %v ms", got, want)
			}
		}
		b.Reset()
		if w := b.Next(); w != 100*time.Millisecond {
			t.Fatalf("after a reset %v", w)
		}
	})
	t.Run("a Max below Initial caps the first wait, and a zero policy still waits", func(t *testing.T) {
		if w := (retry.Policy{Initial: 100 * time.Millisecond, Max: 20 * time.Millisecond}).Start().Next(); w != 20*time.Millisecond {
			t.Fatalf("first wait %v", w)
		}
		if w := (retry.Policy{}).Start().Next(); w <= 0 {
			t.Fatalf("a zero policy waits %v", w)
		}
	})
	t.Run("jitter spreads each wait within its fraction", func(t *testing.T) {
		b := retry.Policy{Initial: time.Second, Max: time.Second, Jitter: 0.5}.Start()
		spread := map[time.Duration]bool{}
		for range 50 {
			w := b.Next()
			if w < 500*time.Millisecond || w > 1500*time.Millisecond {
				t.Fatalf("wait %v outside 0.5–1.5 s", w)
			}
			spread[w] = true
		}
		if len(spread) < 10 {
			t.Fatalf("only %d different waits in 50", len(spread))
		}
	})
}

func TestDo(t *testing.T) {
	fast := retry.Policy{Initial: time.Millisecond, Max: 4 * time.Millisecond}
	t.Run("an operation that fails twice is run a third time and succeeds", func(t *testing.T) {
		calls, notified := 0, 0
		err := retry.Do(context.Background(), fast, func(context.Context) error {
			calls++
			if calls < 3 {
				return errors.New("away")
			}
			return nil
		}, func(error, time.Duration) { notified++ })
		if err != nil || calls != 3 || notified != 2 {
			t.Fatalf("err %v after %d calls, %d notices", err, calls, notified)
		}
	})
	t.Run("a permanent error ends it at once and is returned as it was", func(t *testing.T) {
		cause := errors.New("refused")
		calls := 0
		err := retry.Do(context.Background(), fast, func(context.Context) error { calls++; return retry.Permanent(cause) }, nil)
		if err != cause || calls != 1 {
			t.Fatalf("err %v after %d calls", err, calls)
		}
	})
	t.Run("the context's end stops it with the last failure", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		away := errors.New("away")
		err := retry.Do(ctx, fast, func(context.Context) error { return away }, nil)
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, away) {
			t.Fatalf("err %v", err)
		}
	})
}
