package app_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/services/containment/internal/recovery"
	"github.com/lockdown/lockdown/services/containment/internal/vaultadmin"
	"github.com/lockdown/lockdown/testkit/localstack"
	"github.com/lockdown/lockdown/testkit/testwait"
)

// ceremonyLoop drives a ceremony the way the engine does (one step per
// poll), without a store: the store is not what this test is about.
type ceremonyLoop struct {
	mu sync.Mutex
	c  recovery.Ceremony
}

func (l *ceremonyLoop) run(ctx context.Context, r *recovery.Recoverer, id string) {
	c := recovery.Ceremony{Round: 1}
	for ctx.Err() == nil {
		if next, err := r.CeremonyStep(ctx, id, c); err == nil {
			c = next
			l.mu.Lock()
			l.c = c
			l.mu.Unlock()
			if c.Phase == recovery.CeremonyCompleted {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (l *ceremonyLoop) get() recovery.Ceremony {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.c
}

// TestRecoveryKeysAutoUnseal runs the ceremony on a real auto-unseal Vault
// (transit seal through the stack's Vault): seal-status reports a recovery
// seal, so the rekey-recovery-key endpoints are used, and afterwards the old
// recovery keys are refused while the new ones are accepted.
func TestRecoveryKeysAutoUnseal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.Options{Vault: true})
	auto, err := s.StartAutoUnsealVault(ctx)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := vaultadmin.New([]string{auto.Addr}, auto.RecoveryToken, 5*time.Second)
	must(t, err)
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	// Vault logs nothing when a recovery-key rekey completes: with
	// verification (or without PGP keys) it could never be proven, so it
	// is never started.
	unprovable := recovery.New(recovery.Config{Shares: 5, Threshold: 3, RequireVerification: true}, admin, recovery.NewWitness(), discard)
	if _, err := unprovable.CeremonyStep(ctx, "inc-auto", recovery.Ceremony{Round: 1, RecoveryKeys: true}); !errors.Is(err, recovery.ErrUnprovable) {
		t.Fatalf("a recovery-key ceremony with verification: %v, want ErrUnprovable", err)
	}
	holderKeys := make([]*openpgp.Entity, 5)
	pgpKeys := make([]string, 5)
	for i := range holderKeys {
		e, err := openpgp.NewEntity(fmt.Sprintf("holder %d", i+1), "", "", &packet.Config{RSABits: 2048})
		must(t, err)
		var bin bytes.Buffer
		must(t, e.Serialize(&bin))
		holderKeys[i], pgpKeys[i] = e, base64.StdEncoding.EncodeToString(bin.Bytes())
	}
	r := recovery.New(recovery.Config{Shares: 5, Threshold: 3, PGPKeys: pgpKeys, Poll: 20 * time.Millisecond,
		KeepAccessors: []string{auto.SealAccessor}, BreakGlass: []string{auto.RootAccessor}}, admin, nil, discard)
	if _, _, err := r.Revoke(ctx, "inc-auto", events.AccessRevokedData{}, nil); err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	loop := &ceremonyLoop{}
	loopDone := make(chan struct{})
	go func() { defer close(loopDone); loop.run(rctx, r, "inc-auto") }()
	defer func() { stop(); <-loopDone }()

	var nonce string
	testwait.For(t, 10*time.Second, "the ceremony to open", func() bool {
		c := loop.get()
		nonce = c.Nonce
		return nonce != "" && c.RecoveryKeys
	})
	holders, err := auto.Client()
	must(t, err)
	holders.ClearToken()

	// A holder cancels the ceremony: Lockdown starts a new one, and says so.
	_, err = holders.Sys().RekeyRecoveryKeyUpdateWithContext(ctx, auto.UnsealKeys[0], nonce)
	must(t, err)
	must(t, holders.Sys().RekeyRecoveryKeyCancelWithContextWithNonce(ctx, nonce))
	old := nonce
	testwait.For(t, 10*time.Second, "a new ceremony after the cancel", func() bool {
		c := loop.get()
		nonce = c.Nonce
		return nonce != "" && nonce != old && c.Restarts == 1 && strings.Contains(c.Note, "cancelled")
	})

	var newKeys []string
	for _, k := range auto.UnsealKeys[:3] {
		resp, err := holders.Sys().RekeyRecoveryKeyUpdateWithContext(ctx, k, nonce)
		must(t, err)
		if resp.Complete {
			for i, b64 := range resp.KeysB64 {
				newKeys = append(newKeys, decrypt(t, holderKeys[i], b64))
			}
		}
	}
	if len(newKeys) != 5 {
		t.Fatalf("rekey-recovery-key did not complete: %d keys", len(newKeys))
	}
	testwait.For(t, 10*time.Second, "the ceremony to complete", func() bool { return loop.get().Phase == recovery.CeremonyCompleted })
	if c := loop.get(); c.ConfirmedBy != recovery.ProofPGPBackup {
		t.Fatalf("the recovery-key ceremony completed with proof %q, want the PGP backup", c.ConfirmedBy)
	}
	if d := r.RotatedEvent("inc-auto", loop.get(), "p").Data.(events.UnsealKeysRotatedData); !d.RecoveryKeys || d.Shares != 5 || d.Threshold != 3 {
		t.Fatalf("unsealkeys.rotated %+v", d)
	}

	// The old recovery keys no longer authorise a rekey; the new ones do.
	root, err := auto.Client()
	must(t, err)
	try := func(keys []string) error {
		init, err := root.Sys().RekeyRecoveryKeyInitWithContext(ctx, &vaultRekeyRequest)
		if err != nil {
			return err
		}
		defer func() { _ = root.Sys().RekeyRecoveryKeyCancelWithContextWithNonce(ctx, init.Nonce) }()
		for _, k := range keys[:3] {
			resp, err := holders.Sys().RekeyRecoveryKeyUpdateWithContext(ctx, k, init.Nonce)
			if err != nil {
				return err
			}
			if resp.Complete {
				return nil
			}
		}
		return nil
	}
	stop()
	<-loopDone
	if err := try(auto.UnsealKeys); err == nil || !strings.Contains(err.Error(), "recovery key") {
		t.Fatalf("the old recovery keys were accepted (err %v)", err)
	}
	if err := try(newKeys); err != nil {
		t.Fatalf("the new recovery keys were refused: %v", err)
	}
}

// vaultRekeyRequest is a throwaway rekey used to prove which keys Vault accepts.
var vaultRekeyRequest = vault.RekeyInitRequest{SecretShares: 5, SecretThreshold: 3}
