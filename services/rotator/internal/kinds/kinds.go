// Package kinds is what every credential kind the rotator handles
// implements, one package per kind below it: the platform-wide kinds of the
// rotation catalogue (transit, database, pki, kv: Kind, mapped by the
// Registry) and the per-tenant kinds replaced by one new secret (ssh,
// smtp: TenantSecret). A tenant's DKIM key (package dkim: the key and its
// record) and API keys (package apikeys: destroyed, not replaced) have
// shapes of their own: package rotation stages and rolls the DKIM key over
// through DNS, and records the keys' count before destroying them.
//
// A platform kind is given one catalogue entry of an incident at a time;
// it must finish what an earlier attempt of the same entry began without
// doing it twice where twice would be wrong, recording its progress
// through Save before every step it cannot tell afterwards it took. It
// imports no transport.
package kinds

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/services/rotator/internal/keys"
)

// Vault is what the kinds call, with the rotator's token: full API paths.
type Vault interface {
	// Read returns the data at path (nil when none).
	Read(ctx context.Context, path string) (map[string]any, error)
	// ListAt returns the keys at path (folders end in /).
	ListAt(ctx context.Context, path string) ([]string, error)
	Write(ctx context.Context, path string, data map[string]any) (map[string]any, error)
	// Patch merges data into a KV v2 secret (JSON merge patch).
	Patch(ctx context.Context, path string, data map[string]any) (map[string]any, error)
	// Gate refuses while Vault has an undeclared audit device: called
	// before every request whose body or response carries a new secret.
	Gate(ctx context.Context) error
}

// ErrPermanent marks a failure no retry mends (a catalogue entry naming
// what this Vault does not have): the entry is recorded failed.
var ErrPermanent = errors.New("permanent")

// Record is an entry's recorded progress, kept by the rotator between
// attempts (never a secret: versions, serials, write ids, times).
type Record struct {
	// Started is when the entry's first attempt began.
	Started time.Time `json:"started"`
	// Items holds each item's progress, by item name, in the kind's terms.
	Items map[string]Item `json:"items,omitempty"`
	// Revoked counts what the kind revoked (certificates).
	Revoked int `json:"revoked,omitempty"`
}

// Item is one credential's progress.
type Item struct {
	// From is what the item was before (a transit key's version).
	From int `json:"from,omitempty"`
	// Mark is what the item showed before, as text (a static role's
	// last_vault_rotation): a different value later means it was rotated.
	Mark string `json:"mark,omitempty"`
	// WriteID names the write of a new value before it is made.
	WriteID string `json:"write_id,omitempty"`
	// Public is what may be shown of the new credential.
	Public string `json:"public,omitempty"`
	Done   bool   `json:"done,omitempty"`
}

// Job is one entry's job.
type Job struct {
	IncidentID string
	Entry      credentials.Entry
	// Save records rec (call before each step that must not run twice).
	Save func() error
	Rec  *Record
	// Wrote is called right after each write that changes Vault or the
	// database behind it, before it is recorded (the crash tests' kill
	// point "rotator.platform.written").
	Wrote func()
}

// Capability is one path of the rotator's Vault policy an entry needs.
type Capability struct {
	Path string
	Caps []string
	// Why says what the path is for (a comment in the policy).
	Why string
}

// Kind rotates the credentials of one catalogue entry kind.
type Kind interface {
	// Kind is the credential kind it rotates.
	Kind() credentials.Kind
	// Capabilities are the policy paths an entry of this kind needs.
	Capabilities(e credentials.Entry) []Capability
	// Rotate rotates the entry's credentials, once per incident, and
	// returns the result and the items it rotated.
	Rotate(ctx context.Context, v Vault, job Job) (credentials.Result, []string, error)
}

// Registry maps each platform-wide kind to its package.
type Registry map[credentials.Kind]Kind

