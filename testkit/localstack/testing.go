package localstack

import (
	"context"
	"testing"
)

// StartTest starts the chosen servers for a test or benchmark, fails it at
// once when they do not start, and stops them when it ends (tb.Cleanup):
// the set-up every test of a real stack repeats, written once.
func StartTest(tb testing.TB, ctx context.Context, opts Options) *Stack {
	tb.Helper()
	s, err := Start(ctx, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}
