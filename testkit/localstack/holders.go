package localstack

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// KeyHolders are a drill's key holders' PGP keys. Containment encrypts each
// new unseal share for one holder (LOCKDOWN_REKEY_PGP_DIR is Dir, one
// armored public key per share) and Vault keeps an encrypted backup that
// proves the rekey completed; PlayRekey decrypts the new shares as the
// holders would with gpg. The private keys stay in this process.
type KeyHolders struct {
	Dir      string
	entities []*openpgp.Entity
}

// NewKeyHolders generates n holders and writes their public keys to a
// folder of the stack (file-name order is share order).
func (s *Stack) NewKeyHolders(n int) (*KeyHolders, error) {
	h := &KeyHolders{Dir: filepath.Join(s.Dir, "key-holders")}
	if err := os.MkdirAll(h.Dir, 0o700); err != nil {
		return nil, err
	}
	for i := range n {
		e, err := openpgp.NewEntity(fmt.Sprintf("key holder %d", i+1), "drill", fmt.Sprintf("holder%d@drill.invalid", i+1), &packet.Config{RSABits: 2048})
		if err != nil {
			return nil, fmt.Errorf("key holder %d: %w", i+1, err)
		}
		var pub bytes.Buffer
		w, err := armor.Encode(&pub, openpgp.PublicKeyType, nil)
		if err != nil {
			return nil, err
		}
		if err := e.Serialize(w); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil { // writes the armor's checksum and footer
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(h.Dir, fmt.Sprintf("%02d-holder.asc", i+1)), pub.Bytes(), 0o644); err != nil {
			return nil, err
		}
		h.entities = append(h.entities, e)
	}
	return h, nil
}

// Fingerprints are the holders' key fingerprints in share order (lowercase
// hex, as Vault reports them): what an operator pins in
// LOCKDOWN_REKEY_PGP_FINGERPRINTS.
func (h *KeyHolders) Fingerprints() []string {
	out := make([]string, len(h.entities))
	for i, e := range h.entities {
		out[i] = hex.EncodeToString(e.PrimaryKey.Fingerprint)
	}
	return out
}

// decrypt opens share i (base64 of the PGP message Vault returns) with
// holder i's private key.
func (h *KeyHolders) decrypt(i int, b64 string) (string, error) {
	if i >= len(h.entities) {
		return "", fmt.Errorf("no key holder for share %d", i+1)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "", err
	}
	md, err := openpgp.ReadMessage(bytes.NewReader(raw), openpgp.EntityList{h.entities[i]}, nil, nil)
	if err != nil {
		return "", fmt.Errorf("share %d is not for its holder: %w", i+1, err)
	}
	plain, err := io.ReadAll(md.UnverifiedBody)
	return string(plain), err
}
