// Package audit reads Vault's audit log format — one JSON object per line,
// as the file and socket audit devices write it — into the columns the
// assessment queries, and finds the tenant a secret path belongs to with
// configurable path templates. It is pure: no I/O.
package audit

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/valyala/fastjson"

	"github.com/lockdown/lockdown/pkg/events"
)

// Entry is one audit line, reduced to what the assessment needs, plus the
// raw line. Token values never appear: Vault writes client tokens and
// accessors HMAC'd, and they are kept as written.
type Entry struct {
	RequestID     string
	Type          string // request or response
	Time          time.Time
	Operation     string
	Path          string
	MountType     string
	RemoteAddress string
	DisplayName   string
	EntityID      string
	Accessor      string // HMAC'd, as Vault wrote it
	Policies      []string
	Error         string
	// Tenant is the tenant the path belongs to ("" for none), from the
	// templates at ingest so queries need no pattern matching.
	Tenant string
	// RevokedAccessor is the (HMAC'd) accessor a revoke-accessor request
	// names, so "tokens later revoked" can be found.
	RevokedAccessor string
	// Device is the audit device the line came through (set by ingestion,
	// not read from the line: Vault does not write it). Accessor HMACs are
	// salted per device, so an accessor means something only with it.
	Device string
	Raw    []byte
}

// ErrMalformed is returned for a line that is not a Vault audit entry.
var ErrMalformed = errors.New("audit: malformed entry")

// Decoder reads audit lines. It reuses its parser's memory between lines,
// so one Decoder serves one goroutine.
type Decoder struct {
	p       fastjson.Parser
	tenants *Templates
}

// NewDecoder returns a decoder that finds tenants with the templates (nil:
// none).
func NewDecoder(tenants *Templates) *Decoder { return &Decoder{tenants: tenants} }

// Parse reads one audit line with a fresh decoder.
func Parse(raw []byte, tenants *Templates) (Entry, error) { return NewDecoder(tenants).Decode(raw) }

// Decode reads one audit line. Lines without a request id, a known type or
// a valid time wrap ErrMalformed. The fields are read straight from the
// parsed document, which skips the reflection of encoding/json: ingestion
// is bounded by this.
func (d *Decoder) Decode(raw []byte) (Entry, error) {
	v, err := d.p.ParseBytes(raw)
	if err != nil {
		return Entry{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if v.Type() != fastjson.TypeObject {
		return Entry{}, fmt.Errorf("%w: not an object", ErrMalformed)
	}
	str := func(keys ...string) string { return string(v.GetStringBytes(keys...)) }
	e := Entry{RequestID: str("request", "id"), Type: str("type"), Operation: str("request", "operation"), Path: str("request", "path"),
		MountType: str("request", "mount_type"), RemoteAddress: str("request", "remote_address"), Error: str("error"),
		Accessor: str("auth", "accessor"), DisplayName: str("auth", "display_name"), EntityID: str("auth", "entity_id"), Raw: raw}
	if e.RequestID == "" {
		return Entry{}, fmt.Errorf("%w: no request id", ErrMalformed)
	}
	if e.Type != "request" && e.Type != "response" {
		return Entry{}, fmt.Errorf("%w: type %q", ErrMalformed, e.Type)
	}
	t, err := time.Parse(time.RFC3339Nano, str("time"))
	if err != nil {
		return Entry{}, fmt.Errorf("%w: time %q", ErrMalformed, str("time"))
	}
	e.Time = t.UTC()
	policies := v.GetArray("auth", "policies")
	if len(policies) == 0 {
		policies = v.GetArray("auth", "token_policies")
	}
	for _, p := range policies {
		if b, err := p.StringBytes(); err == nil {
			e.Policies = append(e.Policies, string(b))
		}
	}
	if d.tenants != nil {
		e.Tenant = d.tenants.Tenant(e.Path)
	}
	if strings.HasSuffix(e.Path, "auth/token/revoke-accessor") {
		e.RevokedAccessor = str("request", "data", "accessor")
	}
	return e, nil
}

// Kind classifies a response for the assessment's aggregates.
type Kind string

// Kinds of response.
const (
	KindRead   Kind = "read"   // a successful read or list of a tenant's secret
	KindDenied Kind = "denied" // permission denied
	KindError  Kind = "error"  // any other error
	KindOther  Kind = "other"
)

// Classify tells what a response entry counts as. Requests are not
// classified (their response carries the outcome).
func (e Entry) Classify() Kind {
	switch {
	case e.Error != "" && strings.Contains(strings.ToLower(e.Error), "permission denied"):
		return KindDenied
	case e.Error != "":
		return KindError
	case e.Tenant != "" && (e.Operation == "read" || e.Operation == "list"):
		return KindRead
	}
	return KindOther
}

// Templates find the tenant in a secret path: "secret/data/tenants/{tenant}/"
// matches secret/data/tenants/acme/ssh with tenant "acme". Paths are never
// split on "/" blindly: only a template says where the tenant is.
type Templates struct {
	rules []rule
}

type rule struct{ prefix, suffix string }

// ParseTemplates compiles templates; each must contain {tenant} once.
func ParseTemplates(templates []string) (*Templates, error) {
	t := &Templates{}
	for _, s := range templates {
		before, after, ok := strings.Cut(s, "{tenant}")
		if !ok || strings.Contains(after, "{tenant}") || before == "" {
			return nil, fmt.Errorf("tenant template %q must contain {tenant} once, after a prefix", s)
		}
		t.rules = append(t.rules, rule{prefix: before, suffix: after})
	}
	return t, nil
}

// Tenant returns the tenant a path belongs to, or "".
func (t *Templates) Tenant(path string) string {
	for _, r := range t.rules {
		rest, ok := strings.CutPrefix(path, r.prefix)
		if !ok {
			continue
		}
		tenant, tail, _ := strings.Cut(rest, "/")
		if tenant == "" || events.ValidTenantID(tenant) != nil {
			continue // no tenant can have this id: not a tenant's secret
		}
		if r.suffix != "" && r.suffix != "/" && !strings.HasPrefix("/"+tail, r.suffix) {
			continue
		}
		return tenant
	}
	return ""
}
