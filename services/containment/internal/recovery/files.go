package recovery

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/lockdown/lockdown/pkg/platform/vaultdecl"
)

// LoadPGPKeys reads the key holders' public keys from dir, one file per
// share in file-name order, and returns them base64-encoded as Vault's
// pgp_keys wants. A file may hold the key ASCII-armored (gpg --armor
// --export), binary (gpg --export) or already base64-encoded.
func LoadPGPKeys(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("pgp keys: %w", err)
	}
	var names []string
	for _, e := range entries {
		// Hidden files and Markdown (the folder's README) are not keys.
		if !e.IsDir() && !strings.HasPrefix(e.Name(), ".") && !strings.HasSuffix(e.Name(), ".md") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	keys := make([]string, 0, len(names))
	for _, n := range names {
		raw, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return nil, fmt.Errorf("pgp keys: %w", err)
		}
		k, err := pgpKeyBase64(raw)
		if err != nil {
			return nil, fmt.Errorf("pgp key %s: %w", n, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func pgpKeyBase64(raw []byte) (string, error) {
	text := strings.TrimSpace(string(raw))
	if strings.HasPrefix(text, "-----BEGIN PGP PUBLIC KEY BLOCK-----") {
		// ASCII armor: headers, a blank line, the base64 body, a
		// "=CRC" line, the footer. The body is what Vault wants.
		var body []string
		inBody := false
		for _, line := range strings.Split(text, "\n") {
			line = strings.TrimSpace(line)
			switch {
			case strings.HasPrefix(line, "-----END"):
				inBody = false
			case !inBody && line == "" && len(body) == 0:
				inBody = true
			case inBody && strings.HasPrefix(line, "="):
			case inBody:
				body = append(body, line)
			}
		}
		joined := strings.Join(body, "")
		if _, err := base64.StdEncoding.DecodeString(joined); err != nil || joined == "" {
			return "", fmt.Errorf("malformed ASCII armor")
		}
		return joined, nil
	}
	if b, err := base64.StdEncoding.DecodeString(text); err == nil && len(b) > 0 && b[0]&0x80 != 0 {
		return text, nil // already base64 of a binary OpenPGP packet
	}
	if len(raw) > 0 && raw[0]&0x80 != 0 {
		return base64.StdEncoding.EncodeToString(raw), nil
	}
	return "", fmt.Errorf("not an OpenPGP public key (armored, binary or base64)")
}

// LoadAuthSpecs reads deploy/vault/auth: one <mount path>.json per auth
// method, applied in file-name order.
func LoadAuthSpecs(dir string) ([]AuthSpec, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var out []AuthSpec
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var a AuthSpec
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&a); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		a.Path = strings.TrimSuffix(filepath.Base(f), ".json")
		if a.Type == "" {
			return nil, fmt.Errorf("%s: type is required", f)
		}
		out = append(out, a)
	}
	return out, nil
}

// Baseline is the declaration of Vault's security configuration
// (deploy/vault/baseline.json; the type is vaultdecl's, which also writes
// one from a live Vault): what Vault may hold after a lockdown besides the
// declared auth methods and Lockdown's own objects. Every revocation
// reconciles Vault with it (reconcile.go): anything undeclared is taken as
// the intruder's and removed, anything declared is put back as declared
// where Lockdown's rights allow, and the rest is reported.
type Baseline = vaultdecl.Baseline

// AuditDevice is one declared audit device.
type AuditDevice = vaultdecl.AuditDevice

// alwaysKeptPolicies are Vault's own policies and Lockdown's, under the
// names the install step gives them (deploy/vault/policies): deleting
// them would take Lockdown's tokens' powers away in the middle of an
// incident.
func alwaysKeptPolicies() []string { return append(vaultdecl.VaultPolicies(), vaultdecl.Roles()...) }

// LoadBaseline reads the baseline file and Lockdown's policy directory
// (ownPolicies: deploy/vault/policies, with default.hcl) and checks them
// against the auth methods: every policy a declared role hands out must be
// in the baseline, or restoring access would bring back roles whose
// policies the revocation deleted. All problems are reported together.
func LoadBaseline(file, ownPolicies string, auth []AuthSpec) (Baseline, error) {
	b, err := vaultdecl.Load(file)
	if err != nil {
		return b, err
	}
	var problems []string
	b.PolicyContent = map[string]string{}
	dirs := []string{}
	if ownPolicies != "" {
		dirs = append(dirs, ownPolicies)
	}
	if b.PolicyDir != "" {
		dir := b.PolicyDir
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(filepath.Dir(file), dir)
		}
		dirs = append(dirs, dir)
	}
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*.hcl"))
		if err != nil {
			return b, err
		}
		if len(files) == 0 {
			problems = append(problems, fmt.Sprintf("no policy (*.hcl) in %s", dir))
		}
		for _, f := range files {
			body, err := os.ReadFile(f)
			if err != nil {
				return b, err
			}
			b.PolicyContent[strings.TrimSuffix(filepath.Base(f), ".hcl")] = string(body)
		}
	}
	if ownPolicies != "" {
		for _, own := range alwaysKeptPolicies() {
			if _, ok := b.PolicyContent[own]; !ok && own != "root" {
				problems = append(problems, fmt.Sprintf("policy %s is not declared in %s (%s.hcl)", own, ownPolicies, own))
			}
		}
	}
	for _, p := range b.Plugins {
		if typ, name, ok := strings.Cut(p, "/"); !ok || typ == "" || name == "" {
			problems = append(problems, fmt.Sprintf("plugin %q: want type/name", p))
		}
	}
	for _, a := range auth {
		for _, w := range a.Writes {
			for _, p := range policiesOf(w.Data) {
				if !KeepsPolicy(b, p) {
					problems = append(problems, fmt.Sprintf("auth/%s/%s hands out policy %q, which %s does not list", a.Path, w.Path, p, file))
				}
			}
		}
	}
	if len(problems) > 0 {
		return b, fmt.Errorf("vault baseline: %s", strings.Join(problems, "; "))
	}
	return b, nil
}

