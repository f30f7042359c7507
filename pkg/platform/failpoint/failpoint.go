// Package failpoint kills the process at named points of its code, so the
// crash tests can stop a service right after a given commit or publish —
// with SIGKILL, as a crash or an OOM kill does, not with a context cancel.
//
// Failpoints are inert unless the test-only environment variable
// LOCKDOWN_TEST_FAILPOINTS names them (comma-separated; "name:N" fires on
// the Nth time the point is reached, default the first). A process that
// has any armed logs so at start. Production configurations never set it;
// a Set built from an empty variable does nothing and costs a map lookup.
package failpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// EnvVar is the test-only variable that arms failpoints.
const EnvVar = "LOCKDOWN_TEST_FAILPOINTS"

// Set is the failpoints armed in this process. The zero value and nil arm
// none.
type Set struct {
	mu    sync.Mutex
	armed map[string]int // name → hits left before firing
}

// FromEnv reads LOCKDOWN_TEST_FAILPOINTS.
func FromEnv() (*Set, error) { return Parse(os.Getenv(EnvVar)) }

// Parse reads a failpoint list ("a,b:3").
func Parse(spec string) (*Set, error) {
	s := &Set{armed: map[string]int{}}
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, nth, hasN := strings.Cut(item, ":")
		n := 1
		if hasN {
			var err error
			if n, err = strconv.Atoi(nth); err != nil || n < 1 {
				return nil, fmt.Errorf("%s: %q: the count after ':' must be a positive number", EnvVar, item)
			}
		}
		s.armed[name] = n
	}
	return s, nil
}

// Armed lists the armed failpoints (for the start-up log line).
func (s *Set) Armed() []string {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.armed))
	for n := range s.armed {
		out = append(out, n)
	}
	return out
}

// Hit marks that the code reached the named point; when the point is
// armed and this is its Nth hit, the process kills itself with SIGKILL.
func (s *Set) Hit(name string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	left, ok := s.armed[name]
	if ok {
		left--
		s.armed[name] = left
	}
	s.mu.Unlock()
	if ok && left == 0 {
		fmt.Fprintf(os.Stderr, "failpoint %s: SIGKILL\n", name)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way; never return into the code after the point
	}
}
