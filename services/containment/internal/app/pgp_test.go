package app_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	vault "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/services/containment/internal/app"
	"github.com/lockdown/lockdown/services/containment/internal/recovery"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// pgpCeremony is an incident at its rekey ceremony, containment holding
// five key holders' PGP public keys.
type pgpCeremony struct {
	s       *localstack.Stack
	holders []*openpgp.Entity
	pool    *pgxpool.Pool
	id      string
	vc      *vault.Client // no token: the rekey endpoints take none
}

func startPGPCeremony(t *testing.T, ctx context.Context, verify bool) *pgpCeremony {
	t.Helper()
	s := localstack.StartTest(t, ctx, localstack.Options{NATS: true, NATSAuth: true, Postgres: true, Vault: true})
	// Five holders; their public keys in a folder, in every format the
	// loader accepts (armored, binary, base64).
	dir := t.TempDir()
	holders := make([]*openpgp.Entity, 5)
	for i := range holders {
		e, err := openpgp.NewEntity(fmt.Sprintf("holder %d", i+1), "", fmt.Sprintf("holder%d@example.com", i+1), &packet.Config{RSABits: 2048})
		must(t, err)
		holders[i] = e
		var bin bytes.Buffer
		must(t, e.Serialize(&bin))
		var content []byte
		switch i % 3 {
		case 0:
			var arm bytes.Buffer
			w, err := armor.Encode(&arm, openpgp.PublicKeyType, nil)
			must(t, err)
			_, err = w.Write(bin.Bytes())
			must(t, err)
			must(t, w.Close())
			content = arm.Bytes()
		case 1:
			content = bin.Bytes()
		case 2:
			content = []byte(base64.StdEncoding.EncodeToString(bin.Bytes()))
		}
		must(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("%d-holder.key", i+1)), content, 0o644))
	}
	// The folder's README, as shipped in deploy/compose/keyholders, is not a key.
	must(t, os.WriteFile(filepath.Join(dir, "README.md"), []byte("# Key holders' PGP public keys\n"), 0o644))
	c := startContainment(t, s, nil, nil, nil, func(cfg *app.Config) { cfg.RekeyPGPDir, cfg.RekeyRequireVerification = dir, verify })
	t.Cleanup(func() { c.stop() })
	siem, _ := connectAs(t, s, events.UserSIEM)
	ev := newBreach(t, "pgp ceremony")
	publishAsSIEM(t, siem, ev, nil)
	_, opened := waitEvent(t, s, events.IncidentOpened, 10*time.Second, func(d events.IncidentOpenedData) bool { return d.BreachEventID == ev.ID() })
	waitEvent(t, s, events.VaultSealed, 10*time.Second, func(d events.VaultSealedData) bool { return d.IncidentID == opened.IncidentID })
	must(t, s.Vault.Unseal(ctx))
	vc, err := s.Vault.Client()
	must(t, err)
	vc.ClearToken()
	return &pgpCeremony{s: s, holders: holders, pool: poolOf(t, ctx, s), id: opened.IncidentID, vc: vc}
}

// TestRekeyWithPGP runs the ceremony with the key holders' PGP keys and
// without verification, the mode in which completion is proven: Vault
// returns every new share encrypted for its holder and writes the
// encrypted backup in the call that rekeys, so the backup's nonce proves
// the ceremony completed. A ceremony cancelled before its quorum leaves no
// backup and is restarted.
func TestRekeyWithPGP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p := startPGPCeremony(t, ctx, false)
	cer := waitCeremony(t, ctx, p.pool, p.id, func(c recovery.Ceremony) bool { return c.Nonce != "" })
	if len(cer.Fingerprints) != 5 {
		t.Fatalf("the ceremony records %d PGP fingerprints, want 5", len(cer.Fingerprints))
	}
	for i, fp := range cer.Fingerprints {
		if want := fmt.Sprintf("%x", p.holders[i].PrimaryKey.Fingerprint); fp != want {
			t.Errorf("share %d is for %s, want holder %d's key %s", i+1, fp, i+1, want)
		}
	}
	// Anyone who reaches Vault may cancel a rekey (no token needed).
	_, err := p.vc.Sys().RekeyUpdateWithContext(ctx, p.s.Vault.UnsealKeys[0], cer.Nonce)
	must(t, err)
	must(t, p.vc.Sys().RekeyCancelWithContextWithNonce(ctx, cer.Nonce))
	cancelled := cer.Nonce
	cer = waitCeremony(t, ctx, p.pool, p.id, func(c recovery.Ceremony) bool { return c.Nonce != "" && c.Nonce != cancelled })
	if cer.Phase == recovery.CeremonyCompleted || cer.Restarts != 1 {
		t.Fatalf("after a cancel the ceremony is %+v, want a new one", cer)
	}
	var encrypted []string
	for _, k := range p.s.Vault.UnsealKeys[:3] {
		resp, err := p.vc.Sys().RekeyUpdateWithContext(ctx, k, cer.Nonce)
		must(t, err)
		if resp.Complete {
			encrypted = resp.KeysB64
		}
	}
	if len(encrypted) != 5 {
		t.Fatalf("%d encrypted shares", len(encrypted))
	}
	for i := range encrypted {
		decrypt(t, p.holders[i], encrypted[i]) // each holder can open their own
	}
	_, rotated := waitEvent(t, p.s, events.UnsealKeysRotated, 20*time.Second, func(d events.UnsealKeysRotatedData) bool { return d.IncidentID == p.id })
	if len(rotated.PGPFingerprints) != 5 || rotated.Proof != recovery.ProofPGPBackup || rotated.Verified {
		t.Fatalf("unsealkeys.rotated %+v, want proof by the PGP backup", rotated)
	}
	if got := waitCeremony(t, ctx, p.pool, p.id, func(c recovery.Ceremony) bool { return c.Phase == recovery.CeremonyCompleted }); got.ConfirmedBy != recovery.ProofPGPBackup {
		t.Fatalf("completion confirmed by %q, want the PGP backup", got.ConfirmedBy)
	}
}