// KeepsPolicy says whether a policy survives the revocation: Vault's and
// Lockdown's own always, the baseline's by name or by content.
func KeepsPolicy(b Baseline, name string) bool {
	_, declared := b.PolicyContent[name]
	return slices.Contains(alwaysKeptPolicies(), name) || slices.Contains(b.Policies, name) || declared
}

// policiesOf are the policies a role's data hands out.
func policiesOf(data map[string]any) []string {
	var out []string
	for _, key := range []string{"token_policies", "policies"} {
		switch v := data[key].(type) {
		case []any:
			for _, p := range v {
				if s, ok := p.(string); ok {
					out = append(out, s)
				}
			}
		case string:
			for _, p := range strings.Split(v, ",") {
				if p = strings.TrimSpace(p); p != "" {
					out = append(out, p)
				}
			}
		}
	}
	return out
}

// ErrFingerprintMismatch is returned by CheckFingerprints when a holder's
// key file is not the key pinned for its share: the folder was changed
// (an intruder swapping in a key of their own would receive that share).
var ErrFingerprintMismatch = errors.New("pgp key does not match the pinned fingerprint")

// PGPFingerprint is the fingerprint of a key as LoadPGPKeys returns it
// (base64 of the binary key), in Vault's form: lowercase hex.
func PGPFingerprint(b64 string) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "", err
	}
	ring, err := openpgp.ReadKeyRing(bytes.NewReader(raw))
	if err != nil {
		return "", fmt.Errorf("not an OpenPGP public key: %w", err)
	}
	if len(ring) != 1 {
		return "", fmt.Errorf("%d keys in one holder's file, want 1", len(ring))
	}
	return hex.EncodeToString(ring[0].PrimaryKey.Fingerprint), nil
}

// CheckFingerprints compares the loaded keys, share by share, with the
// pinned fingerprints (hex, any case, spaces and colons ignored) and
// reports every mismatch at once.
func CheckFingerprints(keys, pinned []string) error {
	if len(pinned) != len(keys) {
		return fmt.Errorf("%w: %d fingerprints pinned for %d keys", ErrFingerprintMismatch, len(pinned), len(keys))
	}
	var problems []string
	for i, k := range keys {
		fp, err := PGPFingerprint(k)
		if err != nil {
			problems = append(problems, fmt.Sprintf("share %d: %v", i+1, err))
			continue
		}
		want := strings.ToLower(strings.NewReplacer(" ", "", ":", "").Replace(pinned[i]))
		if fp != want {
			problems = append(problems, fmt.Sprintf("share %d: key %s, pinned %s", i+1, fp, want))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrFingerprintMismatch, strings.Join(problems, "; "))
	}
	return nil
}
