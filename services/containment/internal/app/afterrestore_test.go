package app_test

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/services/containment/internal/incident"
	"github.com/lockdown/lockdown/services/containment/internal/recovery"
	"github.com/lockdown/lockdown/services/containment/internal/store"
)

// TestBreachAfterRestore: a breach recorded after access was restored and
// before the incident resolved (the leader died right after the restore's
// commit, as the containment.engine.restored failpoint leaves it). Before,
// the new round's revocation disabled access again and the incident then
// resolved with access disabled while the report said restored. Now the
// round has its own ceremony and access is restored again after it.
func TestBreachAfterRestore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s := fullStack(t, ctx)
	root, err := s.Vault.Client()
	must(t, err)
	pool, err := pgxpool.New(ctx, s.Postgres.URL)
	must(t, err)
	defer pool.Close()

	c := startContainment(t, s, nil, nil, nil, nil)
	siem, _ := connectAs(t, s, events.UserSIEM)
	ev := newBreach(t, "first breach")
	publishAsSIEM(t, siem, ev, nil)
	_, opened := waitEvent(t, s, events.IncidentOpened, 10*time.Second, func(d events.IncidentOpenedData) bool { return d.BreachEventID == ev.ID() })
	id := opened.IncidentID
	waitEvent(t, s, events.VaultSealed, 10*time.Second, func(d events.VaultSealedData) bool { return d.IncidentID == id })
	must(t, s.Vault.Unseal(ctx))
	waitEvent(t, s, events.AccessRevoked, 60*time.Second, func(d events.AccessRevokedData) bool { return d.IncidentID == id })
	cer := waitCeremony(t, ctx, pool, id, func(c recovery.Ceremony) bool { return c.Nonce != "" })
	must(t, s.Vault.PlayRekey(ctx, cer.Nonce, 0))
	waitEvent(t, s, events.VaultReconciled, 30*time.Second, func(d events.VaultReconciledData) bool { return d.IncidentID == id && d.Stage == "after_rekey" })
	// The leader stops before the claims arrive; what it would have
	// recorded by the restore's commit is written as it would have been.
	c.stop()
	rotateForTest(t, ctx, s, root, id, "tenant-001")
	publishAs(t, s, events.ServiceRotator, events.RotationCompleted, events.RotationCompletedData{IncidentID: id, Completed: 1})
	publishAs(t, s, events.ServiceNotifier, events.NotificationsCompleted, events.NotificationsCompletedData{IncidentID: id, Sent: 1})
	st := loadRecovery(t, ctx, pool, id)
	st.RestoredAt, st.RestoredRound, st.RotationDone, st.NotifiedDone = time.Now().UTC(), 1, true, true
	raw, err := json.Marshal(st)
	must(t, err)
	_, err = pool.Exec(ctx, `UPDATE containment.recovery SET state = $2 WHERE incident_id = $1`, id, raw)
	must(t, err)

	// The second breach, as containment's responder handles it: seal, then
	// record (a new round of the open incident).
	requested := time.Now().UTC()
	must(t, root.Sys().SealWithContext(ctx))
	seals := []events.NodeSeal{{Address: s.Vault.Addr, Method: incident.MethodAPI, RequestedAt: requested, ConfirmedAt: time.Now().UTC()}}
	db, err := store.Open(ctx, s.Postgres.URL)
	must(t, err)
	defer db.Close()
	nc, _ := connectAs(t, s, events.ServiceContainment)
	db.SetPreparer(stream.NewPublisher(jsOf(t, nc), events.SourceOf(events.ServiceContainment), nil))
	second := incident.Detection{EventID: "second-breach-" + id[:8], Source: "/siem/test", Time: requested,
		Breach: events.BreachDetectedData{Summary: "second breach, after the restore", Severity: events.SeverityCritical, DetectedAt: requested}}
	inc, outcome, err := db.RecordBreach(ctx, second, seals, func(inc incident.Incident, _ incident.Outcome, newRound bool) []events.Outgoing {
		if !newRound {
			return nil
		}
		return []events.Outgoing{incident.SealedEvent(inc.ID, inc.SealRound, seals, second.Time, "test")}
	})
	must(t, err)
	if inc.ID != id || outcome != incident.Attached || inc.SealRound != 2 {
		t.Fatalf("the second breach: incident %s (%s), round %d", inc.ID, outcome, inc.SealRound)
	}

	c = startContainment(t, s, nil, nil, nil, nil)
	t.Cleanup(func() { c.stop() })
	must(t, s.Vault.Unseal(ctx))
	waitEvent(t, s, events.AccessRevoked, 60*time.Second, func(d events.AccessRevokedData) bool { return d.IncidentID == id && d.Round == 2 })
	cer2 := waitCeremony(t, ctx, pool, id, func(c recovery.Ceremony) bool { return c.Round == 2 && c.Nonce != "" })
	must(t, s.Vault.PlayRekey(ctx, cer2.Nonce, 0))
	_, restored := waitEvent(t, s, events.AccessRestored, 60*time.Second, func(d events.AccessRestoredData) bool { return d.IncidentID == id && d.Round == 2 })
	if len(restored.AuthMethods) == 0 {
		t.Fatalf("access.restored %+v", restored)
	}
	waitEvent(t, s, events.IncidentResolved, 30*time.Second, func(d events.IncidentResolvedData) bool { return d.IncidentID == id })
	mounts, err := root.Sys().ListAuthWithContext(ctx)
	must(t, err)
	for _, m := range restored.AuthMethods {
		if _, ok := mounts[m+"/"]; !ok {
			t.Errorf("%s is not enabled after the incident resolved (mounts %v)", m, slices.Sorted(maps.Keys(mounts)))
		}
	}
}
