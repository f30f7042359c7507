package report

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Markdown writes the report for people: the review meeting reads it.
func (r Report) Markdown(w io.Writer) error {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	p("# Post-incident report: %s", r.IncidentID)
	p("")
	p("| | |")
	p("|---|---|")
	p("| outcome | **%s**%s |", r.Outcome, suffix(" — ", r.Reason))
	p("| severity | %s |", r.Severity)
	p("| summary | %s |", cell(r.Summary))
	p("| detected by | %s (%d detection(s)) |", cell(r.DetectedBy), r.Detections)
	p("| detected | %s |", stamp(r.DetectedAt))
	if r.TraceURL != "" {
		p("| trace | [%s](%s) |", r.TraceID, r.TraceURL)
	} else {
		p("| trace | %s |", orDash(r.TraceID))
	}
	p("| resolved | %s |", stamp(r.ResolvedAt))
	p("| scope | %s |", orDash(r.Scope))
	p("| affected tenants | %d |", r.AffectedCount)
	p("")
	if len(r.AffectedTenants) > 0 {
		p("Affected tenants: %s", strings.Join(r.AffectedTenants, ", "))
		if more := r.AffectedCount - len(r.AffectedTenants); more > 0 {
			p("… and %d more (the assessment's event lists %d; every tenant was rotated)", more, len(r.AffectedTenants))
		}
		p("")
	}
	p("## Actors found by the assessment")
	p("")
	if len(r.Actors) == 0 {
		p("None.")
	} else {
		p("| actor | trusted | display names | addresses | accessors (HMAC, per audit device) | reads | denied | tenants | stands out because |")
		p("|---|---|---|---|---|---|---|---|---|")
		for _, a := range r.Actors {
			accessors := make([]string, 0, len(a.Accessors))
			for _, da := range a.Accessors {
				if da.Device == "" {
					accessors = append(accessors, da.Accessor)
				} else {
					accessors = append(accessors, da.Device+": "+da.Accessor)
				}
			}
			trusted := "no"
			if a.Trusted {
				trusted = "yes"
			}
			p("| %s | %s | %s | %s | %s | %d | %d | %d | %s |", a.Key, trusted, list(a.DisplayNames), list(a.RemoteAddresses), list(accessors),
				a.Reads, a.Denied, max(a.TenantsTotal, len(a.Tenants)), list(a.Reasons))
		}
	}
	p("")
	a := r.Actions
	p("## Actions taken")
	p("")
	for _, s := range a.Seals {
		p("- Sealed %s (%s), confirmed %s", s.Address, s.Method, stamp(s.ConfirmedAt))
	}
	p("- Auth methods disabled: %s", list(a.AuthMethodsDisabled))
	p("- Auth methods removed (not in the baseline, never restored): %s", list(a.AuthMethodsRemoved))
	p("- Policies deleted (not in the baseline): %s", list(a.PoliciesDeleted))
	p("- Lockdown's own tokens replaced by successors (the old ones revoked): %s", list(a.LockdownTokensReplaced))
	if len(a.LockdownTokensNotReplaced) > 0 {
		p("- Lockdown's own tokens NOT replaced (given in the environment; still the install-time ones): %s", list(a.LockdownTokensNotReplaced))
	}
	if a.BatchTokenMaxTTL != "" {
		p("- Batch tokens cannot be revoked (no accessor): one issued before the revocation lives at most %s", a.BatchTokenMaxTTL)
	}
	if len(a.VaultChanges) > 0 {
		p("- Vault's security configuration reconciled with the declaration (previous definitions in the JSON report):")
		for _, c := range a.VaultChanges {
			p("  - %s %s `%s`: %s", c.Action, strings.ReplaceAll(c.Kind, "_", " "), c.Name, c.Why)
		}
	}
	if a.GenerateRootCancelled > 0 {
		p("- ALARM: %d sys/generate-root attempts cancelled (someone holding old unseal shares tried to make a root token)", a.GenerateRootCancelled)
	}
	if a.SweepTokensRevoked > 0 {
		p("- Tokens that appeared after the revocation, revoked by the later sweeps: %d", a.SweepTokensRevoked)
	}
	p("- Seal rounds: %d", a.SealRounds)
	p("- Tokens revoked: %d (kept: %d); lease prefixes revoked: %s", a.TokensRevoked, a.TokensKept, list(a.LeasePrefixes))
	p("- Keyring rotated to term %d", a.KeyringTerm)
	if u := a.UnsealKeys; u != nil {
		kind := "unseal"
		if u.RecoveryKeys {
			kind = "recovery"
		}
		p("- %s keys rotated: %d shares, threshold %d, verified %v; holders' PGP fingerprints: %s", capital(kind), u.Shares, u.Threshold, u.Verified, list(u.PGPFingerprints))
		switch u.Proof {
		case "pgp_backup":
			p("- Completion proven: Vault's PGP-encrypted backup carries the ceremony's nonce")
		case "vault_log":
			p("- Completion proven: Vault's own log, watched without a gap, showed the barrier rekeyed after this ceremony started")
		default:
			// Events from before the proof was required carry "unproven".
			p("- Completion NOT proven (%q): have the holders confirm that the old shares no longer unseal", u.Proof)
		}
	} else {
		p("- Unseal keys: not rotated")
	}
	p("- Tenants planned %d, rotated %d (SSH, SMTP, DKIM), failed %d; API keys destroyed: %d", a.TenantsPlanned, a.TenantsRotated, a.TenantsFailed, a.APIKeysDestroyed)
	if len(a.RotatedBy) > 0 {
		p("- Rotation work by process: %s", counts(a.RotatedBy))
	}
	dkim := map[string]int{}
	for _, t := range a.Rotations {
		if t.DKIMState != "" {
			dkim[t.DKIMState]++
		}
	}
	if len(dkim) > 0 {
		p("- DKIM keys: %s (active: the record is published and the key signs; awaiting_dns: the tenant has not published it yet and the old key signs)", counts(dkim))
	}
	p("- Tenants notified %d, not notified %d; messages sent: %s", a.TenantsNotified, a.NotificationsFailed, counts(a.MessagesSent))
	p("- Auth methods restored: %s", list(a.AuthMethodsRestored))
	if len(a.DrivenBy) > 0 {
		procs := make([]string, 0, len(a.DrivenBy))
		for proc := range a.DrivenBy {
			procs = append(procs, proc)
		}
		sort.Strings(procs)
		for _, proc := range procs {
			p("- Containment process %s: %s", proc, strings.Join(a.DrivenBy[proc], ", "))
		}
	}
	p("")
	p("## Phases against targets")
	p("")
	p("| phase | duration | runbook target | Lockdown target | met |")
	p("|---|---|---|---|---|")
	for _, ph := range r.Phases {
		p("| %s | %s | %s | %s | %s |", ph.Name, ph.Duration.Round(time.Millisecond), target(ph.RunbookTarget), target(ph.LockdownTarget), yes(ph.Met))
	}
	p("")
	p("## Failures")
	p("")
	if len(r.Failures) == 0 {
		p("None.")
	}
	for _, f := range r.Failures {
		p("- %s %s%s: %s", stamp(f.Time), f.What, suffix(" for ", f.TenantID), cell(f.Reason))
	}
	p("")
	p("## Credentials by kind")
	p("")
	p("| kind | scope | rotated | jobs | failed | pending | not covered |")
	p("|---|---|---|---|---|---|---|")
	for _, c := range a.Credentials {
		notCovered := "?"
		if c.NotCovered >= 0 {
			notCovered = fmt.Sprint(c.NotCovered)
		}
		p("| %s | %s | %d | %d | %d | %d | %s |", c.Title, c.Scope, c.Rotated, c.Jobs, c.Failed, c.Pending, notCovered)
	}
	if r.CoveragePlanAt != nil {
		p("")
		p("Not covered, by `lockdown plan` of %s: %d", stamp(*r.CoveragePlanAt), len(r.Uncovered))
		for _, g := range r.Uncovered {
			p("- %s (%s) %s: %s", g.Mount, g.Type, orDash(g.Item), cell(g.Why))
		}
	} else {
		p("")
		p("Not covered: unknown here — run `lockdown plan` (it names every credential Vault holds that nothing rotates).")
	}
	p("")
	p("## Tenant rotations")
	p("")
	p("| tenant | affected | SSH fingerprint | DKIM selector | API keys destroyed |")
	p("|---|---|---|---|---|")
	for _, t := range a.Rotations {
		p("| %s | %s | %s | %s%s | %d |", t.TenantID, yes(t.Affected), t.SSHFingerprint, t.DKIMSelector, suffix(" ", paren(t.DKIMState)), t.APIKeysDestroyed)
	}
	p("")
	p("## Timeline")
	p("")
	for _, l := range r.Timeline {
		p("- %s `%s` (%s) %s", stamp(l.Time), l.Type, l.Source, cell(l.Summary))
	}
	p("")
	p("## Review (%s)", orDash(r.ReviewState))
	p("")
	p("- Root cause: %s", r.RootCause)
	p("- Lessons learned: %s", list(r.LessonsLearned))
	p("- Preventive measures: %s", list(r.PreventiveMeasures))
	for _, c := range r.ReviewHistory {
		ignored := ""
		if c.Ignored {
			ignored = " — ignored, the review was final"
		}
		p("- %s %s changed %s%s", stamp(c.At), cell(c.By), strings.Join(c.Changed, ", "), ignored)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000Z")
}

func target(d time.Duration) string {
	if d == 0 {
		return "—"
	}
	return d.String()
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return cell(s)
}

// cell keeps a value from breaking a Markdown table or list line.
func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

func list(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func counts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func suffix(sep, s string) string {
	if s == "" {
		return ""
	}
	return sep + s
}

func capital(s string) string { return strings.ToUpper(s[:1]) + s[1:] }

// paren is s in parentheses, or "" for "".
func paren(s string) string {
	if s == "" {
		return ""
	}
	return "(" + s + ")"
}
