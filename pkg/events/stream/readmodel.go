package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/readmodel"
	"github.com/lockdown/lockdown/pkg/events/report"
)

// ErrNoIncident is returned by ReadModel.Incident, Watch and Report when
// the read model holds no such incident (or no report of it yet).
var ErrNoIncident = errors.New("no such incident in the read model")

// ReadModel is the read model's buckets (events.BucketIncidents and
// events.BucketReports): containment writes them, the CLI and the console
// read and watch them. One type for both sides, so the encoding lives in
// one place.
type ReadModel struct {
	kv  jetstream.KeyValue
	obs jetstream.ObjectStore
	nc  *nats.Conn
}

// OpenReadModel binds to the buckets (created by the install step).
func OpenReadModel(ctx context.Context, js jetstream.JetStream) (*ReadModel, error) {
	rm := ReadModel{nc: js.Conn()}
	err := retryJS(ctx, js, func(ctx context.Context) (err error) {
		rm.kv, err = js.KeyValue(ctx, events.BucketIncidents)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("key-value bucket %s: %w", events.BucketIncidents, err)
	}
	err = retryJS(ctx, js, func(ctx context.Context) (err error) {
		rm.obs, err = js.ObjectStore(ctx, events.BucketReports)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", events.BucketReports, err)
	}
	return &rm, nil
}

// PutIncident writes an incident's document.
func (rm *ReadModel) PutIncident(ctx context.Context, doc readmodel.Incident) error {
	key, err := events.IncidentKey(doc.ID)
	if err != nil {
		return err
	}
	data, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	_, err = rm.kv.Put(ctx, key, data)
	return err
}

// PutReport writes an incident's report.
func (rm *ReadModel) PutReport(ctx context.Context, incidentID string, r report.Report) error {
	key, err := events.IncidentKey(incidentID)
	if err != nil {
		return err
	}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = rm.obs.PutBytes(ctx, key, data)
	return err
}

// Incident reads an incident's document.
func (rm *ReadModel) Incident(ctx context.Context, id string) (readmodel.Incident, error) {
	key, err := events.IncidentKey(id)
	if err != nil {
		return readmodel.Incident{}, err
	}
	e, err := rm.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return readmodel.Incident{}, fmt.Errorf("%w: %s", ErrNoIncident, id)
	}
	if err != nil {
		return readmodel.Incident{}, err
	}
	return readmodel.Decode(e.Value())
}

// Incidents reads every incident's document, newest first.
func (rm *ReadModel) Incidents(ctx context.Context) ([]readmodel.Incident, error) {
	w, err := rm.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	var out []readmodel.Incident
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e := <-w.Updates():
			if e == nil { // every current value delivered
				slices.SortFunc(out, func(a, b readmodel.Incident) int { return b.OpenedAt.Compare(a.OpenedAt) })
				return out, nil
			}
			doc, err := readmodel.Decode(e.Value())
			if err != nil {
				return nil, err
			}
			out = append(out, doc)
		}
	}
}

// Watch delivers an incident's document now and every time containment
// writes it, until ctx ends (the channel is then closed). It waits for
// an incident not written yet. A document that cannot be decoded ends
// the watch with its error on errs.
func (rm *ReadModel) Watch(ctx context.Context, id string) (<-chan readmodel.Incident, <-chan error, error) {
	key, err := events.IncidentKey(id)
	if err != nil {
		return nil, nil, err
	}
	w, err := rm.kv.Watch(ctx, key, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, nil, err
	}
	out, errs := make(chan readmodel.Incident, 1), make(chan error, 1)
	go func() {
		defer close(out)
		defer func() { w.Stop() }()
		// After a reconnect (a NATS restart) the watch's consumer may be
		// gone with the server, and the client notices only after missed
		// heartbeats, seconds later: start the watch again at once (it
		// delivers the current document first). TestStatusWatch found it.
		reconnects := rm.reconnects()
		check := time.NewTicker(250 * time.Millisecond)
		defer check.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-check.C:
				if n := rm.reconnects(); n != reconnects {
					if nw, err := rm.kv.Watch(ctx, key, jetstream.IgnoreDeletes()); err == nil {
						w.Stop()
						w, reconnects = nw, n
					}
				}
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					continue // the initial values are delivered; updates follow
				}
				doc, err := readmodel.Decode(e.Value())
				if err != nil {
					errs <- err
					return
				}
				// Only the newest matters: a slow reader skips to it.
				select {
				case <-out:
				default:
				}
				out <- doc
			}
		}
	}()
	return out, errs, nil
}

func (rm *ReadModel) reconnects() uint64 {
	if rm.nc == nil {
		return 0
	}
	return rm.nc.Stats().Reconnects
}

// Report reads an incident's report (final, or the latest draft).
func (rm *ReadModel) Report(ctx context.Context, id string) (report.Report, error) {
	key, err := events.IncidentKey(id)
	if err != nil {
		return report.Report{}, err
	}
	data, err := rm.obs.GetBytes(ctx, key)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return report.Report{}, fmt.Errorf("%w: %s has no report yet", ErrNoIncident, id)
	}
	if err != nil {
		return report.Report{}, err
	}
	var r report.Report
	return r, json.Unmarshal(data, &r)
}
