// Package keycheck proves that a public part recorded or published for a
// tenant (an SSH fingerprint, a DKIM DNS record) belongs to the private key
// Vault holds: by deriving the fingerprint, and by verifying a signature
// made with the private key against the record's public key. Tests, the
// drill and the chaos suite use it; the rotator's keys are made in
// services/rotator/internal/keys.
package keycheck

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
	vault "github.com/hashicorp/vault/api"

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
	k, err := dkimKey(privatePEM)
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

// dkimKey parses a DKIM private key (PEM, PKCS#8).
func dkimKey(privatePEM string) (any, error) {
	block, _ := pem.Decode([]byte(privatePEM))
	if block == nil {
		return nil, errors.New("DKIM private key is not PEM")
	}
	return x509.ParsePKCS8PrivateKey(block.Bytes)
}

// DKIMMessage signs a message from domain under selector with the private
// key (PEM, PKCS#8) and verifies it the way a receiving mail server does,
// looking the public key up with lookup (given <selector>._domainkey.
// <domain>): proof that mail the platform signs with this key passes DKIM
// against the DNS that lookup reads.
func DKIMMessage(privatePEM, domain, selector string, lookup func(name string) ([]string, error)) error {
	k, err := dkimKey(privatePEM)
	if err != nil {
		return err
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return fmt.Errorf("DKIM private key of type %T", k)
	}
	msg := "From: security@" + domain + "\r\nTo: check@example.net\r\nSubject: DKIM check\r\nDate: Mon, 30 Nov 2026 00:00:00 +0000\r\n" +
		"Message-ID: <dkim-check@" + domain + ">\r\n\r\nSigned by Lockdown's key check.\r\n"
	var signed bytes.Buffer
	if err := dkim.Sign(&signed, strings.NewReader(msg), &dkim.SignOptions{Domain: domain, Selector: selector, Signer: signer}); err != nil {
		return fmt.Errorf("DKIM sign: %w", err)
	}
	vs, err := dkim.VerifyWithOptions(&signed, &dkim.VerifyOptions{LookupTXT: lookup})
	if err != nil {
		return fmt.Errorf("DKIM verify: %w", err)
	}
	if len(vs) != 1 {
		return fmt.Errorf("%w: %d DKIM signatures found, want 1", ErrMismatch, len(vs))
	}
	if vs[0].Err != nil {
		return fmt.Errorf("%w: %v", ErrMismatch, vs[0].Err)
	}
	return nil
}

// ActiveDKIM samples once whether mail signed with the DKIM key Vault
// holds at path (KV v2: selector, private_key) passes DKIM against DNS.
// conclusive is false when the key changed while DNS was read (a cut-over
// in between: the sample says nothing) or there is no key to check.
func ActiveDKIM(ctx context.Context, kv *vault.KVv2, path, domain string, lookup func(name string) ([]string, error)) (conclusive bool, err error) {
	before, err := kv.Get(ctx, path)
	if err != nil {
		return false, nil
	}
	sel, _ := before.Data["selector"].(string)
	priv, _ := before.Data["private_key"].(string)
	if sel == "" || priv == "" {
		return false, nil
	}
	// Read DNS once, then sign and verify against what was read.
	recs, lerr := lookup(sel + "._domainkey." + domain)
	after, err := kv.Get(ctx, path)
	if err != nil || after.VersionMetadata == nil || before.VersionMetadata == nil || after.VersionMetadata.Version != before.VersionMetadata.Version {
		return false, nil
	}
	if lerr != nil {
		return false, nil // DNS unreachable: no sample (a test stops it on purpose)
	}
	err = DKIMMessage(priv, domain, sel, func(string) ([]string, error) { return recs, nil })
	if err != nil {
		return true, fmt.Errorf("%s (selector %s, version %d): %w", path, sel, before.VersionMetadata.Version, err)
	}
	return true, nil
}

// Leaked says whether a secret value shows in captured bytes (an audit
// device's output, a log): whole, as written or as JSON writes it — an
// audit record is JSON, so a PEM key's line breaks are "\n" there and a
// plain search (or a search for a piece across a break) misses it; Go's
// encoder may or may not escape <, > and &. Pieces of a value are not
// looked for: keys of one kind share long structural runs (PEM armor, the
// OpenSSH and PKCS#8 headers in base64), which would match any key's.
func Leaked(captured []byte, value string) bool {
	if value == "" {
		return false
	}
	forms := []string{value}
	for _, escapeHTML := range []bool{true, false} {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(escapeHTML)
		if err := enc.Encode(value); err == nil {
			forms = append(forms, strings.Trim(strings.TrimSpace(b.String()), `"`))
		}
	}
	for _, f := range forms {
		if bytes.Contains(captured, []byte(f)) {
			return true
		}
	}
	return false
}
