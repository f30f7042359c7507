// Package keys generates a tenant's new secrets: an ed25519 SSH key pair in
// OpenSSH formats, an SMTP password from crypto/rand, and a DKIM key pair
// with its selector and DNS TXT record. It is pure: no I/O; the material
// lives in memory until it is written to Vault.
package keys

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"

	"golang.org/x/crypto/ssh"
)

// SSH is an ed25519 key pair.
type SSH struct {
	PrivateKey  string // OpenSSH PEM ("-----BEGIN OPENSSH PRIVATE KEY-----")
	PublicKey   string // authorized_keys line
	Fingerprint string // SHA256:…
}

// NewSSH generates an ed25519 key pair.
func NewSSH(comment string) (SSH, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return SSH{}, err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return SSH{}, err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return SSH{}, err
	}
	line := string(ssh.MarshalAuthorizedKey(sshPub))
	if comment != "" {
		line = line[:len(line)-1] + " " + comment + "\n"
	}
	return SSH{PrivateKey: string(pem.EncodeToMemory(block)), PublicKey: line, Fingerprint: ssh.FingerprintSHA256(sshPub)}, nil
}

// passwordAlphabet avoids characters that SMTP clients and config files
// quote differently.
const passwordAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789-_.~"

// NewPassword returns n characters drawn uniformly from crypto/rand.
func NewPassword(n int) (string, error) {
	if n < 32 {
		return "", fmt.Errorf("an SMTP password must have at least 32 characters, not %d", n)
	}
	out := make([]byte, n)
	max := big.NewInt(int64(len(passwordAlphabet)))
	for i := range out {
		k, err := rand.Int(rand.Reader, max)
		if err != nil {
			return "", err
		}
		out[i] = passwordAlphabet[k.Int64()]
	}
	return string(out), nil
}

// DKIM is a DKIM signing key with what the tenant's DNS must publish.
type DKIM struct {
	Selector   string
	PrivateKey string // PKCS#8 PEM
	// Record is the TXT record value at <selector>._domainkey.<domain>.
	Record string
	// Type is rsa or ed25519.
	Type string
}

// NewDKIM generates a DKIM key: RSA of the given size, or ed25519.
func NewDKIM(keyType string, bits int, selector string) (DKIM, error) {
	var priv crypto.Signer
	var pubDER []byte
	var err error
	switch keyType {
	case "rsa":
		if bits < 2048 {
			return DKIM{}, fmt.Errorf("DKIM RSA keys must have at least 2048 bits, not %d", bits)
		}
		var k *rsa.PrivateKey
		if k, err = rsa.GenerateKey(rand.Reader, bits); err != nil {
			return DKIM{}, err
		}
		priv = k
		if pubDER, err = x509.MarshalPKIXPublicKey(&k.PublicKey); err != nil {
			return DKIM{}, err
		}
	case "ed25519":
		pub, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return DKIM{}, err
		}
		priv, pubDER = k, pub // RFC 8463: the raw 32-byte key
	default:
		return DKIM{}, fmt.Errorf("DKIM key type %q is not rsa or ed25519", keyType)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return DKIM{}, err
	}
	return DKIM{Selector: selector, Type: keyType, PrivateKey: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		Record: fmt.Sprintf("v=DKIM1; k=%s; p=%s", keyType, base64.StdEncoding.EncodeToString(pubDER))}, nil
}

// Set is one tenant's new material.
type Set struct {
	SSH          SSH
	SMTPPassword string
	DKIM         DKIM
}

// NewSet generates a tenant's whole set.
func NewSet(tenant, selector, dkimType string, dkimBits int) (Set, error) {
	s, err := NewSSH("lockdown-" + tenant)
	if err != nil {
		return Set{}, err
	}
	pw, err := NewPassword(40)
	if err != nil {
		return Set{}, err
	}
	d, err := NewDKIM(dkimType, dkimBits, selector)
	if err != nil {
		return Set{}, err
	}
	return Set{SSH: s, SMTPPassword: pw, DKIM: d}, nil
}
