package stream

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/credentials"
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
//
// Readers create no consumer (a key-value watch and an object get would
// each create a push consumer, whose delivery subject is the creator's to
// choose — a forged document delivered into the bucket): they read stored
// messages by subject and poll for changes.
type ReadModel struct {
	js  jetstream.JetStream
	kv  jetstream.KeyValue
	obs jetstream.ObjectStore
}

// watchEvery is how often Watch reads an incident's document again.
const watchEvery = 250 * time.Millisecond

// OpenReadModel binds to the buckets (created by the install step).
func OpenReadModel(ctx context.Context, js jetstream.JetStream) (*ReadModel, error) {
	rm := ReadModel{js: js}
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

// Incidents reads every incident's document, newest first: the bucket's
// stored messages, one per incident (a bucket of history 1), read by
// subject without a consumer.
func (rm *ReadModel) Incidents(ctx context.Context) ([]readmodel.Incident, error) {
	b := bucketSpec(events.BucketIncidents)
	var out []readmodel.Incident
	var decodeErr error
	err := Scan(ctx, rm.js, b.BucketStream(), b.BucketSubjects(), false, func(m *jetstream.RawStreamMsg) bool {
		if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
			return true
		}
		doc, err := readmodel.Decode(m.Data)
		if err != nil {
			decodeErr = err
			return false
		}
		out = append(out, doc)
		return true
	})
	if err = errors.Join(err, decodeErr); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b readmodel.Incident) int { return b.OpenedAt.Compare(a.OpenedAt) })
	return out, nil
}

// bucketSpec is the declared bucket of that name.
func bucketSpec(name string) events.BucketSpec {
	for _, b := range events.Buckets() {
		if b.Name == name {
			return b
		}
	}
	panic("undeclared bucket " + name)
}

// Watch delivers an incident's document now and every time containment
// writes it, until ctx ends (the channel is then closed). It waits for
// an incident not written yet. A document that cannot be decoded ends
// the watch with its error on errs. It reads the document every
// watchEvery (no consumer): a NATS restart costs at most one look.
func (rm *ReadModel) Watch(ctx context.Context, id string) (<-chan readmodel.Incident, <-chan error, error) {
	key, err := events.IncidentKey(id)
	if err != nil {
		return nil, nil, err
	}
	out, errs := make(chan readmodel.Incident, 1), make(chan error, 1)
	go func() {
		defer close(out)
		var seen uint64
		tick := time.NewTicker(watchEvery)
		defer tick.Stop()
		for {
			e, err := rm.kv.Get(ctx, key)
			if err == nil && e.Revision() != seen {
				seen = e.Revision()
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
			// Not written yet, or NATS away for a moment: look again.
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return out, errs, nil
}

// ErrReportChanged is returned by Report when the report was rewritten
// (or its chunks purged) three times while it was being read.
var ErrReportChanged = errors.New("the report changed while it was read")

// Report reads an incident's report (final, or the latest draft): its
// object's description, then its chunks by subject (no consumer), checked
// against the description's size and SHA-256.
func (rm *ReadModel) Report(ctx context.Context, id string) (report.Report, error) {
	key, err := events.IncidentKey(id)
	if err != nil {
		return report.Report{}, err
	}
	for range 3 {
		info, err := rm.obs.GetInfo(ctx, key)
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return report.Report{}, fmt.Errorf("%w: %s has no report yet", ErrNoIncident, id)
		}
		if err != nil {
			return report.Report{}, err
		}
		data, err := rm.chunks(ctx, info)
		if errors.Is(err, ErrReportChanged) {
			continue // rewritten meanwhile: read the new one
		}
		if err != nil {
			return report.Report{}, err
		}
		var r report.Report
		return r, json.Unmarshal(data, &r)
	}
	return report.Report{}, fmt.Errorf("%s: %w", id, ErrReportChanged)
}

// chunks reads an object's chunks and checks them against its description.
func (rm *ReadModel) chunks(ctx context.Context, info *jetstream.ObjectInfo) ([]byte, error) {
	b := bucketSpec(events.BucketReports)
	data := make([]byte, 0, info.Size)
	sum := sha256.New()
	got := uint32(0)
	err := Scan(ctx, rm.js, b.BucketStream(), "$O."+b.Name+".C."+info.NUID, false, func(m *jetstream.RawStreamMsg) bool {
		data = append(data, m.Data...)
		sum.Write(m.Data)
		got++
		return got < info.Chunks
	})
	if err != nil {
		return nil, err
	}
	if got != info.Chunks || uint64(len(data)) != info.Size || jetstream.GetObjectDigestValue(sum) != info.Digest {
		return nil, ErrReportChanged
	}
	return data, nil
}

// PutPlan keeps a `lockdown plan` answer as the last one (the operator's
// identity writes the bucket).
func PutPlan(ctx context.Context, js jetstream.JetStream, p credentials.Plan) error {
	kv, err := js.KeyValue(ctx, events.BucketPlans)
	if err != nil {
		return fmt.Errorf("key-value bucket %s: %w", events.BucketPlans, err)
	}
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, events.PlanKey, data)
	return err
}

// LastPlan returns the last kept plan (nil when there is none).
func LastPlan(ctx context.Context, js jetstream.JetStream) (*credentials.Plan, error) {
	kv, err := js.KeyValue(ctx, events.BucketPlans)
	if err != nil {
		return nil, fmt.Errorf("key-value bucket %s: %w", events.BucketPlans, err)
	}
	e, err := kv.Get(ctx, events.PlanKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var p credentials.Plan
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		return nil, fmt.Errorf("the last plan does not decode: %w", err)
	}
	return &p, nil
}