// NewRegistry registers kinds, refusing a kind twice or a per-tenant one.
func NewRegistry(ks ...Kind) (Registry, error) {
	r := Registry{}
	for _, k := range ks {
		info, ok := credentials.Of(k.Kind())
		if !ok || info.Scope != credentials.PlatformWide {
			return nil, fmt.Errorf("kind %q is not a platform-wide kind of the contract", k.Kind())
		}
		if _, dup := r[k.Kind()]; dup {
			return nil, fmt.Errorf("kind %q registered twice", k.Kind())
		}
		r[k.Kind()] = k
	}
	return r, nil
}

// Check reports every catalogue entry whose kind has no package.
func (r Registry) Check(c *credentials.Catalogue) error {
	var errs []error
	for _, e := range c.Entries {
		if _, ok := r[e.Kind]; !ok {
			errs = append(errs, fmt.Errorf("catalogue entry %q: kind %s has no rotator package", e.Name, e.Kind))
		}
	}
	return errors.Join(errs...)
}

// Select lists the names an entry selects from what a mount has: every
// one for "*", else the named ones that exist (a named one that does not
// is an error: the catalogue promised it).
func Select(list, have []string, what string) ([]string, error) {
	if slices.Contains(list, "*") {
		return have, nil
	}
	var missing []string
	for _, n := range list {
		if !slices.Contains(have, n) {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: %s %v not found", ErrPermanent, what, missing)
	}
	return slices.Clone(list), nil
}

// NewWriteID names one write of one item: the incident and a random part.
func NewWriteID(incidentID string) (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return incidentID + "/" + hex.EncodeToString(b), nil
}

// WriteKey is the KV field whose only key is the write id of the write
// that produced the version (the subkeys endpoint shows it without any
// value): the same convention as the tenants' secrets.
const WriteKey = "lockdown_write"

// Subkeys reads a KV v2 secret's subkeys (key names, every value null):
// its field names and the write ids under WriteKey (exists is false for a
// secret with no live latest version).
func Subkeys(ctx context.Context, v Vault, mount, path string) (fields, writeIDs []string, exists bool, err error) {
	d, err := v.Read(ctx, mount+"/subkeys/"+path)
	if err != nil || d == nil {
		return nil, nil, false, err
	}
	sub, _ := d["subkeys"].(map[string]any)
	for f := range sub {
		if f != WriteKey {
			fields = append(fields, f)
		}
	}
	if w, ok := sub[WriteKey].(map[string]any); ok {
		for id := range w {
			writeIDs = append(writeIDs, id)
		}
	}
	slices.Sort(fields)
	slices.Sort(writeIDs)
	return fields, writeIDs, true, nil
}

// Stamp returns the KV data fields that mark a write: the write id, the
// incident and the time.
func Stamp(incidentID, writeID string) map[string]any {
	now := time.Now().UTC().Format(time.RFC3339)
	return map[string]any{WriteKey: map[string]any{writeID: now}, "lockdown_incident": incidentID, "rotated_at": now}
}

// Number reads an integer of a Vault response (json.Number or float64),
// zero when it is none.
func Number(v any) int {
	n, _ := ParseNumber(v)
	return n
}

// ParseNumber reads an integer of a Vault response (json.Number or
// float64) and says whether it was one.
func ParseNumber(v any) (int, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return int(i), err == nil
	case float64:
		return int(n), true
	case int:
		return n, true
	}
	return 0, false
}

// TenantSecret is a per-tenant kind replaced by writing one new KV v2
// secret at its contract path (credentials.TenantSecrets): the SSH key,
// the SMTP password. The rotation writes it with check-and-set under a
// write id, records its public part and tells the tenant; the kind makes
// the material and says what of it is public.
type TenantSecret interface {
	Kind() credentials.Kind
	// New makes the tenant's new secret: its KV data, and the public part
	// recorded and told to the tenant (an SSH key's fingerprint; "" when
	// nothing of it is public). pre is material generated for the tenant
	// ahead of its job (nil: generate now).
	New(tenant string, pre *keys.Set) (data map[string]any, public string, err error)
}
