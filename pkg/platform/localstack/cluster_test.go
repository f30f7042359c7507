package localstack_test

import (
	"context"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/stream"
	"github.com/lockdown/lockdown/pkg/platform/localstack"
	"github.com/lockdown/lockdown/pkg/platform/natsconn"
)

// TestNATSCluster starts a three-node JetStream cluster (the stack runs
// the install step) and runs the install step three more times at once,
// as racing install jobs would: it stays idempotent and every stream gets
// three replicas.
func TestNATSCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := localstack.Start(ctx, localstack.Options{NATS: true, NATSAuth: true, NATSNodes: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	conn, err := natsconn.Connect(ctx, natsconn.Options{URL: s.NATS.URL, User: events.ServiceRotator, Password: s.NATS.Password(events.ServiceRotator)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	start := time.Now()
	tctx, tcancel := context.WithTimeout(ctx, 30*time.Second)
	defer tcancel()
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			c, err := natsconn.Connect(ctx, natsconn.Options{URL: s.NATS.URL, User: events.UserAdmin, Password: s.NATS.Password(events.UserAdmin)})
			if err != nil {
				errs <- err
				return
			}
			defer c.Close(context.Background())
			errs <- stream.EnsureTopology(tctx, c.JS)
		}()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatalf("after %v: %v", time.Since(start), err)
		}
	}
	t.Logf("topology in %v", time.Since(start))
	for _, name := range []string{events.StreamEvents, events.StreamJobs, events.StreamDeadLetters} {
		st, err := conn.JS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if r := st.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("%s has %d replicas, want 3", name, r)
		}
	}
}
