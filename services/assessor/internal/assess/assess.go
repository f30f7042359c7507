// Package assess turns the audit counts of a window into the breach
// assessment: who touched which tenants' secrets, which actors stand out
// from ordinary service traffic, how wide it is. It imports no transport.
package assess

import (
	"context"
	"slices"
	"sort"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/services/assessor/internal/audit"
	"github.com/lockdown/lockdown/services/assessor/internal/store"
)

// Config of the assessment.
type Config struct {
	// Window is how far before detection the audit log is read.
	Window time.Duration
	// WidespreadAbove: more affected tenants than this is widespread.
	WidespreadAbove int
	// ExcludeTenants are never reported (test tenants).
	ExcludeTenants []string
	// TrustedActors (display names or entity ids) are ordinary service
	// traffic: their reads do not make tenants affected unless they also
	// misbehave (denied, revoked, pattern hits).
	TrustedActors []string
	// ListLimit bounds the listed suspicious events and secret reads.
	ListLimit int
}

// Source is what the assessment reads (the assessor's store).
type Source interface {
	Counts(ctx context.Context, start, end time.Time) ([]store.Count, error)
	RevokedSince(ctx context.Context, t time.Time) ([]string, error)
	Suspicious(ctx context.Context, start, end time.Time, limit int) ([]store.Event, error)
	Reads(ctx context.Context, accessors []string, start, end time.Time, limit int) ([]store.Event, error)
}

// Result is a stored assessment: the event's data plus the listings.
type Result struct {
	events.AssessmentCompletedData
	SuspiciousList []store.Event `json:"suspicious_list"`
	AccessedList   []store.Event `json:"accessed_list"`
	DurationMS     int64         `json:"duration_ms"`
}

type actorKey struct{ accessor, entity, display, remote string }

type actorStats struct {
	events.Actor
	tenants     map[string]bool
	patternHits int64
	errors      int64
	revoked     bool
}

// Assess reads the window before detectedAt and builds the result.
func Assess(ctx context.Context, src Source, cfg Config, incidentID string, detectedAt time.Time) (Result, error) {
	began := time.Now()
	start, end := detectedAt.Add(-cfg.Window), detectedAt
	counts, err := src.Counts(ctx, start, end)
	if err != nil {
		return Result{}, err
	}
	revokedList, err := src.RevokedSince(ctx, start)
	if err != nil {
		return Result{}, err
	}
	revoked := map[string]bool{}
	for _, a := range revokedList {
		revoked[a] = true
	}
	actors := map[actorKey]*actorStats{}
	var suspiciousEvents, secretsAccessed int64
	for _, c := range counts {
		k := actorKey{c.Accessor, c.EntityID, c.DisplayName, c.RemoteAddress}
		a := actors[k]
		if a == nil {
			a = &actorStats{Actor: events.Actor{Accessor: c.Accessor, EntityID: c.EntityID, DisplayName: c.DisplayName, RemoteAddress: c.RemoteAddress},
				tenants: map[string]bool{}, revoked: c.Accessor != "" && revoked[c.Accessor]}
			actors[k] = a
		}
		a.patternHits += c.PatternHits
		suspiciousEvents += c.PatternHits
		switch c.Kind {
		case audit.KindRead:
			a.Reads += int(c.Count)
			secretsAccessed += c.Count
			if !slices.Contains(cfg.ExcludeTenants, c.Tenant) {
				a.tenants[c.Tenant] = true
			}
		case audit.KindDenied:
			a.Denied += int(c.Count)
			suspiciousEvents += c.Count
		case audit.KindError:
			a.errors += c.Count
			suspiciousEvents += c.Count
		}
	}
	// An actor stands out when it was refused, matched a suspicious
	// pattern, or had its token revoked since; trusted service identities
	// stand out only by that. When none stands out (a quiet intruder), every
	// untrusted reader is a suspect: the breach is real, and a missed tenant
	// costs more than a precautionary one.
	suspect := func(a *actorStats) bool { return a.Denied > 0 || a.patternHits > 0 || a.revoked }
	anySuspect := false
	for _, a := range actors {
		anySuspect = anySuspect || suspect(a)
	}
	affected := map[string]bool{}
	var suspectAccessors []string
	for _, a := range actors {
		trusted := slices.Contains(cfg.TrustedActors, a.DisplayName) || (a.EntityID != "" && slices.Contains(cfg.TrustedActors, a.EntityID))
		if suspect(a) || (!anySuspect && !trusted) {
			for t := range a.tenants {
				affected[t] = true
			}
			if a.Accessor != "" {
				suspectAccessors = append(suspectAccessors, a.Accessor)
			}
		}
	}
	res := Result{AssessmentCompletedData: events.AssessmentCompletedData{
		IncidentID: incidentID, WindowStart: start, WindowEnd: end, Scope: "limited",
		SuspiciousEvents: int(suspiciousEvents), SecretsAccessed: int(secretsAccessed), AffectedTenants: sortedKeys(affected),
		Actors: []events.Actor{},
	}}
	if len(affected) > cfg.WidespreadAbove {
		res.Scope = "widespread"
	}
	for _, a := range actors {
		a.Tenants = sortedKeys(a.tenants)
		res.Actors = append(res.Actors, a.Actor)
	}
	// Most tenants touched first: the intruder leads the list.
	sort.Slice(res.Actors, func(i, j int) bool {
		if len(res.Actors[i].Tenants) != len(res.Actors[j].Tenants) {
			return len(res.Actors[i].Tenants) > len(res.Actors[j].Tenants)
		}
		return res.Actors[i].Denied > res.Actors[j].Denied
	})
	if res.SuspiciousList, err = src.Suspicious(ctx, start, end, cfg.ListLimit); err != nil {
		return Result{}, err
	}
	if len(suspectAccessors) > 0 {
		if res.AccessedList, err = src.Reads(ctx, suspectAccessors, start, end, cfg.ListLimit); err != nil {
			return Result{}, err
		}
	}
	res.DurationMS = time.Since(began).Milliseconds()
	return res, nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		if k != "" {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}
