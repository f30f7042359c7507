package recovery

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/vaultdecl"
)

// Reconciliation: Vault's security configuration is compared with the
// declaration (Baseline, Lockdown's policies and token roles) at every
// revocation and again after the rekey and before restore, because a root
// intruder may have changed anything root can change. What is not declared
// is removed; what is declared and differs is put back; what differs and
// cannot be mended with the recovery token's rights is reported as
// detected. docs/security.md lists every technique and its outcome.

// Kinds of VaultChange.
const (
	KindAuditDevice    = "audit_device"
	KindAuditedHeader  = "audited_header"
	KindAuthMount      = "auth_mount"
	KindSecretsMount   = "secrets_mount"
	KindMountTuning    = "mount_tuning"
	KindPolicy         = "policy"
	KindTokenRole      = "token_role"
	KindIdentityEntity = "identity_entity"
	KindIdentityGroup  = "identity_group"
	KindPlugin         = "plugin"
)

// mend is one planned change: the evidence the report keeps and the call
// that makes it (nil for what is only detected).
type mend struct {
	events.VaultChange
	apply func(ctx context.Context) error
}

// evidence builds the report's record of one object, its previous
// definition cut to events.PreviousLimit with the hash of the whole.
func evidence(kind, name, action, why, previous string) events.VaultChange {
	c := events.VaultChange{Kind: kind, Name: name, Action: action, Why: why}
	if previous != "" {
		sum := sha256.Sum256([]byte(previous))
		c.PreviousSHA256 = hex.EncodeToString(sum[:])
		if len(previous) > events.PreviousLimit {
			previous = previous[:events.PreviousLimit]
		}
		c.Previous = strings.ToValidUTF8(previous, "?")
	}
	return c
}

