package app_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/lockdown/lockdown/services/containment/internal/recovery"
	"github.com/lockdown/lockdown/services/containment/internal/vaultadmin"
	"github.com/lockdown/lockdown/testkit/localstack"
	"github.com/lockdown/lockdown/testkit/testwait"
)

// TestWitnessDoesNotHoldTheSeal: an open sys/monitor request holds Vault's
// state lock for reading, so every state change waits for it — a seal (up
// to 90 s, answering nothing meanwhile) and, with no limit, an unseal call
// on an unsealed node. The ceremony's witness closes its stream on Vault's
// "marked as sealed" line and when its watchdog request stops being
// answered, so both complete: each call here has 10 s.
func TestWitnessDoesNotHoldTheSeal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.Options{Vault: true})
	admin, err := vaultadmin.New([]string{s.Vault.Addr}, s.Vault.RecoveryToken, 5*time.Second)
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
	// A key holder's unseal call on the unsealed node takes Vault's state
	// lock for writing: it waits for the stream, and Vault answers nobody
	// meanwhile. The watchdog lets it through within seconds.
	holder, err := s.Vault.Client()
	must(t, err)
	holder.ClearToken()
	uctx, ustop := context.WithTimeout(ctx, 10*time.Second)
	start := time.Now()
	_, err = holder.Sys().UnsealWithContext(uctx, s.Vault.UnsealKeys[0])
	ustop()
	if err != nil {
		t.Fatalf("an unseal call on the unsealed node while the stream was open: %v", err)
	}
	unsealCall := time.Since(start)
	testwait.For(t, 10*time.Second, "the witness to watch again", func() bool { ok, _ := w.Watching(); return ok })
	watched := seal()
	if ok, _ := w.Watching(); ok {
		t.Fatal("the witness still watches a sealed Vault")
	}
	t.Logf("seal took %s alone, %s with the witness's stream open; an unseal call on the unsealed node %s", alone.Round(time.Millisecond),
		watched.Round(time.Millisecond), unsealCall.Round(time.Millisecond))
}
