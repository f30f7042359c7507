package recovery

import (
	"context"
	"errors"
	"testing"
	"time"
)

func initialized(nonce string) VaultLogLine {
	return VaultLogLine{Message: logRekeyInitialized, Nonce: nonce}
}

var rekeyed = VaultLogLine{Message: logBarrierRekeyed}

func TestWitness(t *testing.T) {
	ctx := context.Background()
	proves := func(w *Witness, nonce string) bool { return w.Completed(ctx, nonce, 0) }
	connected := func() (*Witness, time.Time) {
		w := NewWitness()
		at := time.Now()
		w.Connected(at)
		return w, at
	}

	t.Run("an end is observed only by an unbroken session that saw the ceremony run", func(t *testing.T) {
		w, at := connected()
		w.Line(initialized("n1"))
		if !w.Observed("n1") {
			t.Fatal("a session that saw the start did not observe")
		}
		// Vault frozen: the stream is lost and reopened. The holders may
		// have completed the ceremony meanwhile; nothing says it was
		// cancelled.
		w.Disconnected(errors.New("stream lost"))
		w.Connected(at.Add(time.Minute))
		if w.Observed("n1") {
			t.Fatal("a session opened after the start claims to have observed the end")
		}
		w.SawInProgress("n2", at.Add(2*time.Minute))
		if !w.Observed("n2") {
			t.Fatal("a ceremony seen running during the session is observed")
		}
		w.Line(VaultLogLine{Dropped: true})
		if w.Observed("n2") {
			t.Fatal("a session with dropped lines observed")
		}
	})

	t.Run("a barrier rekey right after the ceremony's start proves it", func(t *testing.T) {
		w, _ := connected()
		w.Line(initialized("n1"))
		if proves(w, "n1") {
			t.Fatal("proven before any rekey")
		}
		w.Line(VaultLogLine{Message: "some other line"})
		w.Line(rekeyed)
		if !proves(w, "n1") {
			t.Fatal("not proven")
		}
	})

	t.Run("a rekey started after ours was cancelled owns the completion that follows", func(t *testing.T) {
		w, _ := connected()
		w.Line(initialized("ours"))
		w.Line(initialized("intruder"))
		w.Line(rekeyed)
		if proves(w, "ours") {
			t.Fatal("the intruder's rekey proved ours")
		}
		if !proves(w, "intruder") {
			t.Fatal("the intruder's completion not attributed to it")
		}
	})

	t.Run("a ceremony running before the watch began is proven by the watch's first rekey line", func(t *testing.T) {
		w, at := connected()
		w.SawInProgress("ours", at.Add(time.Millisecond))
		w.Line(rekeyed)
		if !proves(w, "ours") {
			t.Fatal("not proven")
		}
	})

	t.Run("a status read sent before the watch began binds nothing", func(t *testing.T) {
		w, at := connected()
		w.SawInProgress("ours", at.Add(-time.Millisecond))
		w.Line(rekeyed)
		if proves(w, "ours") {
			t.Fatal("proven by a read from before the watch")
		}
	})

	t.Run("a late line of an older rekey is not taken for ours", func(t *testing.T) {
		// The read showing ours running returned before the stream
		// delivered an older rekey's end and then our start.
		w, at := connected()
		w.SawInProgress("ours", at.Add(time.Millisecond))
		w.Line(rekeyed)
		w.Line(initialized("ours"))
		if proves(w, "ours") {
			t.Fatal("an older completion proved ours")
		}
		w.Line(rekeyed)
		if !proves(w, "ours") {
			t.Fatal("our own completion not proven")
		}
	})

	t.Run("a cancelled ceremony followed by another rekey is not proven", func(t *testing.T) {
		w, at := connected()
		w.SawInProgress("ours", at.Add(time.Millisecond))
		w.Line(initialized("other"))
		w.Line(rekeyed)
		if proves(w, "ours") {
			t.Fatal("proven by another rekey's completion")
		}
	})

	t.Run("a gap in the stream proves nothing", func(t *testing.T) {
		w, _ := connected()
		w.Line(initialized("ours"))
		w.Line(VaultLogLine{Dropped: true})
		w.Line(rekeyed)
		if proves(w, "ours") {
			t.Fatal("proven across a gap")
		}
	})

	t.Run("lines while disconnected are ignored", func(t *testing.T) {
		w := NewWitness()
		w.Line(initialized("ours"))
		w.Line(rekeyed)
		if proves(w, "ours") {
			t.Fatal("proven without a session")
		}
		if ok, _ := w.Watching(); ok {
			t.Fatal("watching without a session")
		}
	})

	t.Run("a proof outlives its session", func(t *testing.T) {
		w, _ := connected()
		w.Line(initialized("ours"))
		w.Line(rekeyed)
		w.Disconnected(nil)
		w.Connected(time.Now())
		w.Line(initialized("next"))
		if !proves(w, "ours") {
			t.Fatal("the proof was lost with its session")
		}
	})

	t.Run("a ceremony whose start was seen in an earlier session is not proven by a later one", func(t *testing.T) {
		w, _ := connected()
		w.Line(initialized("ours"))
		w.Disconnected(nil)
		w.Connected(time.Now())
		w.Line(rekeyed)
		if proves(w, "ours") {
			t.Fatal("proven without a status read in the new session")
		}
	})

	t.Run("the check waits for a line still in flight", func(t *testing.T) {
		w, _ := connected()
		w.Line(initialized("ours"))
		go func() {
			time.Sleep(50 * time.Millisecond)
			w.Line(rekeyed)
		}()
		if !w.Completed(ctx, "ours", 5*time.Second) {
			t.Fatal("not proven")
		}
	})
}
