package vaulttoken

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// ErrNoToken is returned by Open when neither a token nor a token file is
// configured, or the file is empty.
var ErrNoToken = errors.New("no vault token")

// ErrFixed is returned by Replace for a token given in the environment:
// there is nowhere to hand a successor over that outlives the process.
var ErrFixed = errors.New("the token is fixed by the environment; configure its _TOKEN_FILE to let Lockdown replace it")

// Source is where a service's Vault token comes from. From a file, it can
// be replaced: containment writes the successors of Lockdown's own tokens
// there during an incident (its own, and the rotator's, whose processes
// re-read the file), so the token survives a restart and no token that
// existed before the incident is needed after it. From the environment it
// is fixed.
type Source struct {
	path string

	mu       sync.Mutex
	token    string
	onChange []func(string)
}

// Open returns the source for a token given directly (token) or in a file
// (path); the file wins when both are set.
func Open(token, path string) (*Source, error) {
	if path == "" {
		if token == "" {
			return nil, ErrNoToken
		}
		return &Source{token: token}, nil
	}
	s := &Source{path: path}
	tok, err := s.read()
	if err != nil {
		return nil, err
	}
	s.token = tok
	return s, nil
}

func (s *Source) read() (string, error) {
	raw, err := os.ReadFile(s.path)
	if err != nil {
		return "", fmt.Errorf("vault token file: %w", err)
	}
	tok := string(bytes.TrimSpace(raw))
	if tok == "" || strings.ContainsAny(tok, " \n\t") {
		return "", fmt.Errorf("%w: %s holds no single token", ErrNoToken, s.path)
	}
	return tok, nil
}

// Token is the current token.
func (s *Source) Token() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.token
}

// Replaceable says whether Replace can hand a successor over.
func (s *Source) Replaceable() bool { return s.path != "" }

// OnChange registers fn to be called with every new token (the clients
// that use it swap it in).
func (s *Source) OnChange(fn func(token string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onChange = append(s.onChange, fn)
}

// Replace writes token to the file atomically (a private temporary file,
// synced, renamed over the old one: a crash leaves the old token or the new
// one, never a torn file) and then swaps it in.
func (s *Source) Replace(token string) error {
	if s.path == "" {
		return ErrFixed
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.path), "."+filepath.Base(s.path)+".*")
	if err != nil {
		return fmt.Errorf("vault token file: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // gone after the rename (an error then); removes a failed write
	_, err = tmp.WriteString(token + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.path)
	}
	if err != nil {
		return fmt.Errorf("vault token file: %w", err)
	}
	if dir, err := os.Open(filepath.Dir(s.path)); err == nil {
		// Best effort: the rename is durable on most filesystems without
		// the sync, and the directory was opened only for it.
		_ = dir.Sync()
		_ = dir.Close()
	}
	s.set(token)
	return nil
}

// Reload re-reads the file and swaps in a token that changed there. It
// reports whether it changed.
func (s *Source) Reload() (bool, error) {
	if s.path == "" {
		return false, nil
	}
	tok, err := s.read()
	if err != nil {
		return false, err
	}
	return s.set(tok), nil
}

func (s *Source) set(token string) bool {
	s.mu.Lock()
	if token == s.token {
		s.mu.Unlock()
		return false
	}
	s.token = token
	fns := append([]func(string){}, s.onChange...)
	s.mu.Unlock()
	for _, fn := range fns {
		fn(token)
	}
	return true
}

// Watch re-reads the file every interval until ctx ends, so a process
// picks up a successor another process wrote without a restart.
func (s *Source) Watch(ctx context.Context, interval time.Duration) {
	if s.path == "" {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Reload() //nolint:errcheck // a missing or torn read keeps the current token; the next tick tries again
		}
	}
}
