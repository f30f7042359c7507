package recovery

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Why a witness: Vault shows nothing through its API that tells a
// completed rekey from a cancelled one once it has ended, unless the
// ceremony ran with PGP keys and without verification (see completed).
// The rekey endpoints are served outside Vault's router
// (http/sys_rekey.go) and so are never written to an audit device; a
// DELETE sys/rekey/init needs no token. What Vault does say is in its
// server log: every rekey start logs "rekey initialized" with its nonce,
// and the call that rekeys the barrier logs "security barrier rekeyed"
// (vault/rekey.go, performBarrierRekey). Only one rekey can be in
// progress at a time, so an unbroken stream of that log (sys/monitor)
// ties each completion to the rekey started last. The witness keeps that
// stream's facts; recovery asks it whether a ceremony completed.

// VaultLogLine is one line of Vault's server log, as far as the witness
// needs it.
type VaultLogLine struct {
	// Message is the log line's message ("@message").
	Message string
	// Nonce is the "nonce" field ("" when the line has none).
	Nonce string
	// Dropped is set for the monitor's own notice that it dropped lines:
	// the stream has a gap and its facts prove nothing after it.
	Dropped bool
}

// The messages the witness reads (vault/rekey.go at the pinned version).
const (
	logRekeyInitialized = "rekey initialized"
	logBarrierRekeyed   = "security barrier rekeyed"
)

// ErrNoWitness is returned by CeremonyStep when the ceremony can only be
// proven through Vault's log and the log cannot be watched: no ceremony
// is started that could never be proven.
var ErrNoWitness = errors.New("Vault's server log (sys/monitor) is not being watched") //nolint:staticcheck // ST1005: Vault is a name, capitalized

// ErrUnprovable is returned by CeremonyStep for a recovery-key rekey
// (auto-unseal) configured so that its completion cannot be proven: Vault
// logs nothing when a recovery-key rekey completes, so only PGP keys
// without verification prove it.
var ErrUnprovable = errors.New("a recovery-key rekey is provable only with PGP keys and without verification (LOCKDOWN_REKEY_PGP_DIR, LOCKDOWN_REKEY_REQUIRE_VERIFICATION=false)")

// Witness holds what an unbroken stream of Vault's log showed about
// rekeys. It is safe for concurrent use: the stream feeds it while the
// engine asks it.
type Witness struct {
	mu          sync.Mutex
	connected   bool
	connectedAt time.Time
	lastErr     error
	// The current session's rekey lines, in order, and the nonces a
	// status read sent after the session began showed in progress.
	lines  []VaultLogLine
	seen   map[string]bool
	broken bool
	// proven are the nonces earlier sessions proved completed.
	proven  map[string]bool
	changed chan struct{}
	// The stream is open only while a ceremony wants it (an open request
	// holds Vault's seal back, see vaultadmin.Watch).
	wantUntil, wantSince time.Time
	wake                 chan struct{}
}

// NewWitness returns a witness with no session.
func NewWitness() *Witness {
	return &Witness{proven: map[string]bool{}, seen: map[string]bool{}, changed: make(chan struct{}), wake: make(chan struct{}, 1)}
}

// Want asks for the stream for the next d (each ceremony step renews it).
func (w *Witness) Want(d time.Duration) {
	w.mu.Lock()
	now := time.Now()
	if !now.Before(w.wantUntil) {
		w.wantSince = now
	}
	w.wantUntil = now.Add(d)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Wanted says whether a ceremony wants the stream now.
func (w *Witness) Wanted() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return time.Now().Before(w.wantUntil)
}

// Woken is signalled when Want is called.
func (w *Witness) Woken() <-chan struct{} { return w.wake }

// wantedFor is how long the stream has been wanted without a break.
func (w *Witness) wantedFor() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !time.Now().Before(w.wantUntil) {
		return 0
	}
	return time.Since(w.wantSince)
}

// Connected starts a session: the stream was opened at at. What the
// previous session proved is kept.
func (w *Witness) Connected(at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fold()
	w.connected, w.connectedAt, w.lastErr = true, at, nil
}

// Disconnected ends the session (err says why, for the stuck reason).
func (w *Witness) Disconnected(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fold()
	w.connected, w.lastErr = false, err
}

// fold moves the session's proofs into proven and clears the session.
func (w *Witness) fold() {
	for n := range w.nonces() {
		if w.sessionProves(n) {
			w.proven[n] = true
		}
	}
	w.lines, w.seen, w.broken = nil, map[string]bool{}, false
}

func (w *Witness) nonces() map[string]bool {
	out := map[string]bool{}
	for n := range w.seen {
		out[n] = true
	}
	for _, l := range w.lines {
		if l.Nonce != "" {
			out[l.Nonce] = true
		}
	}
	return out
}

// Line feeds one line of the stream.
func (w *Witness) Line(l VaultLogLine) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.connected {
		return
	}
	switch {
	case l.Dropped:
		w.broken = true
	case l.Message == logRekeyInitialized || l.Message == logBarrierRekeyed:
		w.lines = append(w.lines, VaultLogLine{Message: l.Message, Nonce: l.Nonce})
	default:
		return
	}
	close(w.changed)
	w.changed = make(chan struct{})
}

// SawInProgress records that a status read sent at sent showed the rekey
// with nonce in progress. Sent after the session began, it shows the
// rekey was running during the session, so a session that did not see it
// start saw it from before its start.
func (w *Witness) SawInProgress(nonce string, sent time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.connected && sent.After(w.connectedAt) {
		w.seen[nonce] = true
	}
}

// Watching says whether a session is open, and why not.
func (w *Witness) Watching() (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.connected, w.lastErr
}

// Completed says whether the stream proved the rekey with nonce
// completed, waiting up to wait for lines still in flight (the status
// read that saw the rekey end can overtake the log line of its end).
func (w *Witness) Completed(ctx context.Context, nonce string, wait time.Duration) bool {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		ok, changed := w.proven[nonce] || w.sessionProves(nonce), w.changed
		w.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// Observed says whether the current session watched the rekey with nonce
// without a gap from a moment it was running (its start line, or a status
// read showing it in progress) until now: only then does the absence of
// its completion line show it was cancelled. A session opened since (Vault
// frozen, the stream lost, containment restarted) or broken by dropped
// lines observed nothing: the holders may have completed it unseen.
func (w *Witness) Observed(nonce string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.connected || w.broken {
		return false
	}
	if w.seen[nonce] {
		return true
	}
	for _, l := range w.lines {
		if l.Message == logRekeyInitialized && l.Nonce == nonce {
			return true
		}
	}
	return false
}

// sessionProves applies the rule to the current session (w.mu held):
//   - the session saw the rekey start: a "security barrier rekeyed" after
//     its "rekey initialized" with no other start in between is its own;
//   - it did not, but a status read during the session showed it running:
//     it started before the session, so the session's first rekey line,
//     if it is "security barrier rekeyed", is its completion.
//
// A gap (dropped lines) proves nothing.
func (w *Witness) sessionProves(nonce string) bool {
	if w.broken {
		return false
	}
	for i, l := range w.lines {
		if l.Message == logRekeyInitialized && l.Nonce == nonce {
			return i+1 < len(w.lines) && w.lines[i+1].Message == logBarrierRekeyed
		}
	}
	return w.seen[nonce] && len(w.lines) > 0 && w.lines[0].Message == logBarrierRekeyed
}
