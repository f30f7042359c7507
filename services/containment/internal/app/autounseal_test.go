package app_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/localstack"
	"github.com/lockdown/lockdown/pkg/platform/testwait"
	"github.com/lockdown/lockdown/services/containment/internal/recovery"
	"github.com/lockdown/lockdown/services/containment/internal/vaultadmin"
)

// memStore keeps recovery state in memory: the store is not what this test
// is about (the PostgreSQL store is covered by TestRecovery).
type memStore struct {
	mu sync.Mutex
	m  map[string]recovery.State
}

func (s *memStore) LoadRecovery(_ context.Context, id string) (recovery.State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.m[id]; ok {
		return st, nil
	}
	return recovery.State{IncidentID: id}, nil
}

func (s *memStore) SaveRecovery(_ context.Context, st recovery.State) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[st.IncidentID] = st
	return nil
}

func (s *memStore) OpenRecoveries(context.Context) ([]recovery.State, error) { return nil, nil }

type chanPub chan events.UnsealKeysRotatedData

func (c chanPub) PublishWithID(_ context.Context, name events.Name, _ string, data any) error {
	if d, ok := data.(events.UnsealKeysRotatedData); ok && name == events.UnsealKeysRotated {
		c <- d
	}
	return nil
}

// TestRecoveryKeysAutoUnseal runs the ceremony on a real auto-unseal Vault
// (transit seal through the stack's Vault): seal-status reports a recovery
// seal, so the rekey-recovery-key endpoints are used, and afterwards the old
// recovery keys are refused while the new ones are accepted.
func TestRecoveryKeysAutoUnseal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := localstack.Start(ctx, localstack.Options{Vault: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	auto, err := s.StartAutoUnsealVault(ctx)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := vaultadmin.New(auto.Addr, auto.RecoveryToken, 5*time.Second)
	must(t, err)
	st := &memStore{m: map[string]recovery.State{}}
	pub := make(chanPub, 1)
	rctx, stop := context.WithCancel(ctx)
	r := recovery.New(rctx, recovery.Config{Shares: 5, Threshold: 3, RequireVerification: true, Poll: 20 * time.Millisecond,
		KeepAccessors: []string{auto.SealAccessor}, BreakGlass: []string{"root"}}, admin, st, pub, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer func() { stop(); r.Wait() }()
	must(t, r.OnUnsealed(ctx, "inc-auto"))

	var nonce string
	testwait.For(t, 10*time.Second, "the ceremony to open", func() bool {
		s, _ := st.LoadRecovery(ctx, "inc-auto")
		nonce = s.Ceremony.Nonce
		return nonce != "" && s.Ceremony.RecoveryKeys
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
		s, _ := st.LoadRecovery(ctx, "inc-auto")
		nonce = s.Ceremony.Nonce
		return nonce != "" && nonce != old && s.Ceremony.Restarts == 1 && strings.Contains(s.Ceremony.Note, "cancelled")
	})

	var newKeys []string
	var verifyNonce string
	for _, k := range auto.UnsealKeys[:3] {
		resp, err := holders.Sys().RekeyRecoveryKeyUpdateWithContext(ctx, k, nonce)
		must(t, err)
		if resp.Complete {
			newKeys, verifyNonce = resp.Keys, resp.VerificationNonce
		}
	}
	if len(newKeys) != 5 || verifyNonce == "" {
		t.Fatalf("rekey-recovery-key did not complete: %d keys", len(newKeys))
	}
	testwait.For(t, 10*time.Second, "the verification phase", func() bool {
		s, _ := st.LoadRecovery(ctx, "inc-auto")
		return s.Ceremony.Phase == recovery.CeremonyVerifying
	})
	for _, k := range newKeys[:3] {
		_, err := holders.Sys().RekeyRecoveryKeyVerificationUpdateWithContext(ctx, k, verifyNonce)
		must(t, err)
	}
	select {
	case d := <-pub:
		if !d.RecoveryKeys || d.Shares != 5 || d.Threshold != 3 {
			t.Fatalf("unsealkeys.rotated %+v", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no unsealkeys.rotated")
	}

	// The old recovery keys no longer authorise a rekey; the new ones do.
	root, err := auto.Client()
	must(t, err)
	try := func(keys []string) error {
		init, err := root.Sys().RekeyRecoveryKeyInitWithContext(ctx, &vaultRekeyRequest)
		if err != nil {
			return err
		}
		defer root.Sys().RekeyRecoveryKeyCancelWithContextWithNonce(ctx, init.Nonce)
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
	r.Wait()
	if err := try(auto.UnsealKeys); err == nil || !strings.Contains(err.Error(), "recovery key") {
		t.Fatalf("the old recovery keys were accepted (err %v)", err)
	}
	if err := try(newKeys); err != nil {
		t.Fatalf("the new recovery keys were refused: %v", err)
	}
}

// vaultRekeyRequest is a throwaway rekey used to prove which keys Vault accepts.
var vaultRekeyRequest = vault.RekeyInitRequest{SecretShares: 5, SecretThreshold: 3}