// TestRekeyCancelledDuringVerification: with verification required, Vault
// writes the PGP backup before the verification step, so a cancel during
// verification (DELETE sys/rekey/init, no token needed) leaves the backup
// of a rekey that never took effect while the old shares stay valid.
// Containment must restart that ceremony and never announce
// unsealkeys.rotated for it; the next ceremony, verified to the end, is
// proven by Vault's own log line of the barrier rekey.
func TestRekeyCancelledDuringVerification(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p := startPGPCeremony(t, ctx, true)
	cer := waitCeremony(t, ctx, p.pool, p.id, func(c recovery.Ceremony) bool { return c.Nonce != "" })
	for _, k := range p.s.Vault.UnsealKeys[:3] {
		_, err := p.vc.Sys().RekeyUpdateWithContext(ctx, k, cer.Nonce)
		must(t, err)
	}
	waitCeremony(t, ctx, p.pool, p.id, func(c recovery.Ceremony) bool { return c.Phase == recovery.CeremonyVerifying })
	root, err := p.s.Vault.Client()
	must(t, err)
	backup, err := root.Sys().RekeyRetrieveBackupWithContext(ctx)
	must(t, err)
	if backup == nil || backup.Nonce != cer.Nonce {
		t.Fatalf("Vault holds no backup of the ceremony during verification (%+v): the limit this test documents is gone", backup)
	}
	must(t, p.vc.Sys().RekeyCancelWithContextWithNonce(ctx, cer.Nonce))
	next := waitCeremony(t, ctx, p.pool, p.id, func(c recovery.Ceremony) bool { return c.Nonce != "" && c.Nonce != cer.Nonce })
	if next.Phase == recovery.CeremonyCompleted || next.Restarts != 1 || next.Note == "" {
		t.Fatalf("after a cancel during verification the ceremony is %+v, want a new one with a note", next)
	}

	// The holders go through the new ceremony, verification included.
	var encrypted []string
	var verifyNonce string
	for _, k := range p.s.Vault.UnsealKeys[:3] {
		resp, err := p.vc.Sys().RekeyUpdateWithContext(ctx, k, next.Nonce)
		must(t, err)
		if resp.Complete {
			encrypted, verifyNonce = resp.KeysB64, resp.VerificationNonce
		}
	}
	if len(encrypted) != 5 || verifyNonce == "" {
		t.Fatalf("%d encrypted shares, verification nonce set %v", len(encrypted), verifyNonce != "")
	}
	waitCeremony(t, ctx, p.pool, p.id, func(c recovery.Ceremony) bool { return c.Phase == recovery.CeremonyVerifying && c.Nonce == next.Nonce })
	for i := range 3 {
		_, err := p.vc.Sys().RekeyVerificationUpdateWithContext(ctx, decrypt(t, p.holders[i], encrypted[i]), verifyNonce)
		must(t, err)
	}
	_, rotated := waitEvent(t, p.s, events.UnsealKeysRotated, 20*time.Second, func(d events.UnsealKeysRotatedData) bool { return d.IncidentID == p.id })
	if rotated.Proof != recovery.ProofVaultLog || !rotated.Verified {
		t.Fatalf("unsealkeys.rotated %+v, want the verified ceremony proven by Vault's log", rotated)
	}
	if got := waitCeremony(t, ctx, p.pool, p.id, func(c recovery.Ceremony) bool { return c.Phase == recovery.CeremonyCompleted }); got.Nonce != next.Nonce {
		t.Fatalf("completed ceremony %s, want the restarted one %s", got.Nonce, next.Nonce)
	}
	// One announcement only, and for the ceremony that completed: the
	// cancelled one was never announced.
	if n := countEvents(t, p.s, events.UnsealKeysRotated, func(d events.UnsealKeysRotatedData) bool { return d.IncidentID == p.id }); n != 1 {
		t.Fatalf("%d unsealkeys.rotated events for the incident, want 1", n)
	}
}

// decrypt opens one PGP-encrypted share as its holder would with gpg.
func decrypt(t *testing.T, holder *openpgp.Entity, b64 string) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(b64)
	must(t, err)
	md, err := openpgp.ReadMessage(bytes.NewReader(raw), openpgp.EntityList{holder}, nil, nil)
	if err != nil {
		t.Fatalf("the share is not encrypted for its holder: %v", err)
	}
	plain, err := io.ReadAll(md.UnverifiedBody)
	must(t, err)
	return string(plain)
}
