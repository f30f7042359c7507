// Package credentials is the runbook's vocabulary of credentials, shared by
// every service and the CLI: the kinds Lockdown rotates, whether each is
// kept per tenant or once for the platform, the states a kind's result
// takes, and the rotation catalogue (deploy/rotation/catalogue.json) that
// says which platform-wide credentials of which Vault mounts are rotated
// and how. It is pure: no Vault, no NATS. The rotator holds one package per
// kind that does the work; everything else — the report, the notices, the
// audit feed, `lockdown plan` — renders kinds from what is declared here,
// without knowing any of them.
package credentials

import (
	"fmt"
	"slices"
	"strings"
)

// Kind names one kind of credential.
type Kind string

// The kinds of credential Lockdown rotates.
const (
	SSH      Kind = "ssh"      // a tenant's ed25519 SSH key pair
	SMTP     Kind = "smtp"     // a tenant's SMTP password
	DKIM     Kind = "dkim"     // a tenant's DKIM signing key
	APIKeys  Kind = "api_keys" // a tenant's API keys (destroyed, not replaced)
	Transit  Kind = "transit"  // transit encryption keys
	Database Kind = "database" // database secrets engine root and static-role credentials
	PKI      Kind = "pki"      // certificates issued by a PKI mount
	KV       Kind = "kv"       // platform-wide KV v2 secrets, by path pattern
)

// Scope says whether a kind is kept once per tenant or once for the
// platform.
type Scope string

// Scopes.
const (
	PerTenant    Scope = "tenant"
	PlatformWide Scope = "platform"
)

// Info is what the contract says about one kind.
type Info struct {
	Kind  Kind
	Scope Scope
	// Title names the kind to people (reports, notices).
	Title string
	// Engine is the type of the Vault secrets engine the kind lives in
	// (sys/mounts "type"; KV v2 mounts are "kv").
	Engine string
	// Lists are the engine's folders a dry run LISTs to find what a
	// platform-wide kind rotates (items "<list>/<name>"); KV mounts are
	// walked instead.
	Lists []string
	// Paths are, for a per-tenant kind, where it lives under the tenants'
	// KV v2 mount ({tenant} is the tenant id; a trailing /* is every
	// secret of that folder).
	Paths []string
	// Actions say what a tenant must do once the kind reached a state (no
	// entry: nothing). {credentials} is where the tenant finds new
	// credentials, {dkim_name} where its DKIM record lives.
	Actions map[State]string
	// Destroys: the kind is destroyed, not replaced (API keys).
	Destroys bool
	// WaitsForTenant: the new credential may become active only once the
	// tenant acted (a DKIM key whose record the tenant publishes), so a
	// rotation can complete with it staged.
	WaitsForTenant bool

	// A platform-wide kind's catalogue entries (platform.go): params are
	// the Entry fields it reads (any other set is refused), check reports
	// their problems, covers says whether an entry covers an item a dry
	// run listed on a mount of the kind's engine.
	params []string
	check  func(Entry) []string
	covers func(e Entry, item string) bool
}

// kinds is the registry, in the order a tenant's job handles them and a
// report lists them.
var kinds = []Info{
	{Kind: SSH, Scope: PerTenant, Title: "SSH key", Engine: "kv", Paths: []string{"tenants/{tenant}/ssh"}},
	{Kind: SMTP, Scope: PerTenant, Title: "SMTP credentials", Engine: "kv", Paths: []string{"tenants/{tenant}/smtp"},
		Actions: map[State]string{Rotated: "Get your new SMTP credentials {credentials} (they are never sent by email) and update your integrations with them."}},
	{Kind: APIKeys, Scope: PerTenant, Title: "API keys", Engine: "kv", Paths: []string{"api_keys/{tenant}/*"}, Destroys: true,
		Actions: map[State]string{Destroyed: "Regenerate your API keys in the dashboard: every existing key was revoked. Update every integration that calls the API with the new keys."}},
	{Kind: DKIM, Scope: PerTenant, Title: "DKIM signing key", Engine: "kv", Paths: []string{"tenants/{tenant}/dkim", "tenants/{tenant}/dkim-pending"}, WaitsForTenant: true,
		Actions: map[State]string{
			Rotated:     "Nothing to do for DKIM: {dkim_name} points to us, we published the new record below, switched signing to it and revoked your previous selector.",
			AwaitingDNS: "Publish the new DKIM record below: TXT {dkim_name}. We keep signing with your previous key until your DNS shows the new record, then switch by ourselves; then delete the previous selector's record, whose key must be treated as compromised.",
			Unverified:  "Publish the new DKIM record below: TXT {dkim_name}",
		}},
	transitKind, databaseKind, pkiKind, kvKind,
}

// Kinds returns every kind, in the order reports list them.
func Kinds() []Info { return slices.Clone(kinds) }

