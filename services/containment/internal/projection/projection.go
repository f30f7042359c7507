// Package projection keeps containment's read model: one document per
// incident (readmodel.Incident, in the key-value bucket the contract
// declares) and its report (the object store), rebuilt from containment's
// own records after every change. Readers never touch the database.
//
// The document is derived, never a source of truth, so its failure modes
// are simple: a process killed between a change and the write leaves the
// old document until the next pass (the first pass after a start or a
// change of leader rebuilds the most recent incidents); NATS down leaves
// documents stale and every pass retries; PostgreSQL down likewise. Only
// the engine's leader writes, so two containment processes do not race
// each other's documents.
//
// It imports no transport: the records (Source) and the buckets (Sink)
// are ports.
package projection

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/lockdown/lockdown/pkg/events/readmodel"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/pkg/platform/failpoint"
	"github.com/lockdown/lockdown/services/containment/internal/incident"
	"github.com/lockdown/lockdown/services/containment/internal/recovery"
	"github.com/lockdown/lockdown/services/containment/internal/reporting"
)

// Seal is one recorded node seal.
type Seal struct {
	Round                    int
	Address, Method          string
	RequestedAt, ConfirmedAt time.Time
}

// Snapshot is everything one incident's document and report are built
// from, read together.
type Snapshot struct {
	Incident   incident.Incident
	ResolvedAt *time.Time
	Seals      []Seal
	Recovery   *recovery.State
	Timeline   []reporting.Entry
	// Report is the stored report of a closed incident (nil before).
	Report *report.Report
	ReadAt time.Time
	// Cursor is where the next snapshot's timeline may start: entries
	// recorded before it are all in this one (or in those before it).
	Cursor string
}

// Source is containment's records.
type Source interface {
	// Markers returns the limit most recent incidents, each with a string
	// that changes whenever anything recorded about it changes, of the
	// form "version/phase/…" (the projector hurries for a new phase).
	Markers(ctx context.Context, limit int) (map[string]string, error)
	// Snapshot reads one incident, and of its timeline the entries
	// recorded since the cursor of an earlier snapshot ("" for all; an
	// entry may come again).
	Snapshot(ctx context.Context, id, since string) (Snapshot, error)
}

// Sink is the read model's buckets.
type Sink interface {
	PutIncident(ctx context.Context, doc readmodel.Incident) error
	PutReport(ctx context.Context, incidentID string, r report.Report) error
}

// Config of the projector. Zero values take the defaults.
type Config struct {
	// Poll is how often the records are looked at without being told of
	// a change (another process's writes, a missed wake). Default 500ms.
	Poll time.Duration
	// MinGap is the least time between two builds of one incident when
	// its phase changed; a build that took d waits 2·d at least. Default
	// 250ms: a phase change shows within a second.
	MinGap time.Duration
	// ProgressGap is the least time between two builds when only the
	// progress changed (a tenant rotated, a notice sent), and at least
	// 4·d: a ten-thousand-tenant incident, whose build takes a few hundred
	// milliseconds, does not take a core from the rotation (seen in the
	// 10,000-tenant drill at 50% of a core with the short gap). Default 1s.
	ProgressGap time.Duration
	// DraftEvery is how often an open incident's draft report is written
	// again (its phase changing writes it at once), and at least ten
	// times what its last build took: the draft reads every entry (1.4 s
	// at 100,000 tenants). Default 10s.
	DraftEvery time.Duration
	// Recent is how many incidents are kept projected. Default 100.
	Recent int
	// Failpoints are the crash tests' kill points (nil: none):
	// containment.readmodel.report, after a report is written and before
	// the document that names it.
	Failpoints *failpoint.Set
}

func (c Config) withDefaults() Config {
	if c.Poll <= 0 {
		c.Poll = 500 * time.Millisecond
	}
	if c.MinGap <= 0 {
		c.MinGap = 250 * time.Millisecond
	}
	if c.ProgressGap <= 0 {
		c.ProgressGap = time.Second
	}
	if c.DraftEvery <= 0 {
		c.DraftEvery = 10 * time.Second
	}
	if c.Recent <= 0 {
		c.Recent = 100
	}
	return c
}

// Projector writes the documents.
type Projector struct {
	cfg    Config
	src    Source
	sink   Sink
	leader func() bool
	log    *slog.Logger
	wake   chan struct{}
	// written is what was last written per incident, by this process
	// while it leads.
	written map[string]written
	// failing is set while writes fail, so an outage logs once.
	failing bool
}

type written struct {
	marker  string
	builtAt time.Time
	took    time.Duration
	// draftTook is how long the last draft report took to build.
	draftTook time.Duration
	phase     string
	report    readmodel.ReportRef
	// draftBehind: the document changed after the draft report was
	// written (it is written again once draftGap has passed).
	draftBehind bool
	// timeline is the incident's timeline as read and folded so far: a
	// rebuild reads and folds only what was recorded since (a
	// 10,000-tenant incident has 30,000 entries).
	timeline *timeline
}

// draftDue says whether the draft report is behind and its gap has
// passed since it was written.
func (w written) draftDue(now time.Time, every time.Duration) bool {
	return w.draftBehind && now.Sub(w.report.At) >= w.draftGap(every)
}

// draftGap is the least time between two drafts: every, and ten times
// what the last draft took to build.
func (w written) draftGap(every time.Duration) time.Duration { return max(every, 10*w.draftTook) }

