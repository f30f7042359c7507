package app_test

import (
	"context"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/testkit/localstack"
	"github.com/lockdown/lockdown/testkit/testwait"
)

// TestThreeNodeJetStream runs an incident of 300 tenants with two rotator
// processes and the notifier against a three-node JetStream cluster, kills
// the node leading the job stream (SIGKILL) mid-rotation and restarts it
// later: every tenant is rotated once and notified once.
func TestThreeNodeJetStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const tenants = 300
	f := seedOn(t, ctx, localstack.Options{NATS: true, NATSAuth: true, NATSNodes: 3, Postgres: true, Vault: true, Mailpit: true}, tenants)
	js := operator(t, ctx, f.s)

	t.Run("the incident and job streams have three replicas", func(t *testing.T) {
		for _, name := range []string{events.StreamEvents, events.StreamJobs, events.StreamDeadLetters} {
			st, err := js.Stream(ctx, name)
			must(t, err)
			if r := st.CachedInfo().Config.Replicas; r != 3 {
				t.Errorf("%s has %d replicas", name, r)
			}
		}
	})

	// ed25519 DKIM keys keep key generation from dominating the run.
	startRotators(t, f.s, 2, "LOCKDOWN_DKIM_KEY_TYPE=ed25519")
	notifier, err := localstack.Service(events.ServiceNotifier)
	must(t, err)
	_, _, err = f.s.Spawn("notifier", notifier, nil, append(f.s.Env(events.ServiceNotifier), "LOCKDOWN_NOTIFY_RATE=500", "LOCKDOWN_NOTIFY_BURST=50"))
	must(t, err)
	incident := "inc-cluster"
	startIncident(t, ctx, f.s, incident, nil)

	completed := func() int {
		var n int
		_ = f.pool.QueryRow(ctx, `SELECT count(*) FROM rotator.jobs WHERE incident_id = $1 AND state = 'completed'`, incident).Scan(&n)
		return n
	}
	testwait.For(t, 3*time.Minute, "a fifth of the tenants", func() bool { return completed() >= tenants/5 })
	victim, err := f.s.NATS.LeaderOf(ctx, js, events.StreamJobs)
	must(t, err)
	before := completed()
	must(t, f.s.KillNATSNode(victim))
	t.Logf("killed %s (leader of %s) after %d tenants", f.s.NATS.Nodes[victim].Name, events.StreamJobs, before)
	testwait.For(t, 3*time.Minute, "rotation to go on without the node", func() bool { return completed() >= before+tenants/5 })
	must(t, f.s.RestartNATSNode(ctx, victim))

	done := awaitCompleted(t, ctx, js, incident)
	wctx, wcancel := context.WithTimeout(ctx, 4*time.Minute)
	defer wcancel()
	_, notified, err := stream.Await(wctx, js, events.NotificationsCompleted, func(_ event.Event, d events.NotificationsCompletedData) bool { return d.IncidentID == incident })
	must(t, err)

	t.Run("every tenant is rotated exactly once", func(t *testing.T) {
		if done.Completed != tenants || done.Failed != 0 {
			t.Fatalf("rotation.completed %+v", done)
		}
		checkRotatedOnce(t, ctx, f, js, incident, tenants)
	})
	t.Run("every tenant is notified exactly once", func(t *testing.T) {
		if notified.Sent != tenants || notified.Failed != 0 {
			t.Fatalf("notifications.completed %+v", notified)
		}
		msgs, err := f.s.Mailpit.Messages(ctx)
		must(t, err)
		per := map[string]int{}
		for _, m := range msgs {
			per[m.To[0].Address]++
		}
		if len(msgs) != tenants || len(per) != tenants {
			t.Fatalf("Mailpit holds %d messages for %d recipients, want %d each", len(msgs), len(per), tenants)
		}
	})
}
