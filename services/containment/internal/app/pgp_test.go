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

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/localstack"
	"github.com/lockdown/lockdown/services/containment/internal/app"
	"github.com/lockdown/lockdown/services/containment/internal/recovery"
)

// TestRekeyWithPGP runs the ceremony with the key holders' PGP keys: Vault
// returns every new share encrypted for its holder, the holders decrypt
// theirs to verify them, and Lockdown confirms completion from Vault's
// encrypted backup.
func TestRekeyWithPGP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := localstack.Start(ctx, localstack.Options{NATS: true, NATSAuth: true, Postgres: true, Vault: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })

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
			w.Write(bin.Bytes())
			w.Close()
			content = arm.Bytes()
		case 1:
			content = bin.Bytes()
		case 2:
			content = []byte(base64.StdEncoding.EncodeToString(bin.Bytes()))
		}
		must(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("%d-holder.key", i+1)), content, 0o644))
	}

	c := startContainment(t, s, nil, nil, nil, func(cfg *app.Config) { cfg.RekeyPGPDir = dir })
	t.Cleanup(func() { c.stop() })
	siem, _ := connectAs(t, s, events.UserSIEM)
	ev := newBreach(t, "pgp ceremony")
	publishAsSIEM(t, siem, ev, nil)
	_, opened := waitEvent(t, s, events.IncidentOpened, 10*time.Second, func(d events.IncidentOpenedData) bool { return d.BreachEventID == ev.ID() })
	waitEvent(t, s, events.VaultSealed, 10*time.Second, func(d events.VaultSealedData) bool { return d.IncidentID == opened.IncidentID })
	must(t, s.Vault.Unseal(ctx))
	pool := poolOf(t, ctx, s)

	cer := waitCeremony(t, ctx, pool, opened.IncidentID, func(c recovery.Ceremony) bool { return c.Nonce != "" })
	if len(cer.Fingerprints) != 5 {
		t.Fatalf("the ceremony records %d PGP fingerprints, want 5", len(cer.Fingerprints))
	}
	for i, fp := range cer.Fingerprints {
		if want := fmt.Sprintf("%x", holders[i].PrimaryKey.Fingerprint); fp != want {
			t.Errorf("share %d is for %s, want holder %d's key %s", i+1, fp, i+1, want)
		}
	}
	vc, err := s.Vault.Client()
	must(t, err)
	vc.ClearToken()
	var encrypted []string
	for _, k := range s.Vault.UnsealKeys[:3] {
		resp, err := vc.Sys().RekeyUpdateWithContext(ctx, k, cer.Nonce)
		must(t, err)
		if resp.Complete {
			encrypted = resp.KeysB64
			waitCeremony(t, ctx, pool, opened.IncidentID, func(c recovery.Ceremony) bool { return c.Phase == recovery.CeremonyVerifying })
			// Each holder decrypts their share with their private key and
			// submits it to verification.
			for i := range 3 {
				share := decrypt(t, holders[i], encrypted[i])
				_, err := vc.Sys().RekeyVerificationUpdateWithContext(ctx, share, resp.VerificationNonce)
				must(t, err)
			}
		}
	}
	if len(encrypted) != 5 {
		t.Fatalf("%d encrypted shares", len(encrypted))
	}
	_, rotated := waitEvent(t, s, events.UnsealKeysRotated, 20*time.Second, func(d events.UnsealKeysRotatedData) bool { return d.IncidentID == opened.IncidentID })
	if len(rotated.PGPFingerprints) != 5 {
		t.Fatalf("unsealkeys.rotated %+v", rotated)
	}
	if got := waitCeremony(t, ctx, pool, opened.IncidentID, func(c recovery.Ceremony) bool { return c.Phase == recovery.CeremonyCompleted }); got.ConfirmedBy != "pgp_backup" {
		t.Fatalf("completion confirmed by %q, want the PGP backup", got.ConfirmedBy)
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
