package vaulttoken_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/pkg/platform/vaulttoken"
	"github.com/lockdown/lockdown/testkit/localstack"
)

func TestRenewer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.Options{Vault: true})
	root, err := s.Vault.Client()
	if err != nil {
		t.Fatal(err)
	}
	// A periodic token with a short period, as the install step issues
	// Lockdown's (with 768h).
	sec, err := root.Auth().Token().CreateOrphanWithContext(ctx, &vault.TokenCreateRequest{Policies: []string{"lockdown-seal"}, Period: "1m", DisplayName: "renew-test"})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "seal.token")
	if err := os.WriteFile(file, []byte(sec.Auth.ClientToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := vaulttoken.Open("", file)
	if err != nil {
		t.Fatal(err)
	}
	r, err := vaulttoken.New("seal", []string{s.Vault.Addr}, src, 5*time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("a periodic token is renewed to its full period", func(t *testing.T) {
		ttl, err := r.RenewOnce(ctx)
		if err != nil || ttl < 50*time.Second || ttl > time.Minute {
			t.Fatalf("ttl %v, %v", ttl, err)
		}
		r.Warn = 10 * time.Second
		if err := r.Check(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("readiness fails when the token is within the warning window of its expiry", func(t *testing.T) {
		r.Warn = 2 * time.Minute
		if err := r.Check(ctx); !errors.Is(err, vaulttoken.ErrExpiring) {
			t.Fatalf("%v", err)
		}
	})
	t.Run("a replaced token is the one renewed from then on", func(t *testing.T) {
		next, err := root.Auth().Token().CreateOrphanWithContext(ctx, &vault.TokenCreateRequest{Policies: []string{"lockdown-seal"}, Period: "2m", DisplayName: "renew-test"})
		if err != nil {
			t.Fatal(err)
		}
		if err := root.Auth().Token().RevokeOrphanWithContext(ctx, sec.Auth.ClientToken); err != nil {
			t.Fatal(err)
		}
		if _, err := r.RenewOnce(ctx); err == nil {
			t.Fatal("a revoked token was renewed")
		}
		if err := src.Replace(next.Auth.ClientToken); err != nil {
			t.Fatal(err)
		}
		if ttl, err := r.RenewOnce(ctx); err != nil || ttl < 90*time.Second {
			t.Fatalf("after the replacement: ttl %v, %v", ttl, err)
		}
		reread, err := vaulttoken.Open("", file)
		if err != nil || reread.Token() != next.Auth.ClientToken {
			t.Fatal("the file does not hold the successor")
		}
	})
	t.Run("a sealed Vault makes the renewal fail without panicking", func(t *testing.T) {
		if err := root.Sys().SealWithContext(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := r.RenewOnce(ctx); err == nil {
			t.Fatal("renewed against a sealed Vault")
		}
	})
}
