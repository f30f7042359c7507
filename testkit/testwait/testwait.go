// Package testwait is the readiness wait of the integration tests: poll a
// condition of an asynchronous step until it holds, instead of sleeping.
package testwait

import (
	"testing"
	"time"
)

// For polls cond every 20 ms and fails the test when it does not hold
// within timeout.
func For(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
