package incident_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/services/containment/internal/incident"
)

// These tests cover the responder's pure logic with fakes; the integration
// tests in internal/app run it against real Vault, NATS and PostgreSQL.

type fakeVault struct {
	mu     sync.Mutex
	nodes  []string
	status map[string]incident.NodeStatus
	// sealable says whether Seal works on the node.
	sealable map[string]bool
}

func (v *fakeVault) Nodes() []string { return v.nodes }

func (v *fakeVault) Status(_ context.Context, n string) incident.NodeStatus {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.status[n]
}

func (v *fakeVault) Seal(_ context.Context, n string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.status[n].Active {
		return incident.ErrStandby
	}
	if v.sealable[n] {
		v.status[n] = incident.NodeStatus{Address: n, Reachable: true, Sealed: true}
	}
	return nil
}

// fakeStore records breaches in memory; fail makes it refuse, as
// PostgreSQL down does.
type fakeStore struct {
	mu       sync.Mutex
	fail     int // refuse this many more calls
	attempts int
	inc      incident.Incident
	emitted  []events.Outgoing
}

func (s *fakeStore) RecordBreach(_ context.Context, d incident.Detection, seals []events.NodeSeal,
	emit func(incident.Incident, incident.Outcome, bool) []events.Outgoing) (incident.Incident, incident.Outcome, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts++
	if s.fail > 0 {
		s.fail--
		return incident.Incident{}, "", errors.New("connection refused")
	}
	outcome := incident.Attached
	if s.inc.ID == "" {
		s.inc = incident.Incident{ID: "inc-1", OpenedBy: d.EventID, Phase: incident.PhaseContaining, Severity: d.Breach.Severity, Summary: d.Breach.Summary}
		outcome = incident.Opened
	}
	s.inc.SealRound++
	s.emitted = append(s.emitted, emit(s.inc, outcome, true)...)
	return s.inc, outcome, nil
}

// recordingStore keeps the detection it was given.
type recordingStore struct {
	*fakeStore
	d *incident.Detection
}

func (r recordingStore) RecordBreach(ctx context.Context, d incident.Detection, seals []events.NodeSeal,
	emit func(incident.Incident, incident.Outcome, bool) []events.Outgoing) (incident.Incident, incident.Outcome, error) {
	*r.d = d
	return r.fakeStore.RecordBreach(ctx, d, seals, emit)
}

func (s *fakeStore) OpenIncident(context.Context) (incident.Incident, error) {
	return incident.Incident{}, incident.ErrNoOpenIncident
}

func (s *fakeStore) event(name events.Name) (events.Outgoing, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.emitted {
		if o.Name == name {
			return o, true
		}
	}
	return events.Outgoing{}, false
}

type fenceFunc func(ctx context.Context, node string) error

func (f fenceFunc) Fence(ctx context.Context, node string) error { return f(ctx, node) }

