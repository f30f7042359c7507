// Package keycheck proves that a public part recorded or published for a
// tenant (an SSH fingerprint, a DKIM DNS record) belongs to the private key
// Vault holds: by deriving the fingerprint, and by verifying a signature
// made with the private key against the record's public key. Tests, the
// drill and the chaos suite use it; the rotator's keys are made in
// services/rotator/internal/keys.
package keycheck

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
)

// ErrMismatch is returned by MatchSSH and MatchDKIM when a recorded
// public part is not the one of the private key.
var ErrMismatch = errors.New("public part does not match the private key")

// MatchSSH checks that fingerprint is the one of the OpenSSH private key:
// what the tenant is told to trust is what Vault holds.
func MatchSSH(privatePEM, fingerprint string) error {
	k, err := ssh.ParseRawPrivateKey([]byte(privatePEM))
	if err != nil {
		return err
	}
	signer, err := ssh.NewSignerFromKey(k)
	if err != nil {
		return err
	}
	if got := ssh.FingerprintSHA256(signer.PublicKey()); got != fingerprint {
		return fmt.Errorf("%w: the key's fingerprint is %s, %s was recorded", ErrMismatch, got, fingerprint)
	}
	return nil
}

// MatchDKIM checks that the DNS record's public key (p=) is the one of the
// PKCS#8 private key, by signing with the key and verifying with the
// record's public key: a message signed with what Vault holds verifies
// against what the tenant publishes.
func MatchDKIM(privatePEM, record string) error {
	block, _ := pem.Decode([]byte(privatePEM))
	if block == nil {
		return errors.New("DKIM private key is not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return err
	}
	var p string
	for _, tag := range strings.Split(record, ";") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(tag), "p="); ok {
			p = v
		}
	}
	pub, err := base64.StdEncoding.DecodeString(p)
	if err != nil || len(pub) == 0 {
		return fmt.Errorf("%w: the record has no public key", ErrMismatch)
	}
	msg := []byte("lockdown dkim key check")
	switch key := k.(type) {
	case *rsa.PrivateKey:
		parsed, err := x509.ParsePKIXPublicKey(pub)
		rsaPub, ok := parsed.(*rsa.PublicKey)
		if err != nil || !ok {
			return fmt.Errorf("%w: the record's key is not RSA", ErrMismatch)
		}
		digest := sha256.Sum256(msg)
		sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
		if err != nil {
			return err
		}
		if rsa.VerifyPKCS1v15(rsaPub, crypto.SHA256, digest[:], sig) != nil {
			return fmt.Errorf("%w: a signature by the private key does not verify with the record", ErrMismatch)
		}
	case ed25519.PrivateKey:
		if !ed25519.Verify(ed25519.PublicKey(pub), msg, ed25519.Sign(key, msg)) {
			return fmt.Errorf("%w: a signature by the private key does not verify with the record", ErrMismatch)
		}
	default:
		return fmt.Errorf("DKIM private key of type %T", k)
	}
	return nil
}
