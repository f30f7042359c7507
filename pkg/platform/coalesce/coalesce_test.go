package coalesce_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/platform/coalesce"
)

// blockingLook is a look that reports which round it was and waits to be
// released, so a test decides when each round ends.
type blockingLook struct {
	rounds  atomic.Int32
	started chan int32
	release chan struct{}
}

func newBlockingLook() *blockingLook {
	return &blockingLook{started: make(chan int32, 16), release: make(chan struct{})}
}

func (b *blockingLook) look(context.Context) error {
	n := b.rounds.Add(1)
	b.started <- n
	<-b.release
	return fmt.Errorf("round %d", n)
}

func TestBatch(t *testing.T) {
	t.Run("a caller arriving during a look gets the next one, which began after it asked", func(t *testing.T) {
		b := newBlockingLook()
		s := coalesce.New(coalesce.Each[struct{}](b.look))
		first := make(chan error, 1)
		go func() { first <- s.Do(context.Background(), struct{}{}) }()
		if n := <-b.started; n != 1 {
			t.Fatalf("first round is %d", n)
		}
		second := make(chan error, 1)
		go func() { second <- s.Do(context.Background(), struct{}{}) }()
		time.Sleep(20 * time.Millisecond) // the second caller is waiting
		b.release <- struct{}{}
		if err := <-first; err == nil || err.Error() != "round 1" {
			t.Fatalf("first caller got %v, want round 1", err)
		}
		if n := <-b.started; n != 2 {
			t.Fatalf("next round is %d", n)
		}
		b.release <- struct{}{}
		if err := <-second; err == nil || err.Error() != "round 2" {
			t.Fatalf("the caller that asked during round 1 got %v, want round 2", err)
		}
	})

	t.Run("callers waiting together share one look", func(t *testing.T) {
		b := newBlockingLook()
		s := coalesce.New(coalesce.Each[struct{}](b.look))
		go func() { _ = s.Do(context.Background(), struct{}{}) }()
		<-b.started
		var wg sync.WaitGroup
		results := make(chan error, 10)
		for range 10 {
			wg.Add(1)
			go func() { defer wg.Done(); results <- s.Do(context.Background(), struct{}{}) }()
		}
		time.Sleep(20 * time.Millisecond)
		b.release <- struct{}{} // round 1 ends; round 2 serves the ten
		<-b.started
		b.release <- struct{}{}
		wg.Wait()
		close(results)
		for err := range results {
			if err == nil || err.Error() != "round 2" {
				t.Fatalf("a waiting caller got %v, want round 2", err)
			}
		}
		if n := b.rounds.Load(); n != 2 {
			t.Fatalf("%d looks for eleven callers, want 2", n)
		}
	})

	t.Run("a caller that gives up does not end the look of the others", func(t *testing.T) {
		b := newBlockingLook()
		s := coalesce.New(coalesce.Each[struct{}](b.look))
		ctx, cancel := context.WithCancel(context.Background())
		gaveUp := make(chan error, 1)
		go func() { gaveUp <- s.Do(ctx, struct{}{}) }()
		<-b.started
		other := make(chan error, 1)
		go func() { other <- s.Do(context.Background(), struct{}{}) }()
		cancel()
		if err := <-gaveUp; !errors.Is(err, context.Canceled) {
			t.Fatalf("the caller that gave up got %v", err)
		}
		b.release <- struct{}{}
		<-b.started
		b.release <- struct{}{}
		if err := <-other; err == nil || err.Error() != "round 2" {
			t.Fatalf("the other caller got %v, want round 2", err)
		}
	})
}

func TestBatchItems(t *testing.T) {
	t.Run("each caller gets its own item's result, and a round carries every item that waited", func(t *testing.T) {
		release := make(chan struct{})
		var mu sync.Mutex
		var rounds [][]int
		b := coalesce.New(func(_ context.Context, items []int) []error {
			<-release
			mu.Lock()
			rounds = append(rounds, append([]int(nil), items...))
			mu.Unlock()
			errs := make([]error, len(items))
			for i, it := range items {
				if it%2 == 1 {
					errs[i] = fmt.Errorf("odd %d", it)
				}
			}
			return errs
		})
		results := make(chan string, 5)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); results <- fmt.Sprintf("%d %v", 0, b.Do(context.Background(), 0)) }()
		time.Sleep(20 * time.Millisecond) // round 1 runs with item 0
		for i := 1; i <= 4; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); results <- fmt.Sprintf("%d %v", i, b.Do(context.Background(), i)) }()
		}
		time.Sleep(20 * time.Millisecond)
		close(release)
		wg.Wait()
		close(results)
		got := map[string]bool{}
		for r := range results {
			got[r] = true
		}
		for _, want := range []string{"0 <nil>", "1 odd 1", "2 <nil>", "3 odd 3", "4 <nil>"} {
			if !got[want] {
				t.Fatalf("results %v lack %q", got, want)
			}
		}
		if len(rounds) != 2 || len(rounds[0]) != 1 || len(rounds[1]) != 4 {
			t.Fatalf("rounds %v, want [0] then the four that waited", rounds)
		}
	})
	t.Run("a round giving too few results is an error, not a success", func(t *testing.T) {
		b := coalesce.New(func(context.Context, []int) []error { return nil })
		if err := b.Do(context.Background(), 1); !errors.Is(err, coalesce.ErrNoResult) {
			t.Fatalf("got %v, want ErrNoResult", err)
		}
	})
}

func TestMinInterval(t *testing.T) {
	t.Run("callers arriving within the interval after a round began share the next round, which starts no sooner", func(t *testing.T) {
		const interval = 300 * time.Millisecond
		var mu sync.Mutex
		var starts []time.Time
		var sizes []int
		b := coalesce.New(func(_ context.Context, items []int) []error {
			mu.Lock()
			starts, sizes = append(starts, time.Now()), append(sizes, len(items))
			mu.Unlock()
			return make([]error, len(items))
		}, coalesce.MinInterval(interval))
		if err := b.Do(context.Background(), 0); err != nil {
			t.Fatal(err)
		}
		// Round 1 has ended; without the interval each of these would
		// start a round of its own as soon as it found none running.
		var wg sync.WaitGroup
		for i := 1; i <= 5; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := b.Do(context.Background(), i); err != nil {
					t.Error(err)
				}
			}()
			time.Sleep(10 * time.Millisecond)
		}
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(sizes) != 2 || sizes[1] != 5 {
			t.Fatalf("rounds of %v items, want [1 5]", sizes)
		}
		if gap := starts[1].Sub(starts[0]); gap < interval {
			t.Fatalf("second round began %v after the first, want at least %v", gap, interval)
		}
	})
}