func TestResponder(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	breach := incident.Detection{EventID: "e-1", Source: "/siem", Time: time.Now(), Breach: events.BreachDetectedData{Summary: "s", Severity: events.SeverityHigh}}
	timing := incident.Timing{SealDeadline: 200 * time.Millisecond, RecordRetryMax: 10 * time.Millisecond}
	noFence := fenceFunc(func(context.Context, string) error { return nil })
	auto := incident.Policy{Severities: []events.Severity{events.SeverityCritical, events.SeverityHigh}}

	t.Run("Vault is sealed before the breach is recorded, and recording is retried until the store answers", func(t *testing.T) {
		v := &fakeVault{nodes: []string{"a"}, sealable: map[string]bool{"a": true}, status: map[string]incident.NodeStatus{
			"a": {Address: "a", Reachable: true, Active: true}}}
		st := &fakeStore{fail: 5}
		sealedFirst := false
		r := incident.NewResponder(st, incident.NewSealer(v, noFence, logger, time.Millisecond, time.Hour), auto, logger, timing, "p1", nil, func() {
			sealedFirst = v.Status(context.Background(), "a").Sealed
		})
		inc, outcome, err := r.HandleBreach(context.Background(), breach)
		if err != nil || outcome != incident.Opened || inc.ID != "inc-1" {
			t.Fatalf("%v %v %v", inc, outcome, err)
		}
		if st.attempts != 6 || !sealedFirst {
			t.Fatalf("%d attempts to record, sealed before the record: %v", st.attempts, sealedFirst)
		}
		o, ok := st.event(events.VaultSealed)
		if !ok || o.ID != "inc-1/vault.sealed/1" || o.Data.(events.VaultSealedData).Process != "p1" {
			t.Fatalf("vault.sealed %+v", o)
		}
		if _, ok := st.event(events.IncidentOpened); !ok {
			t.Fatal("no incident.opened with the record")
		}
	})

	t.Run("a node that will not seal within the deadline is recorded as containment.failed naming it", func(t *testing.T) {
		v := &fakeVault{nodes: []string{"a", "b"}, sealable: map[string]bool{"a": true, "b": false}, status: map[string]incident.NodeStatus{
			"a": {Address: "a", Reachable: true, Active: true},
			"b": {Address: "b", Reachable: true, Active: true},
		}}
		st := &fakeStore{}
		r := incident.NewResponder(st, incident.NewSealer(v, noFence, logger, time.Millisecond, time.Hour), auto, logger, timing, "p1", nil, nil)
		if _, _, err := r.HandleBreach(context.Background(), breach); err != nil {
			t.Fatal(err)
		}
		o, ok := st.event(events.ContainmentFailed)
		if failed := o.Data.(events.ContainmentFailedData); !ok || len(failed.Nodes) != 1 || failed.Nodes[0] != "b" {
			t.Fatalf("containment.failed %+v", o)
		}
		if _, ok := st.event(events.VaultSealed); ok {
			t.Fatal("vault.sealed with a node unsealed")
		}
	})

	t.Run("a breach outside the auto-seal policy seals nothing and is recorded to wait for confirmation", func(t *testing.T) {
		v := &fakeVault{nodes: []string{"a"}, sealable: map[string]bool{"a": true}, status: map[string]incident.NodeStatus{
			"a": {Address: "a", Reachable: true, Active: true}}}
		var recorded incident.Detection
		st := &fakeStore{}
		r := incident.NewResponder(recordingStore{st, &recorded}, incident.NewSealer(v, noFence, logger, time.Millisecond, time.Hour), auto, logger, timing, "p1", nil, nil)
		low := breach
		low.Breach.Severity = events.SeverityLow
		if _, _, err := r.HandleBreach(context.Background(), low); err != nil {
			t.Fatal(err)
		}
		if v.Status(context.Background(), "a").Sealed || !recorded.Unsealed {
			t.Fatalf("sealed %v, recorded as waiting %v", v.Status(context.Background(), "a").Sealed, recorded.Unsealed)
		}
		foreign := breach
		foreign.Breach.VaultCluster = "eu-2"
		policy := auto
		policy.Clusters = []string{"us-1"}
		if policy.Auto(foreign.Breach) {
			t.Fatal("a breach of another Vault cluster may seal by itself")
		}
	})

	t.Run("an unsealed standby is fenced, not sealed through the API", func(t *testing.T) {
		v := &fakeVault{nodes: []string{"active", "standby"}, sealable: map[string]bool{"active": true}, status: map[string]incident.NodeStatus{
			"active":  {Address: "active", Reachable: true, Active: true},
			"standby": {Address: "standby", Reachable: true},
		}}
		fenced := make(chan string, 4)
		fence := fenceFunc(func(_ context.Context, node string) error {
			fenced <- node
			v.mu.Lock()
			v.status[node] = incident.NodeStatus{Address: node, Reachable: true, Sealed: true}
			v.mu.Unlock()
			return nil
		})
		st := &fakeStore{}
		r := incident.NewResponder(st, incident.NewSealer(v, fence, logger, time.Millisecond, time.Hour), auto, logger, timing, "p1", nil, nil)
		if _, _, err := r.HandleBreach(context.Background(), breach); err != nil {
			t.Fatal(err)
		}
		o, _ := st.event(events.VaultSealed)
		methods := map[string]string{}
		for _, n := range o.Data.(events.VaultSealedData).Nodes {
			methods[n.Address] = n.Method
		}
		if methods["active"] != incident.MethodAPI || methods["standby"] != incident.MethodFence || <-fenced != "standby" {
			t.Fatalf("methods %v", methods)
		}
	})
}
