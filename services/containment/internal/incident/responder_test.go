package incident_test

import (
	"context"
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

type fakeStore struct {
	mu      sync.Mutex
	inc     incident.Incident
	sealed  bool
	rounds  int
	unsealt bool
}

func (s *fakeStore) RecordDetection(_ context.Context, d incident.Detection) (incident.Incident, incident.Outcome, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inc.ID != "" {
		return s.inc, incident.Attached, nil
	}
	s.inc = incident.Incident{ID: "inc-1", OpenedBy: d.EventID, Phase: incident.PhaseContaining, Severity: d.Breach.Severity, Summary: d.Breach.Summary, BreachPublishedAt: d.Time}
	return s.inc, incident.Opened, nil
}
func (s *fakeStore) StartSealRound(context.Context, string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rounds++
	return s.rounds, nil
}
func (s *fakeStore) RecordSealed(context.Context, string, int, []events.NodeSeal, time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sealed = true
	return nil
}
func (s *fakeStore) RecordGate(context.Context, string, []incident.NodeStatus) error { return nil }
func (s *fakeStore) RecordUnsealed(context.Context, string, time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unsealt = true
	return nil
}
func (s *fakeStore) OpenIncident(context.Context) (incident.Incident, error) {
	return incident.Incident{}, incident.ErrNoOpenIncident
}

type published struct {
	name events.Name
	id   string
	data any
}

type fakePub struct{ ch chan published }

func (p fakePub) PublishWithID(_ context.Context, n events.Name, id string, data any) error {
	p.ch <- published{n, id, data}
	return nil
}

type fenceFunc func(ctx context.Context, node string) error

func (f fenceFunc) Fence(ctx context.Context, node string) error { return f(ctx, node) }

func next(t *testing.T, ch chan published, name events.Name) published {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case p := <-ch:
			if p.name == name {
				return p
			}
		case <-deadline:
			t.Fatalf("no %s published", name)
		}
	}
}

func TestResponder(t *testing.T) {
	timing := incident.Timing{SealDeadline: 200 * time.Millisecond, SealPoll: 5 * time.Millisecond, FenceRetry: time.Hour, GatePoll: 5 * time.Millisecond}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	breach := incident.Detection{EventID: "e-1", Source: "/siem", Time: time.Now(), Breach: events.BreachDetectedData{Summary: "s", Severity: events.SeverityHigh}}

	t.Run("a node that will not seal within the deadline raises containment.failed naming it, and sealing goes on", func(t *testing.T) {
		v := &fakeVault{nodes: []string{"a", "b"}, sealable: map[string]bool{"a": true, "b": false}, status: map[string]incident.NodeStatus{
			"a": {Address: "a", Reachable: true, Active: true},
			"b": {Address: "b", Reachable: true, Active: true},
		}}
		pub := fakePub{ch: make(chan published, 16)}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		r := incident.NewResponder(ctx, &fakeStore{}, v, fenceFunc(func(context.Context, string) error { return nil }), pub, logger, timing)
		if _, outcome, err := r.HandleBreach(ctx, breach); err != nil || outcome != incident.Opened {
			t.Fatalf("%v %v", outcome, err)
		}
		failed := next(t, pub.ch, events.ContainmentFailed).data.(events.ContainmentFailedData)
		if len(failed.Nodes) != 1 || failed.Nodes[0] != "b" || failed.IncidentID != "inc-1" {
			t.Fatalf("containment.failed %+v", failed)
		}
		// b finally seals (say an operator stepped in): vault.sealed follows.
		v.mu.Lock()
		v.sealable["b"] = true
		v.mu.Unlock()
		sealed := next(t, pub.ch, events.VaultSealed).data.(events.VaultSealedData)
		if len(sealed.Nodes) != 2 {
			t.Fatalf("vault.sealed %+v", sealed)
		}
		cancel()
		r.Wait()
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
		pub := fakePub{ch: make(chan published, 16)}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		r := incident.NewResponder(ctx, &fakeStore{}, v, fence, pub, logger, timing)
		r.HandleBreach(ctx, breach)
		sealed := next(t, pub.ch, events.VaultSealed).data.(events.VaultSealedData)
		methods := map[string]string{}
		for _, n := range sealed.Nodes {
			methods[n.Address] = n.Method
		}
		if methods["active"] != incident.MethodAPI || methods["standby"] != incident.MethodFence || <-fenced != "standby" {
			t.Fatalf("methods %v", methods)
		}
		cancel()
		r.Wait()
	})

	t.Run("the gate emits vault.unsealed when the active node is unsealed", func(t *testing.T) {
		v := &fakeVault{nodes: []string{"a"}, sealable: map[string]bool{"a": true}, status: map[string]incident.NodeStatus{
			"a": {Address: "a", Reachable: true, Active: true},
		}}
		pub := fakePub{ch: make(chan published, 16)}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		st := &fakeStore{}
		r := incident.NewResponder(ctx, st, v, nil, pub, logger, timing)
		r.HandleBreach(ctx, breach)
		next(t, pub.ch, events.VaultSealed)
		v.mu.Lock()
		v.status["a"] = incident.NodeStatus{Address: "a", Reachable: true, Sealed: true, Threshold: 3, Shares: 5, Progress: 2}
		v.mu.Unlock()
		v.mu.Lock()
		v.status["a"] = incident.NodeStatus{Address: "a", Reachable: true, Active: true}
		v.mu.Unlock()
		un := next(t, pub.ch, events.VaultUnsealed)
		if un.id != "inc-1/vault.unsealed" || !st.unsealt {
			t.Fatalf("%+v", un)
		}
		cancel()
		r.Wait()
	})
}
