// Package vaultdecl declares the Vault objects Lockdown owns: its token
// roles. The install step (docs/operations.md, deploy/compose/vault-init.sh,
// the local stack) writes them from here, and containment re-asserts them
// from here in every revocation before it mints a successor from one: a
// root intruder may have edited a role (a bound CIDR, another policy, a
// short max TTL) to cripple the tokens Lockdown hands itself.
package vaultdecl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
)

// Roles are Lockdown's token roles, one per token: lockdown-seal,
// lockdown-recovery, lockdown-rotator (each named after its one policy).
var roles = []string{"lockdown-seal", "lockdown-recovery", "lockdown-rotator"}

// Roles returns the names of Lockdown's token roles, which are also the
// names of Lockdown's policies (one each).
func Roles() []string { return slices.Clone(roles) }

// Vault's own objects: Vault creates them, no baseline declares them and
// no reconciliation removes them (Vault refuses to delete root and default
// anyway).

// VaultAuthMounts is the token store.
func VaultAuthMounts() []string { return []string{"token"} }

// VaultSecretsMounts are the system, cubbyhole and identity engines.
func VaultSecretsMounts() []string { return []string{"sys", "cubbyhole", "identity"} }

// VaultPolicies are root and default.
func VaultPolicies() []string { return []string{"root", "default"} }

// TokenPeriod is the period of Lockdown's tokens: each lives as long as it
// is renewed within it.
const TokenPeriod = "768h"

// TokenPeriodSeconds is TokenPeriod as Vault reads it back.
const TokenPeriodSeconds = 768 * 3600

// TokenRole is the write that declares role (auth/token/roles/<role>): its
// one policy, orphan (no parent's revocation takes it along), periodic
// (lives as long as it is renewed), and without Vault's default policy:
// each of Lockdown's policies grants its token lookup-self and renew-self
// itself. Vault parses a templated policy such as default again at every
// request (policy_store.go, PolicyStore.ACL): it was a sixth of Vault's
// work in the rotation, and what an intruder adds to default never
// reaches Lockdown's tokens. Every value is a string so that a Vault
// policy's allowed_parameters can pin it exactly.
func TokenRole(role string) map[string]any {
	return map[string]any{"allowed_policies": []string{role}, "orphan": "true", "token_period": TokenPeriod, "renewable": "true",
		"token_no_default_policy": "true"}
}

// Baseline is the declaration of Vault's security configuration
// (deploy/vault/baseline.json): what Vault may hold besides Lockdown's own
// objects and the declared auth methods (deploy/vault/auth). Containment
// reconciles Vault with it in every revocation; FromLive writes one from a
// healthy Vault.
type Baseline struct {
	Description string `json:"description,omitempty"`
	// AuditDevices are the only audit devices Vault may have, with their
	// exact options. log_raw is refused: a device that logs in clear
	// receives every secret the rotation writes.
	AuditDevices []AuditDevice `json:"audit_devices"`
	// AuditedHeaders are the request headers audit devices may record
	// (sys/config/auditing/request-headers).
	AuditedHeaders []string `json:"audited_headers,omitempty"`
	// AuthMounts are the platform's auth mounts besides the declared
	// methods of deploy/vault/auth (and the token store).
	AuthMounts []string `json:"auth_mounts"`
	// SecretsMounts are the secrets engines besides Vault's own (sys,
	// cubbyhole, identity). Disabling a mount deletes its data: declare
	// every mount the platform uses.
	SecretsMounts []string `json:"secrets_mounts"`
	// Policies are the platform's ACL policies kept by name; PolicyDir
	// (relative to the baseline file) holds policies declared by content,
	// <name>.hcl each, rewritten when Vault's copy differs.
	Policies  []string `json:"policies"`
	PolicyDir string   `json:"policy_dir,omitempty"`
	// TokenRoles are the platform's token roles besides Lockdown's.
	TokenRoles []string `json:"token_roles,omitempty"`
	// IdentityEntities and IdentityGroups are the identity objects, by
	// name, that may carry policies; an undeclared one carrying any is
	// deleted.
	IdentityEntities []string `json:"identity_entities,omitempty"`
	IdentityGroups   []string `json:"identity_groups,omitempty"`
	// Plugins are the external plugins (type/name) the catalog may hold
	// besides Vault's built-in ones.
	Plugins []string `json:"plugins,omitempty"`

	// PolicyContent are the policies declared by content, by name: the
	// baseline's PolicyDir and Lockdown's own policy directory (with
	// Vault's default policy). Filled when the baseline is loaded.
	PolicyContent map[string]string `json:"-"`
}

// AuditDevice is one declared audit device: sys/audit/<path>.
type AuditDevice struct {
	Path    string            `json:"path"`
	Type    string            `json:"type"`
	Options map[string]string `json:"options"`
}

// Load reads a baseline file (unknown fields refused, so a misspelt key is
// not silently ignored) and checks its audit devices: path and type
// given, log_raw refused. Containment's recovery adds the checks that
// need the auth methods and policy directories.
func Load(file string) (Baseline, error) {
	var b Baseline
	raw, err := os.ReadFile(file)
	if err != nil {
		return b, fmt.Errorf("vault baseline: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return b, fmt.Errorf("vault baseline %s: %w", file, err)
	}
	var problems []string
	for _, d := range b.AuditDevices {
		if d.Path == "" || d.Type == "" {
			problems = append(problems, fmt.Sprintf("audit device %+v: path and type are required", d))
		}
		if raw, ok := d.Options["log_raw"]; ok && raw != "false" {
			problems = append(problems, fmt.Sprintf("audit device %s: log_raw=%s would write every rotated secret in clear; it is refused", d.Path, raw))
		}
	}
	if len(problems) > 0 {
		return b, fmt.Errorf("vault baseline %s: %s", file, strings.Join(problems, "; "))
	}
	return b, nil
}

// AuditDifference says why a live audit device (sys/audit/<path>, of type
// typ with options) is not one of the declared devices; "" when it is.
// The options must match exactly: an intruder who re-enabled a declared
// path with log_raw, or pointed it at a file of theirs, is caught.
func AuditDifference(declared []AuditDevice, path, typ string, options map[string]string) string {
	i := slices.IndexFunc(declared, func(a AuditDevice) bool { return a.Path == path })
	switch {
	case i < 0:
		if options["log_raw"] == "true" {
			return "audit device not declared, logging in clear (log_raw)"
		}
		return "audit device not declared"
	case declared[i].Type != typ:
		return fmt.Sprintf("type %s, declared %s", typ, declared[i].Type)
	case !maps.Equal(declared[i].Options, options): // nil and empty are equal
		keys := map[string]bool{}
		for k := range declared[i].Options {
			keys[k] = true
		}
		for k := range options {
			keys[k] = true
		}
		var diff []string
		for _, k := range slices.Sorted(maps.Keys(keys)) {
			if declared[i].Options[k] != options[k] {
				diff = append(diff, k)
			}
		}
		return "options differ from the declaration: " + strings.Join(diff, ", ")
	}
	return ""
}
