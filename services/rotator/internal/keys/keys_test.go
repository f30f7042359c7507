package keys_test

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/lockdown/lockdown/services/rotator/internal/keys"
)

func TestKeys(t *testing.T) {
	t.Run("an SSH key pair is ed25519 in OpenSSH formats with its SHA256 fingerprint", func(t *testing.T) {
		k, err := keys.NewSSH("lockdown-acme")
		if err != nil {
			t.Fatal(err)
		}
		signer, err := ssh.ParsePrivateKey([]byte(k.PrivateKey))
		if err != nil {
			t.Fatal(err)
		}
		pub, comment, _, _, err := ssh.ParseAuthorizedKey([]byte(k.PublicKey))
		if err != nil || pub.Type() != "ssh-ed25519" || comment != "lockdown-acme" {
			t.Fatalf("%v %q %v", pub, comment, err)
		}
		if ssh.FingerprintSHA256(signer.PublicKey()) != k.Fingerprint || !strings.HasPrefix(k.Fingerprint, "SHA256:") {
			t.Fatalf("fingerprint %s", k.Fingerprint)
		}
	})
	t.Run("SMTP passwords have at least 32 characters and differ", func(t *testing.T) {
		a, _ := keys.NewPassword(40)
		b, _ := keys.NewPassword(40)
		if len(a) != 40 || a == b {
			t.Fatalf("%d %v", len(a), a == b)
		}
		if _, err := keys.NewPassword(16); err == nil {
			t.Fatal("a 16-character password was accepted")
		}
	})
	t.Run("a DKIM RSA key publishes its public key in the TXT record", func(t *testing.T) {
		d, err := keys.NewDKIM("rsa", 2048, "ld20261125-abcd")
		if err != nil {
			t.Fatal(err)
		}
		p, ok := strings.CutPrefix(d.Record, "v=DKIM1; k=rsa; p=")
		if !ok {
			t.Fatalf("record %q", d.Record)
		}
		der, _ := base64.StdEncoding.DecodeString(p)
		pub, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode([]byte(d.PrivateKey))
		priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil || !priv.(crypto.Signer).Public().(*rsa.PublicKey).Equal(pub) {
			t.Fatalf("the record does not hold the key's public half: %v", err)
		}
		if _, err := keys.NewDKIM("rsa", 1024, "s"); err == nil {
			t.Fatal("a 1024-bit DKIM key was accepted")
		}
	})
	t.Run("an ed25519 DKIM key is an option", func(t *testing.T) {
		d, err := keys.NewDKIM("ed25519", 0, "s")
		if err != nil || !strings.HasPrefix(d.Record, "v=DKIM1; k=ed25519; p=") {
			t.Fatalf("%q %v", d.Record, err)
		}
	})
}