// planReconcile reads Vault's security configuration and returns what must
// change, audit devices first: no secret may be written while a device the
// declaration does not name can receive it. auth are the auth mounts as
// read by the caller; disabled the ones the revocation disables anyway
// (their tuning does not matter).
func (r *Recoverer) planReconcile(ctx context.Context, auth map[string]AuthMount, disabled []string) ([]mend, error) {
	v, b := r.vault, r.cfg.Baseline
	var out []mend

	devices, err := v.AuditDevices(ctx)
	if err != nil {
		return nil, fmt.Errorf("list audit devices: %w", err)
	}
	for _, path := range slices.Sorted(maps.Keys(devices)) {
		d := devices[path]
		why := vaultdecl.AuditDifference(b.AuditDevices, path, d.Type, d.Options)
		if why == "" {
			continue
		}
		out = append(out, mend{evidence(KindAuditDevice, path, events.VaultRemoved, why, d.Raw),
			func(ctx context.Context) error { return v.DisableAudit(ctx, path) }})
	}
	for _, d := range b.AuditDevices {
		if _, ok := devices[d.Path]; !ok {
			// Re-enabling is left to an operator: pinning a device's
			// options is beyond a Vault policy's allowed_parameters, so a
			// recovery token allowed to enable one could enable it with
			// log_raw.
			out = append(out, mend{VaultChange: evidence(KindAuditDevice, d.Path, events.VaultDetected,
				"declared audit device is missing (or was removed for differing options); re-enable it as declared", "")})
		}
	}

	headers, err := v.AuditedHeaders(ctx)
	if err != nil {
		return nil, fmt.Errorf("list audited request headers: %w", err)
	}
	for _, name := range slices.Sorted(maps.Keys(headers)) {
		if slices.ContainsFunc(b.AuditedHeaders, func(h string) bool { return strings.EqualFold(h, name) }) {
			continue
		}
		out = append(out, mend{evidence(KindAuditedHeader, name, events.VaultRemoved, "audited request header not declared", headers[name]),
			func(ctx context.Context) error { return v.DeleteAuditedHeader(ctx, name) }})
	}

	for _, name := range slices.Sorted(maps.Keys(b.PolicyContent)) {
		want := b.PolicyContent[name]
		live, err := v.Policy(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("read policy %s: %w", name, err)
		}
		if live == want {
			continue
		}
		why := "content differs from the declaration"
		if live == "" {
			why = "declared policy is missing"
		}
		if name == ownRecoveryPolicy {
			// A policy cannot pin its own text: the recovery token may
			// read its policy but not write it.
			out = append(out, mend{VaultChange: policyEvidence(name, events.VaultDetected,
				why+"; the recovery token cannot rewrite its own policy: re-apply deploy/vault/policies/lockdown-recovery.hcl as an administrator", live, want)})
			continue
		}
		out = append(out, mend{policyEvidence(name, events.VaultRestored, why, live, want),
			func(ctx context.Context) error { return v.PutPolicy(ctx, name, want) }})
	}

	roles, err := v.TokenRoles(ctx)
	if err != nil {
		return nil, fmt.Errorf("list token roles: %w", err)
	}
	for _, name := range vaultdecl.Roles() {
		if !slices.Contains(roles, name) {
			roles = append(roles, name)
		}
	}
	sort.Strings(roles)
	for _, name := range roles {
		def, err := v.TokenRole(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("read token role %s: %w", name, err)
		}
		raw := rawJSON(def)
		if !slices.Contains(vaultdecl.Roles(), name) {
			if slices.Contains(b.TokenRoles, name) || def == nil {
				continue
			}
			out = append(out, mend{evidence(KindTokenRole, name, events.VaultRemoved, "token role not declared", raw),
				func(ctx context.Context) error { return v.DeleteTokenRole(ctx, name) }})
			continue
		}
		why := roleDifference(name, def)
		if why == "" {
			continue
		}
		out = append(out, mend{evidence(KindTokenRole, name, events.VaultRestored, why, raw), func(ctx context.Context) error {
			// Deleted first: a write keeps every field it does not name,
			// the intruder's bound CIDRs included.
			if def != nil {
				if err := v.DeleteTokenRole(ctx, name); err != nil {
					return err
				}
			}
			return v.WriteTokenRole(ctx, name, vaultdecl.TokenRole(name))
		}})
	}

	mounts, err := v.SecretsMounts(ctx)
	if err != nil {
		return nil, fmt.Errorf("list secrets engines: %w", err)
	}
	for _, path := range slices.Sorted(maps.Keys(mounts)) {
		m := mounts[path]
		if !slices.Contains(vaultdecl.VaultSecretsMounts(), path) && !slices.Contains(b.SecretsMounts, path) {
			out = append(out, mend{evidence(KindSecretsMount, path, events.VaultRemoved, "secrets engine not declared (its data is deleted with it)", m.Raw),
				func(ctx context.Context) error { return v.DisableSecrets(ctx, path) }})
			continue
		}
		if len(m.AuditNonHMACKeys) > 0 {
			out = append(out, tuning(v, false, path, m.AuditNonHMACKeys, m.Raw))
		}
	}
	for _, path := range slices.Sorted(maps.Keys(auth)) {
		m := auth[path]
		if len(m.AuditNonHMACKeys) > 0 && r.baselineAuth(path) && !slices.Contains(disabled, path) {
			out = append(out, tuning(v, true, "auth/"+path, m.AuditNonHMACKeys, m.Raw))
		}
	}

	for _, kind := range []string{"group", "entity"} {
		ids, err := v.Identities(ctx, kind)
		if err != nil {
			return nil, fmt.Errorf("list identity %ss: %w", kind, err)
		}
		declared, k := b.IdentityGroups, KindIdentityGroup
		if kind == "entity" {
			declared, k = b.IdentityEntities, KindIdentityEntity
		}
		for _, id := range ids {
			if len(id.Policies) == 0 || slices.Contains(declared, id.Name) {
				continue
			}
			out = append(out, mend{evidence(k, id.Name, events.VaultRemoved, fmt.Sprintf("undeclared %s carrying policies %v", kind, id.Policies), id.Raw),
				func(ctx context.Context) error { return v.DeleteIdentity(ctx, kind, id.ID) }})
		}
	}

	plugins, err := v.Plugins(ctx)
	if err != nil {
		return nil, fmt.Errorf("list the plugin catalog: %w", err)
	}
	for _, p := range plugins {
		if slices.Contains(b.Plugins, p.Type+"/"+p.Name) {
			continue
		}
		out = append(out, mend{evidence(KindPlugin, p.Type+"/"+p.Name, events.VaultRemoved, "external plugin not declared", p.Raw),
			func(ctx context.Context) error { return v.DeregisterPlugin(ctx, p) }})
	}
	return out, nil
}

