package credentials

import (
	"fmt"
	"slices"
	"strings"
)

// The platform-wide kinds: what the contract knows of each — its engine,
// what a dry run lists there, the catalogue parameters it reads with their
// checks, and which listed items an entry covers. A new platform kind is
// one more of these (and its package in the rotator).

var transitKind = Info{Kind: Transit, Scope: PlatformWide, Title: "transit encryption keys", Engine: "transit", Lists: []string{"keys"},
	params: []string{"keys", "raise_min_decryption_version"},
	check:  func(e Entry) []string { return checkNames("keys", e.Keys, true) },
	covers: func(e Entry, item string) bool {
		n, ok := strings.CutPrefix(item, "keys/")
		return ok && Selects(e.Keys, n)
	}}

var databaseKind = Info{Kind: Database, Scope: PlatformWide, Title: "database credentials", Engine: "database", Lists: []string{"config", "static-roles"},
	params: []string{"connections", "static_roles"},
	check: func(e Entry) []string {
		out := append(checkNames("connections", e.Connections, false), checkNames("static_roles", e.StaticRoles, false)...)
		if len(e.Connections)+len(e.StaticRoles) == 0 {
			out = append(out, "connections or static_roles: at least one")
		}
		return out
	},
	covers: func(e Entry, item string) bool {
		if n, ok := strings.CutPrefix(item, "config/"); ok {
			return Selects(e.Connections, n)
		}
		n, ok := strings.CutPrefix(item, "static-roles/")
		return ok && Selects(e.StaticRoles, n)
	}}

var pkiKind = Info{Kind: PKI, Scope: PlatformWide, Title: "PKI certificates", Engine: "pki", Lists: []string{"roles"},
	params: []string{"certificates"},
	check: func(e Entry) []string {
		var out []string
		if len(e.Certificates) == 0 {
			out = append(out, "certificates: at least one")
		}
		for _, c := range e.Certificates {
			if !vaultName.MatchString(c.Role) || c.CommonName == "" || !vaultName.MatchString(c.StoreMount) || !validSecretPath(c.StorePath) {
				out = append(out, fmt.Sprintf("certificate %q: role, common_name, store_mount and store_path are required (store_path a KV path)", c.CommonName))
			}
		}
		return out
	},
	// A PKI entry revokes every certificate the mount issued and re-issues
	// those it lists: every role is covered.
	covers: func(Entry, string) bool { return true }}

var kvKind = Info{Kind: KV, Scope: PlatformWide, Title: "platform secrets", Engine: "kv",
	params: []string{"paths", "fields"},
	check: func(e Entry) []string {
		var out []string
		if len(e.Paths) == 0 {
			out = append(out, "paths: at least one pattern")
		}
		for _, p := range e.Paths {
			if !validPattern(p) {
				out = append(out, fmt.Sprintf("path pattern %q: segments of names or *, optionally ending in /**", p))
			}
		}
		if len(e.Fields) == 0 {
			out = append(out, "fields: at least one field with its generator")
		}
		for f, g := range e.Fields {
			if !vaultName.MatchString(f) || strings.HasPrefix(f, "lockdown_") {
				out = append(out, fmt.Sprintf("field %q is not a field name (lockdown_ is Lockdown's)", f))
			}
			if !slices.Contains([]Generator{GenPassword, GenEd25519, GenHex32}, g) {
				out = append(out, fmt.Sprintf("field %q: unknown generator %q (password, ed25519, hex32)", f, g))
			}
		}
		return out
	},
	covers: func(e Entry, item string) bool { return MatchPath(e.Paths, item) }}

// NormalSerial writes a certificate serial one way, so serials from
// Vault's responses (colon-separated bytes), a CRL (big integers printed
// in hex) and an operator's input compare equal: no separators, lower
// case, no leading zeros.
func NormalSerial(serial string) string {
	s := strings.ToLower(strings.NewReplacer(":", "", "-", "").Replace(serial))
	return strings.TrimLeft(s, "0")
}