// New returns a projector; leader says whether this process leads (nil:
// always).
func New(cfg Config, src Source, sink Sink, leader func() bool, log *slog.Logger) *Projector {
	if leader == nil {
		leader = func() bool { return true }
	}
	return &Projector{cfg: cfg.withDefaults(), src: src, sink: sink, leader: leader, log: log, wake: make(chan struct{}, 1), written: map[string]written{}}
}

// Touch tells the projector something changed; it never blocks.
func (p *Projector) Touch() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Run projects until ctx ends.
func (p *Projector) Run(ctx context.Context) error {
	tick := time.NewTicker(p.cfg.Poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.wake:
		case <-tick.C:
		}
		if !p.leader() {
			// Another process writes; what this one wrote is forgotten,
			// so it rebuilds everything when it leads again.
			clear(p.written)
			continue
		}
		p.Pass(ctx, time.Now())
	}
}

// Pass writes the document of every recent incident that changed since
// it was last written; it reports whether every write succeeded.
func (p *Projector) Pass(ctx context.Context, now time.Time) bool {
	markers, err := p.src.Markers(ctx, p.cfg.Recent)
	if err != nil {
		p.trouble("reading the incidents' records", err)
		return false
	}
	// An incident no longer among the recent ones is not written again:
	// forget it, and the timeline kept for it.
	for id := range p.written {
		if _, recent := markers[id]; !recent {
			delete(p.written, id)
		}
	}
	ok := true
	for id, marker := range markers {
		w, seen := p.written[id]
		if seen && w.marker == marker && !w.draftDue(now, p.cfg.DraftEvery) {
			continue
		}
		gap := max(p.cfg.MinGap, 2*w.took)
		if seen && phaseOf(marker) == phaseOf(w.marker) {
			gap = max(p.cfg.ProgressGap, 4*w.took)
		}
		if wait := gap - now.Sub(w.builtAt); seen && wait > 0 {
			// Too soon after the last build: look again once the gap
			// has passed (not at the next poll: a phase change must show
			// within a second).
			time.AfterFunc(wait, p.Touch)
			ok = false
			continue
		}
		if err := p.project(ctx, id, marker, w, seen); err != nil {
			p.trouble("writing incident "+id, err)
			ok = false
		}
	}
	if ok && p.failing {
		p.failing = false
		p.log.Info("read model written again")
	}
	return ok
}

// writeTimeout bounds one write to the buckets. A write made while the
// client is reconnecting can wait for an acknowledgement that never comes
// (seen in TestStatusWatch with NATS SIGKILLed): the projector must give
// up soon and write the newer document, not hold every update for the
// client's default 5 s.
const writeTimeout = 2 * time.Second

func (p *Projector) project(ctx context.Context, id, marker string, w written, seen bool) error {
	start := time.Now()
	tl := w.timeline
	if tl == nil {
		tl = &timeline{}
	}
	snap, err := p.src.Snapshot(ctx, id, tl.cursor)
	if err != nil {
		return err
	}
	tl.add(snap.Timeline, snap.Cursor)
	doc := tl.document(snap)
	ref, draftTook := w.report, w.draftTook
	switch {
	case snap.Report != nil:
		// Closed: the stored report, written again whenever it changes
		// (a review regenerates it; this runs only on a change).
		if err := p.put(ctx, func(ctx context.Context) error { return p.sink.PutReport(ctx, id, *snap.Report) }); err != nil {
			return err
		}
		ref = readmodel.ReportRef{State: readmodel.ReportFinal, At: time.Now()}
		// No draft is built for a closed incident again: the entries
		// kept for it are let go (30,000 of them at 10,000 tenants, for
		// each of the recent incidents).
		tl.entries = nil
	case !doc.Closed() && (!seen || w.phase != doc.Phase || start.Sub(ref.At) >= w.draftGap(p.cfg.DraftEvery)):
		// The draft is the one build that reads every entry: made only
		// when it is written.
		began := time.Now()
		draft := tl.draft(snap)
		draftTook = time.Since(began)
		if err := p.put(ctx, func(ctx context.Context) error { return p.sink.PutReport(ctx, id, draft) }); err != nil {
			return err
		}
		ref = readmodel.ReportRef{State: readmodel.ReportDraft, At: time.Now()}
	}
	p.cfg.Failpoints.Hit("containment.readmodel.report")
	doc.Report = ref
	doc.UpdatedAt = time.Now()
	if err := p.put(ctx, func(ctx context.Context) error { return p.sink.PutIncident(ctx, doc) }); err != nil {
		return err
	}
	took := time.Since(start)
	p.written[id] = written{marker: marker, builtAt: start, took: took, draftTook: draftTook, phase: doc.Phase, report: ref,
		draftBehind: ref.State == readmodel.ReportDraft && ref.At.Before(start), timeline: tl}
	return nil
}

// phaseOf reads the phase out of a Source marker ("version/phase/…").
func phaseOf(marker string) string {
	parts := strings.SplitN(marker, "/", 3)
	if len(parts) < 2 {
		return marker
	}
	return parts[1]
}

func (p *Projector) put(ctx context.Context, write func(context.Context) error) error {
	wctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	return write(wctx)
}

func (p *Projector) trouble(what string, err error) {
	if !p.failing {
		p.log.Warn("read model not written; retrying every pass", slog.String("step", what), slog.Any("error", err))
	}
	p.failing = true
}