// ownRecoveryPolicy is the policy of the token reconciling.
const ownRecoveryPolicy = "lockdown-recovery"

// policyEvidence keeps a changed policy's previous text, or, when it is
// longer than the evidence may be, the lines it had that the declaration
// lacks ("+ ") and the declared lines it lacked ("- "): the intruder's
// grant is then in the evidence wherever it stood. The hash is the whole
// text's either way.
func policyEvidence(name, action, why, live, want string) events.VaultChange {
	c := evidence(KindPolicy, name, action, why, live)
	if len(live) <= events.PreviousLimit {
		return c
	}
	wantLines, liveLines := strings.Split(want, "\n"), strings.Split(live, "\n")
	var rules, comments []string
	add := func(prefix, l string) {
		switch t := strings.TrimSpace(l); {
		case t == "":
		case strings.HasPrefix(t, "#"):
			comments = append(comments, prefix+l)
		default:
			rules = append(rules, prefix+l)
		}
	}
	for _, l := range liveLines {
		if !slices.Contains(wantLines, l) {
			add("+ ", l)
		}
	}
	for _, l := range wantLines {
		if !slices.Contains(liveLines, l) {
			add("- ", l)
		}
	}
	// Rules first: padding the policy with comments must not push the
	// intruder's grant out of the evidence.
	diff := slices.Concat(rules, comments)
	sum := c.PreviousSHA256
	c = evidence(KindPolicy, name, action, why+" (previous text too long to keep: its lines that differ)", strings.Join(diff, "\n"))
	c.PreviousSHA256 = sum
	return c
}

func tuning(v Vault, auth bool, path string, keys []string, raw string) mend {
	return mend{evidence(KindMountTuning, path, events.VaultRestored,
		fmt.Sprintf("audit_non_hmac keys %v make every audit device write those fields in clear", keys), raw),
		func(ctx context.Context) error { return v.ClearAuditKeys(ctx, auth, strings.TrimPrefix(path, "auth/")) }}
}

// sameSetting compares a token role's setting read back from Vault with
// its declared value: Vault leaves out a setting that is zero.
func sameSetting(got, want string) bool {
	return got == want || (got == "" && want == "0")
}

// roleDifference compares a Lockdown token role read back from Vault with
// its declaration (vaultdecl.TokenRole): every field that shapes the
// tokens minted from it. "" when it matches.
func roleDifference(name string, def map[string]any) string {
	if def == nil {
		return "declared token role is missing"
	}
	want := map[string]string{
		"allowed_policies": name, "disallowed_policies": "", "allowed_policies_glob": "", "disallowed_policies_glob": "",
		"allowed_entity_aliases": "", "orphan": "true", "renewable": "true", "token_period": fmt.Sprint(vaultdecl.TokenPeriodSeconds),
		"token_explicit_max_ttl": "0", "token_num_uses": "0", "token_bound_cidrs": "", "token_no_default_policy": "true",
		"path_suffix": "", "token_ttl": "0", "token_max_ttl": "0",
	}
	var diff []string
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if got := flat(def[k]); !sameSetting(got, want[k]) {
			diff = append(diff, fmt.Sprintf("%s=%s", k, got))
		}
	}
	if t := flat(def["token_type"]); t != "default-service" && t != "service" {
		diff = append(diff, "token_type="+t)
	}
	if len(diff) == 0 {
		return ""
	}
	return "differs from the declaration: " + strings.Join(diff, ", ")
}

