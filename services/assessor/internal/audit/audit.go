// Package audit reads Vault's audit log format — one JSON object per line,
// as the file and socket audit devices write it — into the columns the
// assessment queries, and finds the tenant a secret path belongs to with
// configurable path templates. It is pure: no I/O.
package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
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
	Raw             []byte
}

// ErrMalformed is returned for a line that is not a Vault audit entry.
var ErrMalformed = errors.New("audit: malformed entry")

type line struct {
	Time  string `json:"time"`
	Type  string `json:"type"`
	Error string `json:"error"`
	Auth  *struct {
		Accessor      string   `json:"accessor"`
		DisplayName   string   `json:"display_name"`
		EntityID      string   `json:"entity_id"`
		Policies      []string `json:"policies"`
		TokenPolicies []string `json:"token_policies"`
	} `json:"auth"`
	Request *struct {
		ID            string          `json:"id"`
		Operation     string          `json:"operation"`
		Path          string          `json:"path"`
		MountType     string          `json:"mount_type"`
		RemoteAddress string          `json:"remote_address"`
		Data          json.RawMessage `json:"data"`
	} `json:"request"`
}

// Parse reads one audit line. Lines without a request id, a known type or
// a valid time wrap ErrMalformed.
func Parse(raw []byte, tenants *Templates) (Entry, error) {
	var l line
	if err := json.Unmarshal(raw, &l); err != nil {
		return Entry{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if l.Request == nil || l.Request.ID == "" {
		return Entry{}, fmt.Errorf("%w: no request id", ErrMalformed)
	}
	if l.Type != "request" && l.Type != "response" {
		return Entry{}, fmt.Errorf("%w: type %q", ErrMalformed, l.Type)
	}
	t, err := time.Parse(time.RFC3339Nano, l.Time)
	if err != nil {
		return Entry{}, fmt.Errorf("%w: time %q", ErrMalformed, l.Time)
	}
	e := Entry{RequestID: l.Request.ID, Type: l.Type, Time: t.UTC(), Operation: l.Request.Operation, Path: l.Request.Path,
		MountType: l.Request.MountType, RemoteAddress: l.Request.RemoteAddress, Error: l.Error, Raw: raw}
	if l.Auth != nil {
		e.Accessor, e.DisplayName, e.EntityID = l.Auth.Accessor, l.Auth.DisplayName, l.Auth.EntityID
		e.Policies = l.Auth.Policies
		if len(e.Policies) == 0 {
			e.Policies = l.Auth.TokenPolicies
		}
	}
	if tenants != nil {
		e.Tenant = tenants.Tenant(e.Path)
	}
	// Request data is decoded only where it matters: it is the bulk of
	// most lines.
	if strings.HasSuffix(e.Path, "auth/token/revoke-accessor") && len(l.Request.Data) > 0 {
		var d struct {
			Accessor string `json:"accessor"`
		}
		if json.Unmarshal(l.Request.Data, &d) == nil {
			e.RevokedAccessor = d.Accessor
		}
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
		if tenant == "" {
			continue
		}
		if r.suffix != "" && r.suffix != "/" && !strings.HasPrefix("/"+tail, r.suffix) {
			continue
		}
		return tenant
	}
	return ""
}
