package credentials

import (
	"fmt"
	"slices"
	"strings"
)

// Estate is what a dry run listed of Vault — names only, never a value:
// every secrets mount with the items a kind could rotate.
type Estate struct {
	// TenantMount is the KV v2 mount of the tenants' secrets.
	TenantMount string
	Mounts      []Mount
}

// Mount is one secrets engine mount and what it holds. Items are, for a
// KV mount, every secret's path; for another engine a kind rotates,
// "<list>/<name>" of each of its kinds' Lists (transit "keys/<key>",
// database "config/<connection>" and "static-roles/<role>", pki
// "roles/<role>"); for any other engine nothing (the whole mount is a
// gap).
type Mount struct {
	Path  string   `json:"path"`
	Type  string   `json:"type"`
	Items []string `json:"items,omitempty"`
}

// systemEngines hold no credential an incident rotates: Vault's own
// (sys, identity) and the per-token cubbyhole.
var systemEngines = []string{"system", "identity", "cubbyhole", "ns_system", "ns_identity", "ns_cubbyhole"}

// Gap is something Vault holds that nothing would rotate.
type Gap struct {
	Mount string `json:"mount"`
	Type  string `json:"type"`
	// Item is the secret, key or role ("" for the whole mount).
	Item string `json:"item,omitempty"`
	Why  string `json:"why"`
}

// KindCount is how many credentials of a kind an incident would handle.
type KindCount struct {
	Kind  Kind   `json:"kind"`
	Scope Scope  `json:"scope"`
	Count int    `json:"count"`
	Title string `json:"title"`
}

// Coverage is what an incident would rotate now, and what it would not.
type Coverage struct {
	Kinds []KindCount `json:"kinds"`
	// Entries counts each catalogue entry's credentials.
	Entries map[string]int `json:"entries"`
	// Tenants counts the tenants found in the tenants' mount.
	Tenants   int   `json:"tenants"`
	Uncovered []Gap `json:"uncovered"`
}

// Coverage matches an estate against the tenant kinds and the catalogue.
func (c *Catalogue) Coverage(estate Estate) Coverage {
	counts := map[Kind]int{}
	cov := Coverage{Entries: map[string]int{}, Uncovered: []Gap{}}
	for _, entry := range c.Entries {
		cov.Entries[entry.Name] = 0
	}
	tenantMount := strings.Trim(estate.TenantMount, "/")
	tenants := map[string]bool{}
	for _, m := range estate.Mounts {
		m.Path = strings.Trim(m.Path, "/")
		if slices.Contains(systemEngines, m.Type) {
			continue
		}
		// The tenants' mount is covered by the tenant kinds, and may hold
		// platform entries too; any other mount needs an entry.
		isTenantMount := m.Type == "kv" && m.Path == tenantMount
		entries := c.onMount(m.Path)
		if len(entries) == 0 && !isTenantMount {
			cov.Uncovered = append(cov.Uncovered, Gap{Mount: m.Path, Type: m.Type, Why: fmt.Sprintf("no catalogue entry names mount %s", m.Path)})
			continue
		}
		if len(engineKinds(m.Type)) == 0 {
			cov.Uncovered = append(cov.Uncovered, Gap{Mount: m.Path, Type: m.Type, Why: fmt.Sprintf("no credential kind rotates a %s engine", m.Type)})
			continue
		}
		for _, item := range m.Items {
			if isTenantMount {
				if k, tenant, ok := tenantKind(item); ok {
					counts[k]++
					tenants[tenant] = true
					continue
				}
			}
			name, ok := coveredBy(entries, m.Type, item)
			if !ok {
				cov.Uncovered = append(cov.Uncovered, Gap{Mount: m.Path, Type: m.Type, Item: item, Why: "no catalogue entry covers it"})
				continue
			}
			cov.Entries[name]++
			entry, _ := c.Entry(name)
			counts[entry.Kind]++
		}
	}
	for _, i := range kinds {
		cov.Kinds = append(cov.Kinds, KindCount{Kind: i.Kind, Scope: i.Scope, Count: counts[i.Kind], Title: i.Title})
	}
	cov.Tenants = len(tenants)
	return cov
}

// onMount returns the entries on a mount.
func (c *Catalogue) onMount(mount string) []Entry {
	var out []Entry
	for _, e := range c.Entries {
		if e.Mount == mount || slices.ContainsFunc(e.Certificates, func(cert Certificate) bool { return cert.StoreMount == mount }) {
			out = append(out, e)
		}
	}
	return out
}

// engineKinds are the platform kinds that may live in an engine type.
func engineKinds(engine string) []Kind {
	var out []Kind
	for _, i := range kinds {
		if i.Engine == engine && i.Scope == PlatformWide {
			out = append(out, i.Kind)
		}
	}
	return out
}

// coveredBy names the entry that rotates an item of a mount: an entry on
// the mount whose kind lives in the mount's engine and covers the item,
// or a PKI entry that keeps a certificate there.
func coveredBy(entries []Entry, engine, item string) (string, bool) {
	for _, e := range entries {
		info, _ := Of(e.Kind)
		if info.Engine == engine && info.covers != nil && info.covers(e, item) {
			return e.Name, true
		}
		if engine == "kv" && slices.ContainsFunc(e.Certificates, func(c Certificate) bool { return c.StorePath == item }) {
			return e.Name, true // where a re-issued certificate is kept
		}
	}
	return "", false
}

// tenantKind says which per-tenant kind a path of the tenants' mount is,
// and whose.
func tenantKind(item string) (Kind, string, bool) {
	for _, i := range kinds {
		if i.Scope != PerTenant {
			continue
		}
		for _, tpl := range i.Paths {
			if tenant, ok := matchTemplate(tpl, item); ok {
				return i.Kind, tenant, true
			}
		}
	}
	return "", "", false
}

// matchTemplate matches a path against a template with one {tenant}
// segment and * segments.
func matchTemplate(tpl, p string) (string, bool) {
	ts, ps := strings.Split(tpl, "/"), strings.Split(p, "/")
	if len(ts) != len(ps) {
		return "", false
	}
	tenant := ""
	for i := range ts {
		switch ts[i] {
		case "{tenant}":
			tenant = ps[i]
		case "*":
			if ps[i] == "" {
				return "", false
			}
		default:
			if ts[i] != ps[i] {
				return "", false
			}
		}
	}
	return tenant, tenant != ""
}