// flat renders a value read from Vault's JSON for comparison: lists sorted
// and comma-joined, nil and empty as "".
func flat(v any) string {
	switch t := v.(type) {
	case nil:
		return ""
	case []any:
		s := make([]string, 0, len(t))
		for _, e := range t {
			s = append(s, flat(e))
		}
		sort.Strings(s)
		return strings.Join(s, ",")
	case []string:
		s := slices.Sorted(slices.Values(t))
		return strings.Join(s, ",")
	case json.Number:
		return t.String()
	default:
		return fmt.Sprint(t)
	}
}

func rawJSON(v any) string {
	if v == nil {
		return ""
	}
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

// ErrSuccessorMismatch is returned when a token minted from one of
// Lockdown's roles is not what the role declares (other policies, bound
// CIDRs, a limited life): it is never handed over.
var ErrSuccessorMismatch = errors.New("minted token differs from its declared role")

// verifySuccessor looks a freshly minted token up and checks it against
// its role's declaration before anything uses it.
func (r *Recoverer) verifySuccessor(ctx context.Context, role, token, accessor string) error {
	info, err := r.vault.LookupToken(ctx, token)
	if err != nil {
		return fmt.Errorf("look the %s successor up: %w", role, err)
	}
	var problems []string
	if p := slices.Sorted(slices.Values(info.Policies)); !slices.Equal(p, []string{role}) {
		problems = append(problems, fmt.Sprintf("policies %v", p))
	}
	if info.Role != role {
		problems = append(problems, "role "+info.Role)
	}
	if info.Accessor != accessor {
		problems = append(problems, "another accessor")
	}
	if !info.Orphan {
		problems = append(problems, "not an orphan")
	}
	if !info.Renewable {
		problems = append(problems, "not renewable")
	}
	if info.Period != vaultdecl.TokenPeriodSeconds {
		problems = append(problems, fmt.Sprintf("period %ds", info.Period))
	}
	if info.ExplicitMaxTTL != 0 {
		problems = append(problems, fmt.Sprintf("explicit max TTL %ds", info.ExplicitMaxTTL))
	}
	if info.NumUses != 0 {
		problems = append(problems, fmt.Sprintf("%d uses", info.NumUses))
	}
	if info.Type != "service" {
		problems = append(problems, "type "+info.Type)
	}
	if len(info.BoundCIDRs) > 0 {
		problems = append(problems, fmt.Sprintf("bound to %v", info.BoundCIDRs))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s: %s", ErrSuccessorMismatch, role, strings.Join(problems, ", "))
	}
	return nil
}

// mergeChanges adds what an earlier, cut-short attempt recorded to what
// this one found: a removed object is no longer there to be found again.
func mergeChanges(prior, now []events.VaultChange) []events.VaultChange {
	out := slices.Clone(now)
	for _, p := range prior {
		if !slices.ContainsFunc(out, func(c events.VaultChange) bool { return c.Kind == p.Kind && c.Name == p.Name }) {
			out = append(out, p)
		}
	}
	return out
}

func changesOf(ms []mend) []events.VaultChange {
	out := make([]events.VaultChange, len(ms))
	for i, m := range ms {
		out[i] = m.VaultChange
	}
	return out
}

// applyMends makes every planned change, in order.
func (r *Recoverer) applyMends(ctx context.Context, ms []mend) error {
	for _, m := range ms {
		if m.apply == nil {
			continue
		}
		if err := m.apply(ctx); err != nil {
			return fmt.Errorf("%s %s %s: %w", m.Action, m.Kind, m.Name, err)
		}
		r.cfg.Failpoints.Hit("containment.recovery.removed")
	}
	return nil
}