// Of returns what the contract says about k.
func Of(k Kind) (Info, bool) {
	i := slices.IndexFunc(kinds, func(i Info) bool { return i.Kind == k })
	if i < 0 {
		return Info{}, false
	}
	return kinds[i], true
}

// OfScope returns the kinds of one scope, in order.
func OfScope(s Scope) []Kind {
	var out []Kind
	for _, i := range kinds {
		if i.Scope == s {
			out = append(out, i.Kind)
		}
	}
	return out
}

// Action is what a tenant must do about k in state s ("" when nothing),
// with its placeholders filled from fill ({credentials}, {dkim_name}).
func (k Kind) Action(s State, fill map[string]string) string {
	i, ok := Of(k)
	if !ok {
		return ""
	}
	text := i.Actions[s]
	for name, v := range fill {
		text = strings.ReplaceAll(text, "{"+name+"}", v)
	}
	return text
}

// Path is where a per-tenant kind lives for tenant under the tenants'
// mount: its i-th declared path ("" when it has none).
func (k Kind) Path(tenant string, i int) string {
	info, ok := Of(k)
	if !ok || i >= len(info.Paths) {
		return ""
	}
	return strings.ReplaceAll(info.Paths[i], "{tenant}", tenant)
}

// TenantSecrets are the KV paths of a tenant's replaced secrets (its
// per-tenant kinds that are one secret each, not destroyed), by kind;
// settled drops the kinds that may wait for the tenant.
func TenantSecrets(tenant string, settled bool) map[Kind]string {
	out := map[Kind]string{}
	for _, i := range kinds {
		if i.Scope != PerTenant || i.Destroys || (settled && i.WaitsForTenant) {
			continue
		}
		out[i.Kind] = strings.ReplaceAll(i.Paths[0], "{tenant}", tenant)
	}
	return out
}

// EngineLists are the folders a dry run lists on a mount of an engine
// type (none for KV, walked, and for engines no kind rotates).
func EngineLists(engine string) []string {
	var out []string
	for _, i := range kinds {
		if i.Engine == engine && i.Scope == PlatformWide {
			out = append(out, i.Lists...)
		}
	}
	return out
}

// Title names k to people ("" kinds and unknown ones by their name).
func (k Kind) Title() string {
	if i, ok := Of(k); ok {
		return i.Title
	}
	return string(k)
}

// State is a kind's result in one job.
type State string

// Result states.
const (
	// Rotated: every credential of the kind has a new value (or, for a
	// kind that destroys, is gone).
	Rotated State = "rotated"
	// Destroyed: the kind's credentials were destroyed (API keys).
	Destroyed State = "destroyed"
	// Failed: the kind's step failed for good; Reason says why.
	Failed State = "failed"
	// AwaitingDNS: a DKIM key staged, waiting for the tenant's DNS to
	// show its record (the old key signs until then).
	AwaitingDNS State = "awaiting_dns"
	// Unverified: a DKIM key made active without DNS to check its record
	// (no DNS configured).
	Unverified State = "unverified"
	// NotCovered: Vault holds credentials of the kind that no catalogue
	// entry covers (lockdown plan).
	NotCovered State = "not_covered"
	// Pending: not reached yet (a job that failed earlier).
	Pending State = "pending"
)

// Done says whether the state means the old credential no longer works.
func (s State) Done() bool {
	return s == Rotated || s == Destroyed || s == AwaitingDNS || s == Unverified
}

// Result is one kind's outcome in a job: what the report, the notices, the
// audit feed and the console render without knowing the kind. Never a
// secret: only counts and public parts.
type Result struct {
	Kind  Kind  `json:"kind" doc:"The credential kind (pkg/events/credentials)." max:"32" enum:"ssh,smtp,api_keys,dkim,transit,database,pki,kv"`
	State State `json:"state" doc:"The kind's outcome." max:"32" enum:"rotated,destroyed,failed,awaiting_dns,unverified,not_covered,pending"`
	// Count is how many credentials of the kind the job handled.
	Count int `json:"count" doc:"How many credentials of the kind were handled (API keys destroyed, transit keys rotated, certificates replaced, …)."`
	// Public is what may be shown of the new credential (an SSH
	// fingerprint, a DKIM selector, a key version, certificate serials).
	Public string `json:"public,omitempty" doc:"The public part worth showing: an SSH fingerprint, a DKIM selector, key versions, certificate serials." max:"1024"`
	// Reason says why a failed kind failed.
	Reason string `json:"reason,omitempty" doc:"Why the kind failed." max:"1024"`
}

// States lists every result state.
func States() []State {
	return []State{Rotated, Destroyed, Failed, AwaitingDNS, Unverified, NotCovered, Pending}
}

// Validate checks a result's kind and state are known.
func (r Result) Validate() error {
	if _, ok := Of(r.Kind); !ok {
		return fmt.Errorf("unknown credential kind %q", r.Kind)
	}
	if slices.Contains(States(), r.State) {
		return nil
	}
	return fmt.Errorf("unknown result state %q of kind %s", r.State, r.Kind)
}
