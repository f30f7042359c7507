package credentials

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strings"
)

// Catalogue says which platform-wide credentials an incident rotates:
// entries of a kind, each on one Vault mount with its parameters. The
// per-tenant kinds need no entry (their paths are declared with the kind).
// It is read from deploy/rotation/catalogue.json and validated once at
// start: the rotator refuses to start on an invalid one.
type Catalogue struct {
	Description string  `json:"description,omitempty"`
	Entries     []Entry `json:"entries"`
}

// Entry is one platform-wide rotation.
type Entry struct {
	// Name names the entry in events, reports and the rotator's records
	// (lowercase letters, digits and -).
	Name string `json:"name"`
	Kind Kind   `json:"kind"`
	// Mount is the Vault mount path, without slashes at the ends.
	Mount string `json:"mount"`

	// Keys (transit): the keys to rotate; "*" is every key of the mount.
	Keys []string `json:"keys,omitempty"`
	// RaiseMinDecryption (transit): after the rotation, raise
	// min_decryption_version to the new version, so ciphertext made with
	// a leaked key version no longer decrypts (re-wrap data first).
	RaiseMinDecryption bool `json:"raise_min_decryption_version,omitempty"`

	// Connections (database): connections whose root credential is
	// rotated (database/rotate-root); "*" is every connection.
	Connections []string `json:"connections,omitempty"`
	// StaticRoles (database): static roles whose password is rotated
	// (database/rotate-role); "*" is every static role.
	StaticRoles []string `json:"static_roles,omitempty"`

	// Certificates (pki): certificates to re-issue; every other
	// certificate the mount issued before is revoked.
	Certificates []Certificate `json:"certificates,omitempty"`

	// Paths (kv): secrets under Mount by pattern; * matches one path
	// segment, a trailing /** everything below.
	Paths []string `json:"paths,omitempty"`
	// Fields (kv): field → generator (password, ed25519, hex32). Fields a
	// secret has that no generator names are kept.
	Fields map[string]Generator `json:"fields,omitempty"`
}

// Certificate is one certificate a PKI entry re-issues and where the new
// one (with its private key) is kept.
type Certificate struct {
	// Role is the PKI role it is issued under.
	Role string `json:"role"`
	// CommonName of the new certificate.
	CommonName string `json:"common_name"`
	// TTL of the new certificate (Vault's duration syntax, "" the role's).
	TTL string `json:"ttl,omitempty"`
	// StoreMount and StorePath: the KV v2 secret the platform reads the
	// certificate and its key from (fields certificate, private_key,
	// issuing_ca, serial_number).
	StoreMount string `json:"store_mount"`
	StorePath  string `json:"store_path"`
}

// Generator makes one field's new value.
type Generator string

// Generators.
const (
	GenPassword Generator = "password" // 40 characters from crypto/rand
	GenEd25519  Generator = "ed25519"  // an OpenSSH ed25519 private key (PEM)
	GenHex32    Generator = "hex32"    // 32 random bytes, hex
)

// ErrInvalidCatalogue is returned by Load and Validate for a catalogue
// that cannot be used: every problem is listed.
var ErrInvalidCatalogue = errors.New("invalid rotation catalogue")

// Load reads and validates a catalogue file.
func Load(file string) (*Catalogue, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return Parse(raw)
}

// Parse decodes and validates a catalogue; unknown fields are refused (a
// misspelt parameter must not silently rotate less).
func Parse(raw []byte) (*Catalogue, error) {
	var c Catalogue
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidCatalogue, err)
	}
	return &c, c.Validate()
}

var (
	entryName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	// vaultName is a mount, key, role or connection name: no path tricks.
	vaultName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
)

