package app_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/platform/localstack"
	"github.com/lockdown/lockdown/pkg/platform/testwait"
	"github.com/lockdown/lockdown/services/containment/internal/recovery"
	"github.com/lockdown/lockdown/services/containment/internal/vaultadmin"
)

// TestWitnessDoesNotHoldTheSeal: an open sys/monitor request holds Vault's
// seal back (Vault waits up to 90 s for in-flight requests and answers
// nothing meanwhile). The ceremony's witness closes its stream on Vault's
// "marked as sealed" line, so a seal during a ceremony still completes: the
// seal call here has 10 s, against Vault's 90.
func TestWitnessDoesNotHoldTheSeal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := localstack.Start(ctx, localstack.Options{Vault: true})
	must(t, err)
	t.Cleanup(func() { s.Close() })
	admin, err := vaultadmin.New(s.Vault.Addr, s.Vault.LockdownTokens.RecoveryToken, 5*time.Second)
	must(t, err)
	root, err := s.Vault.Client()
	must(t, err)
	seal := func() time.Duration {
		sctx, stop := context.WithTimeout(ctx, 10*time.Second)
		defer stop()
		start := time.Now()
		if err := root.Sys().SealWithContext(sctx); err != nil {
			t.Fatalf("seal: %v", err)
		}
		return time.Since(start)
	}
	alone := seal()
	must(t, s.Vault.Unseal(ctx))

	w := recovery.NewWitness()
	w.Want(time.Minute)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); admin.Watch(wctx, w, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	defer func() { stop(); <-done }()
	testwait.For(t, 10*time.Second, "the witness to watch", func() bool { ok, _ := w.Watching(); return ok })
	watched := seal()
	if ok, _ := w.Watching(); ok {
		t.Fatal("the witness still watches a sealed Vault")
	}
	t.Logf("seal took %s alone, %s with the witness's stream open", alone.Round(time.Millisecond), watched.Round(time.Millisecond))
}
