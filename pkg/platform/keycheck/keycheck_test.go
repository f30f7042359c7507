package keycheck_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/lockdown/lockdown/pkg/platform/keycheck"
)

// sshKey and dkimKey make keys the way the rotator does (its package is
// internal to the rotator): OpenSSH ed25519, and PKCS#8 with a DKIM record.
func sshKey(t *testing.T) (privatePEM, fingerprint string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "test")
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(block)), ssh.FingerprintSHA256(sshPub)
}

func dkimKey(t *testing.T, typ string) (privatePEM, record string) {
	t.Helper()
	var priv any
	var pubDER []byte
	switch typ {
	case "rsa":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		priv = k
		pubDER, _ = x509.MarshalPKIXPublicKey(&k.PublicKey)
	default:
		pub, k, _ := ed25519.GenerateKey(rand.Reader)
		priv, pubDER = k, pub
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), fmt.Sprintf("v=DKIM1; k=%s; p=%s", typ, base64.StdEncoding.EncodeToString(pubDER))
}

func TestMatch(t *testing.T) {
	aPriv, aFP := sshKey(t)
	_, bFP := sshKey(t)
	t.Run("an SSH key matches its own fingerprint and not another's", func(t *testing.T) {
		if err := keycheck.MatchSSH(aPriv, aFP); err != nil {
			t.Fatal(err)
		}
		if err := keycheck.MatchSSH(aPriv, bFP); !errors.Is(err, keycheck.ErrMismatch) {
			t.Fatalf("another key's fingerprint: %v", err)
		}
	})
	for _, typ := range []string{"rsa", "ed25519"} {
		t.Run("a "+typ+" DKIM key verifies against its own record and not another's", func(t *testing.T) {
			x, xRec := dkimKey(t, typ)
			_, yRec := dkimKey(t, typ)
			if err := keycheck.MatchDKIM(x, xRec); err != nil {
				t.Fatal(err)
			}
			if err := keycheck.MatchDKIM(x, yRec); !errors.Is(err, keycheck.ErrMismatch) {
				t.Fatalf("another key's record: %v", err)
			}
		})
	}
}

func TestDKIMMessage(t *testing.T) {
	for _, typ := range []string{"rsa", "ed25519"} {
		priv, record := dkimKey(t, typ)
		_, other := dkimKey(t, typ)
		serve := func(rec string) func(string) ([]string, error) {
			return func(name string) ([]string, error) {
				if name != "s1._domainkey.example.com" {
					return nil, fmt.Errorf("looked up %s", name)
				}
				return []string{rec}, nil
			}
		}
		t.Run(typ+" mail signed with the key passes against its record", func(t *testing.T) {
			if err := keycheck.DKIMMessage(priv, "example.com", "s1", serve(record)); err != nil {
				t.Fatal(err)
			}
		})
		t.Run(typ+" mail fails against another key's record and a revoked one", func(t *testing.T) {
			for _, rec := range []string{other, "v=DKIM1; p="} {
				if err := keycheck.DKIMMessage(priv, "example.com", "s1", serve(rec)); !errors.Is(err, keycheck.ErrMismatch) {
					t.Fatalf("record %.30q: %v, want a mismatch", rec, err)
				}
			}
		})
	}
}

func TestLeaked(t *testing.T) {
	pemKey := "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIOq1yQ2d0N3kq8sVw1r0mXyZ6bq5t0Wn1c2b3a4d5e6f\n-----END PRIVATE KEY-----\n"
	t.Run("a value found only JSON-escaped across a line break is leaked", func(t *testing.T) {
		record := []byte(`{"request":{"data":{"private_key":"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIOq1yQ2d0N3kq8sVw1r0mXyZ6bq5t0Wn1c2b3a4d5e6f\n-----END PRIVATE KEY-----\n"}}}`)
		if !keycheck.Leaked(record, pemKey) {
			t.Fatal("not found")
		}
	})
	t.Run("an HMAC'd record leaks nothing", func(t *testing.T) {
		record := []byte(`{"request":{"data":{"private_key":"hmac-sha256:5f1e2d3c4b5a69788796a5b4c3d2e1f0"}}}`)
		if keycheck.Leaked(record, pemKey) || keycheck.Leaked(record, "s3cr3t-password-of-forty-characters-xx") {
			t.Fatal("found in a record that does not hold it")
		}
	})
	t.Run("another key of the same kind, sharing the armor and header, is not this key", func(t *testing.T) {
		other := []byte(`{"private_key":"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n-----END PRIVATE KEY-----\n"}`)
		if keycheck.Leaked(other, pemKey) {
			t.Fatal("a shared header was taken for the key")
		}
	})
	t.Run("a value with characters Go escapes for HTML is found either way", func(t *testing.T) {
		pw := "a<b>&c-password"
		if !keycheck.Leaked([]byte(`"password":"a\u003cb\u003e\u0026c-password"`), pw) || !keycheck.Leaked([]byte(`"password":"a<b>&c-password"`), pw) {
			t.Fatal("not found")
		}
	})
}
