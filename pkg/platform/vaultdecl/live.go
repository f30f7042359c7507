package vaultdecl

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	vault "github.com/hashicorp/vault/api"
)

// ErrRawAuditDevice is returned by FromLive when a live audit device logs
// in clear (log_raw): it cannot be declared, and a Vault that has one is
// not healthy enough to adopt a baseline from.
var ErrRawAuditDevice = fmt.Errorf("audit device logs in clear (log_raw=true)")

// FromLive reads a healthy Vault's security configuration with a token
// that may read it (root, or an administrator's) and returns it as a
// baseline, for an operator to review and adopt: every audit device with
// its options, every auth and secrets mount, policy, token role, identity
// entity and group carrying policies, external plugin and audited header
// — less Vault's own objects, Lockdown's (lockdown-* policies and roles)
// and the auth mounts named in declaredAuth (deploy/vault/auth's, which
// are re-applied from their own files).
func FromLive(ctx context.Context, c *vault.Client, declaredAuth []string) (Baseline, error) {
	b := Baseline{Description: "Written from a live Vault by `lockdown install vault --baseline-from-live`: review every entry (anything an intruder planted before this was written would be declared), then commit it as deploy/vault/baseline.json.",
		AuditDevices: []AuditDevice{}, AuthMounts: []string{}, SecretsMounts: []string{}, Policies: []string{}}
	devices, err := c.Sys().ListAuditWithContext(ctx)
	if err != nil {
		return b, fmt.Errorf("sys/audit: %w", err)
	}
	for _, path := range slices.Sorted(maps.Keys(devices)) {
		d := devices[path]
		if d.Options["log_raw"] == "true" {
			return b, fmt.Errorf("%s: %w", path, ErrRawAuditDevice)
		}
		b.AuditDevices = append(b.AuditDevices, AuditDevice{Path: strings.TrimSuffix(path, "/"), Type: d.Type, Options: d.Options})
	}
	auth, err := c.Sys().ListAuthWithContext(ctx)
	if err != nil {
		return b, fmt.Errorf("sys/auth: %w", err)
	}
	for _, path := range slices.Sorted(maps.Keys(auth)) {
		p := strings.TrimSuffix(path, "/")
		if !slices.Contains(VaultAuthMounts(), p) && !slices.Contains(declaredAuth, p) {
			b.AuthMounts = append(b.AuthMounts, p)
		}
	}
	mounts, err := c.Sys().ListMountsWithContext(ctx)
	if err != nil {
		return b, fmt.Errorf("sys/mounts: %w", err)
	}
	for _, path := range slices.Sorted(maps.Keys(mounts)) {
		if p := strings.TrimSuffix(path, "/"); !slices.Contains(VaultSecretsMounts(), p) {
			b.SecretsMounts = append(b.SecretsMounts, p)
		}
	}
	policies, err := c.Sys().ListPoliciesWithContext(ctx)
	if err != nil {
		return b, fmt.Errorf("sys/policies/acl: %w", err)
	}
	for _, p := range slices.Sorted(slices.Values(policies)) {
		if !slices.Contains(VaultPolicies(), p) && !strings.HasPrefix(p, "lockdown-") {
			b.Policies = append(b.Policies, p)
		}
	}
	roles, err := ListKeys(ctx, c, "auth/token/roles")
	if err != nil {
		return b, err
	}
	for _, r := range roles {
		if strings.HasPrefix(r, "lockdown-") {
			continue
		}
		b.TokenRoles = append(b.TokenRoles, r)
	}
	for kind, into := range map[string]*[]string{"entity": &b.IdentityEntities, "group": &b.IdentityGroups} {
		ids, err := ListKeys(ctx, c, "identity/"+kind+"/id")
		if err != nil {
			return b, err
		}
		for _, id := range ids {
			s, err := c.Logical().ReadWithContext(ctx, "identity/"+kind+"/id/"+id)
			if err != nil {
				return b, fmt.Errorf("identity/%s/id: %w", kind, err)
			}
			if s == nil {
				continue
			}
			if pols, _ := s.Data["policies"].([]any); len(pols) > 0 {
				name, _ := s.Data["name"].(string)
				*into = append(*into, name)
			}
		}
		slices.Sort(*into)
	}
	catalog, err := c.Logical().ReadWithContext(ctx, "sys/plugins/catalog")
	if err != nil {
		return b, fmt.Errorf("sys/plugins/catalog: %w", err)
	}
	if catalog != nil {
		detailed, _ := catalog.Data["detailed"].([]any)
		for _, d := range detailed {
			if p, _ := d.(map[string]any); p != nil && p["builtin"] != true {
				b.Plugins = append(b.Plugins, fmt.Sprintf("%v/%v", p["type"], p["name"]))
			}
		}
		slices.Sort(b.Plugins)
	}
	headers, err := c.Logical().ReadWithContext(ctx, "sys/config/auditing/request-headers")
	if err != nil {
		return b, fmt.Errorf("sys/config/auditing/request-headers: %w", err)
	}
	if headers != nil {
		h, _ := headers.Data["headers"].(map[string]any)
		b.AuditedHeaders = slices.Sorted(maps.Keys(h))
	}
	return b, nil
}

// ListKeys lists path (a LIST request) and returns its keys; none when
// Vault answers nothing there.
func ListKeys(ctx context.Context, c *vault.Client, path string) ([]string, error) {
	s, err := c.Logical().ListWithContext(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if s == nil {
		return nil, nil
	}
	keys, _ := s.Data["keys"].([]any)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		if str, ok := k.(string); ok {
			out = append(out, str)
		}
	}
	return out, nil
}
