// Package assess turns the audit counts of a window into the breach
// assessment: who touched which tenants' secrets (one actor per entity or
// token, whatever audit devices logged it), which actors stand out from
// ordinary service traffic and why, how wide it is. It imports no
// transport.
package assess

import (
	"cmp"
	"context"
	"fmt"
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
	// TrustedEntities are the Vault entity ids of the platform's own
	// services: their reads are ordinary traffic unless they misbehave
	// (denied, suspicious paths, token revoked since). Only entity ids:
	// a display name is chosen by whoever creates a token.
	TrustedEntities []string
	// ListLimit bounds the listed suspicious events and secret reads.
	ListLimit int
}

// Source is what the assessment reads (the assessor's store).
type Source interface {
	Counts(ctx context.Context, start, end time.Time) ([]store.Count, error)
	RevokedSince(ctx context.Context, t time.Time) ([]string, error)
	Tokens(ctx context.Context, accessors []string) (map[string]store.Token, error)
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

// Actor keys. An entity is one actor whatever tokens it holds; a token
// without an entity is one actor across every audit device that logged
// it; requests without a token are one anonymous actor. Display names and
// addresses are never part of the key: a token's creator chooses its
// display name, and an intruder chooses where to connect from.
const (
	entityKey    = "entity:"
	tokenKey     = "token:"
	anonymousKey = "anonymous"
)

type actorStats struct {
	events.Actor
	tenants, names, remotes map[string]bool
	accessors               map[store.DeviceAccessor]bool
	errors                  int64
	revoked                 bool
}

// Assess reads the window before detectedAt and builds the result.
//
// Every tenant read by an actor that is not a trusted platform identity
// is affected, and so is every tenant read by a trusted one that
// misbehaved: a missed tenant is told "we have no evidence" while its
// secrets were read, which costs far more than a precautionary notice.
// Which actors stand out, and why, is reported as explanation and never
// used to drop reads.
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
	seen := map[string]bool{}
	var accessors []string
	for _, a := range slices.Concat(revokedList, accessorsOf(counts)) {
		if a != "" && !seen[a] {
			seen[a] = true
			accessors = append(accessors, a)
		}
	}
	tokens, err := src.Tokens(ctx, accessors)
	if err != nil {
		return Result{}, err
	}
	revoked := map[string]bool{}
	for _, a := range revokedList {
		revoked[tokens[a].Identity] = true
	}
	trusted := func(entity string) bool { return entity != "" && slices.Contains(cfg.TrustedEntities, entity) }
	actors := map[string]*actorStats{}
	var suspiciousEvents, secretsAccessed int64
	for _, c := range counts {
		key := anonymousKey
		tok, hasToken := tokens[c.Accessor]
		switch {
		case c.EntityID != "":
			key = entityKey + c.EntityID
		case hasToken:
			key = tokenKey + tok.Identity
		}
		a := actors[key]
		if a == nil {
			a = &actorStats{Actor: events.Actor{Key: key, EntityID: c.EntityID, Trusted: trusted(c.EntityID)},
				tenants: map[string]bool{}, names: map[string]bool{}, remotes: map[string]bool{}, accessors: map[store.DeviceAccessor]bool{}}
			actors[key] = a
		}
		if hasToken {
			for _, da := range tok.Accessors {
				a.accessors[da] = true
			}
			a.revoked = a.revoked || revoked[tok.Identity]
		}
		a.names[c.DisplayName] = true
		a.remotes[c.RemoteAddress] = true
		a.PatternHits += int(c.PatternHits)
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
	affected := map[string]bool{}
	var readerAccessors []string
	res := Result{AssessmentCompletedData: events.AssessmentCompletedData{
		IncidentID: incidentID, WindowStart: start, WindowEnd: end, Scope: "limited",
		SuspiciousEvents: int(suspiciousEvents), SecretsAccessed: int(secretsAccessed), Actors: []events.Actor{},
	}}
	for _, a := range actors {
		a.Reasons = reasons(a)
		a.Suspect = len(a.Reasons) > 0
		a.Tenants = sortedKeys(a.tenants)
		a.DisplayNames = sortedKeys(a.names)
		a.RemoteAddresses = sortedKeys(a.remotes)
		for da := range a.accessors {
			a.Accessors = append(a.Accessors, events.DeviceAccessor{Device: da.Device, Accessor: da.Accessor})
		}
		slices.SortFunc(a.Accessors, func(x, y events.DeviceAccessor) int {
			return cmp.Or(cmp.Compare(x.Device, y.Device), cmp.Compare(x.Accessor, y.Accessor))
		})
		if !a.Trusted || a.Suspect {
			for _, t := range a.Tenants {
				affected[t] = true
			}
			if len(a.Tenants) > 0 {
				for _, da := range a.Accessors {
					readerAccessors = append(readerAccessors, da.Accessor)
				}
			}
		}
		res.Actors = append(res.Actors, a.Actor)
	}
	res.AffectedTenants = sortedKeys(affected)
	if len(res.AffectedTenants) > cfg.WidespreadAbove {
		res.Scope = "widespread"
	}
	// Who stood out first, then untrusted readers by tenants touched: the
	// intruder leads the list.
	slices.SortFunc(res.Actors, func(x, y events.Actor) int {
		return cmp.Or(-cmp.Compare(b2i(x.Suspect), b2i(y.Suspect)), cmp.Compare(b2i(x.Trusted), b2i(y.Trusted)),
			-cmp.Compare(len(x.Tenants), len(y.Tenants)), -cmp.Compare(x.Denied, y.Denied), cmp.Compare(x.Key, y.Key))
	})
	if res.SuspiciousList, err = src.Suspicious(ctx, start, end, cfg.ListLimit); err != nil {
		return Result{}, err
	}
	if len(readerAccessors) > 0 {
		if res.AccessedList, err = src.Reads(ctx, readerAccessors, start, end, cfg.ListLimit); err != nil {
			return Result{}, err
		}
	}
	res.DurationMS = time.Since(began).Milliseconds()
	return res, nil
}

// reasons says why an actor stands out: refused requests, suspicious
// paths, a token revoked since the window began.
func reasons(a *actorStats) []string {
	var out []string
	if a.Denied > 0 {
		out = append(out, fmt.Sprintf("%d %s denied", a.Denied, requests(a.Denied)))
	}
	if a.PatternHits > 0 {
		out = append(out, fmt.Sprintf("%d %s on suspicious paths", a.PatternHits, requests(a.PatternHits)))
	}
	if a.revoked {
		out = append(out, "token revoked since the window began")
	}
	return out
}

func requests(n int) string {
	if n == 1 {
		return "request"
	}
	return "requests"
}

func accessorsOf(counts []store.Count) []string {
	out := make([]string, 0, len(counts))
	for _, c := range counts {
		out = append(out, c.Accessor)
	}
	return out
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
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