// Validate reports every problem at once.
func (c *Catalogue) Validate() error {
	var errs []error
	bad := func(e Entry, format string, a ...any) {
		errs = append(errs, fmt.Errorf("entry %q: %s", e.Name, fmt.Sprintf(format, a...)))
	}
	seen := map[string]bool{}
	for _, e := range c.Entries {
		if !entryName.MatchString(e.Name) {
			bad(e, "name: lowercase letters, digits and -, 1 to 63")
		}
		if seen[e.Name] {
			bad(e, "named twice")
		}
		seen[e.Name] = true
		info, ok := Of(e.Kind)
		switch {
		case !ok:
			bad(e, "unknown kind %q", e.Kind)
			continue
		case info.Scope != PlatformWide:
			bad(e, "kind %s is per tenant: it needs no entry", e.Kind)
			continue
		}
		if !vaultName.MatchString(e.Mount) {
			bad(e, "mount %q is not a mount name", e.Mount)
		}
		for _, p := range setParams(e) {
			if !slices.Contains(info.params, p) {
				bad(e, "%s does not apply to kind %s", p, e.Kind)
			}
		}
		if info.check != nil {
			for _, problem := range info.check(e) {
				bad(e, "%s", problem)
			}
		}
	}
	// A certificate's store must not also be a platform secret: the KV
	// entry would overwrite the certificate's key with a generated value.
	for _, e := range c.Entries {
		for _, cert := range e.Certificates {
			for _, o := range c.Entries {
				if o.Kind == KV && o.Mount == cert.StoreMount && MatchPath(o.Paths, cert.StorePath) {
					bad(e, "certificate store %s/%s is also matched by kv entry %q", cert.StoreMount, cert.StorePath, o.Name)
				}
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidCatalogue, errors.Join(errs...))
	}
	return nil
}

// Entry returns the entry named name.
func (c *Catalogue) Entry(name string) (Entry, bool) {
	i := slices.IndexFunc(c.Entries, func(e Entry) bool { return e.Name == name })
	if i < 0 {
		return Entry{}, false
	}
	return c.Entries[i], true
}

// Selects says whether a name list (keys, connections, static roles)
// names n: by name, or "*" for all.
func Selects(list []string, n string) bool {
	return slices.Contains(list, "*") || slices.Contains(list, n)
}

// MatchPath says whether a KV path matches one of the patterns.
func MatchPath(patterns []string, p string) bool {
	for _, pat := range patterns {
		if prefix, ok := strings.CutSuffix(pat, "/**"); ok {
			if ok, _ := path.Match(prefix, firstSegments(p, strings.Count(prefix, "/")+1)); ok && strings.Count(p, "/") > strings.Count(prefix, "/") {
				return true
			}
			continue
		}
		if ok, _ := path.Match(pat, p); ok {
			return true
		}
	}
	return false
}

// firstSegments is p's first n segments.
func firstSegments(p string, n int) string {
	parts := strings.SplitN(p, "/", n+1)
	if len(parts) > n {
		parts = parts[:n]
	}
	return strings.Join(parts, "/")
}

// setParams are the JSON names of an entry's kind parameters that are set.
func setParams(e Entry) []string {
	var out []string
	v := reflect.ValueOf(e)
	for i := range v.NumField() {
		name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
		if name == "name" || name == "kind" || name == "mount" || v.Field(i).IsZero() {
			continue
		}
		out = append(out, name)
	}
	return out
}

// checkNames reports a name list's problems: empty when required, or an
// item that is neither a name nor "*".
func checkNames(what string, list []string, required bool) []string {
	var out []string
	if required && len(list) == 0 {
		out = append(out, what+`: at least one (or "*")`)
	}
	for _, n := range list {
		if n != "*" && !vaultName.MatchString(n) {
			out = append(out, fmt.Sprintf("%s: %q is not a name", what, n))
		}
	}
	return out
}

func validPattern(p string) bool {
	p = strings.TrimSuffix(p, "/**")
	for _, seg := range strings.Split(p, "/") {
		if seg != "*" && !vaultName.MatchString(seg) {
			return false
		}
	}
	return true
}

func validSecretPath(p string) bool {
	for _, seg := range strings.Split(p, "/") {
		if !vaultName.MatchString(seg) {
			return false
		}
	}
	return true
}
