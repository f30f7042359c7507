package outbox_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/outbox"
	"github.com/lockdown/lockdown/testkit/localstack"
	"github.com/lockdown/lockdown/testkit/testwait"
)

func TestOutbox(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool, js, str := start(t, ctx, "svc", "OUTBOX_TEST", "test.>")

	msg := func(subject, id string) *nats.Msg {
		m := nats.NewMsg(subject)
		m.Header.Set(jetstream.MsgIDHeader, id)
		m.Data = []byte(id)
		return m
	}
	add := func(commit bool, msgs ...*nats.Msg) {
		t.Helper()
		tx, err := pool.Begin(ctx)
		must(t, err)
		defer func() { _ = tx.Rollback(ctx) }()
		must(t, outbox.Add(ctx, tx, "svc", msgs...))
		if commit {
			must(t, tx.Commit(ctx))
		}
	}
	stored := func() []string {
		t.Helper()
		var out []string
		info, err := str.Info(ctx)
		must(t, err)
		for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
			m, err := str.GetMsg(ctx, seq)
			if err == nil {
				out = append(out, string(m.Data))
			}
		}
		return out
	}
	var duplicates atomic.Int64
	relay := &outbox.Relay{Pool: pool, Schema: "svc", JS: js, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Poll: time.Hour,
		OnDuplicate: func(context.Context, *nats.Msg, *jetstream.PubAck) error { duplicates.Add(1); return nil }}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = relay.Run(runCtx); close(done) }() // ends with runCtx

	t.Run("committed messages are published in commit order, a rolled-back one never", func(t *testing.T) {
		add(true, msg("test.a", "1"), msg("test.b", "2"))
		add(false, msg("test.a", "rolled-back"))
		add(true, msg("test.a", "3"))
		// The poll is an hour: only the commit's notification wakes the relay.
		testwait.For(t, 10*time.Second, "three messages", func() bool { return len(stored()) == 3 })
		if got := fmt.Sprint(stored()); got != "[1 2 3]" {
			t.Fatalf("stream holds %s, want [1 2 3]", got)
		}
		if n, _ := outbox.Pending(ctx, pool, "svc"); n != 0 {
			t.Fatalf("%d messages left in the outbox", n)
		}
	})
	t.Run("a message published again after a crash before its delete is dropped by its id and reported", func(t *testing.T) {
		add(true, msg("test.a", "2"))
		testwait.For(t, 10*time.Second, "the republish", func() bool { return duplicates.Load() == 1 })
		if got := fmt.Sprint(stored()); got != "[1 2 3]" {
			t.Fatalf("stream holds %s after a republish", got)
		}
	})
	t.Run("a lock on the old advisory key, which any database role may take, does not stop the relay", func(t *testing.T) {
		conn, err := pool.Acquire(ctx)
		must(t, err)
		defer conn.Release()
		must(t, conn.QueryRow(ctx, `SELECT pg_advisory_lock(hashtext('lockdown-outbox-svc'))`).Scan(new(any)))
		defer func() { _, _ = conn.Exec(ctx, `SELECT pg_advisory_unlock_all()`) }() // cleanup: the connection is released next
		add(true, msg("test.a", "4"))
		testwait.For(t, 10*time.Second, "the message", func() bool { return len(stored()) == 4 })
	})
	t.Run("a message without an id is refused", func(t *testing.T) {
		tx, err := pool.Begin(ctx)
		must(t, err)
		defer func() { _ = tx.Rollback(ctx) }()
		if err := outbox.Add(ctx, tx, "svc", nats.NewMsg("test.a")); err == nil {
			t.Fatal("accepted a message without Nats-Msg-Id")
		}
	})
	t.Run("a large batch keeps its order", func(t *testing.T) {
		var msgs []*nats.Msg
		for i := range 1200 {
			msgs = append(msgs, msg("test.bulk", fmt.Sprintf("bulk-%04d", i)))
		}
		add(true, msgs...)
		testwait.For(t, 30*time.Second, "the batch", func() bool { return len(stored()) == 1204 })
		got := stored()[4:]
		for i, v := range got {
			if v != fmt.Sprintf("bulk-%04d", i) {
				t.Fatalf("message %d is %s", i, v)
			}
		}
	})
	t.Run("a second relay on the same schema never publishes out of order", func(t *testing.T) {
		other := &outbox.Relay{Pool: pool, Schema: "svc", JS: js, Logger: relay.Logger, Poll: 10 * time.Millisecond, Batch: 3}
		octx, ostop := context.WithCancel(ctx)
		odone := make(chan struct{})
		go func() { _ = other.Run(octx); close(odone) }() // ends with octx
		for i := range 20 {
			add(true, msg("test.two", fmt.Sprintf("two-%02d-a", i)), msg("test.two", fmt.Sprintf("two-%02d-b", i)))
		}
		testwait.For(t, 30*time.Second, "both relays' work", func() bool { return len(stored()) == 1244 })
		ostop()
		<-odone
		got := stored()[1204:]
		for i := range 20 {
			if got[2*i] != fmt.Sprintf("two-%02d-a", i) || got[2*i+1] != fmt.Sprintf("two-%02d-b", i) {
				t.Fatalf("out of order at %d: %v", i, got)
			}
		}
	})
	stop()
	<-done
	var n int
	must(t, pool.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{"svc", "outbox"}.Sanitize()).Scan(&n))
	if n != 0 {
		t.Fatalf("%d rows left", n)
	}
}

// start runs NATS and PostgreSQL, creates schema's outbox and a stream
// of subjects with an hour's duplicate window, and returns them.
func start(t *testing.T, ctx context.Context, schema, stream, subjects string) (*pgxpool.Pool, jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	s := localstack.StartTest(t, ctx, localstack.Options{NATS: true, Postgres: true})
	pool, err := pgxpool.New(ctx, s.Postgres.URL)
	must(t, err)
	t.Cleanup(pool.Close)
	must(t, outbox.Ensure(ctx, pool, schema))
	nc, err := nats.Connect(s.NATS.URL)
	must(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	must(t, err)
	str, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{subjects}, Duplicates: time.Hour})
	must(t, err)
	return pool, js, str
}

// hookedJS runs before each publish: the test commits another
// transaction while the relay is half-way through its batch.
type hookedJS struct {
	outbox.Publisher
	before func(*nats.Msg)
}

func (h hookedJS) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	h.before(m)
	return h.Publisher.PublishMsg(ctx, m, opts...)
}

// TestRelayDeletesOnlyWhatItPublished: a transaction draws a lower seq
// than one committed after it, and commits while the relay publishes the
// later one. Its row was not in the relay's batch: the relay must leave
// it for the next pass, not delete it unpublished with a range.
func TestRelayDeletesOnlyWhatItPublished(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, js, str := start(t, ctx, "race", "OUTBOX_RACE", "race.>")
	msg := func(id string) *nats.Msg {
		m := nats.NewMsg("race." + id)
		m.Header.Set(jetstream.MsgIDHeader, id)
		m.Data = []byte(id)
		return m
	}
	early, err := pool.Begin(ctx) // draws the lower seq, commits late
	must(t, err)
	defer func() { _ = early.Rollback(ctx) }()
	must(t, outbox.Add(ctx, early, "race", msg("early")))
	late, err := pool.Begin(ctx)
	must(t, err)
	must(t, outbox.Add(ctx, late, "race", msg("late")))
	must(t, late.Commit(ctx))

	relay := &outbox.Relay{Pool: pool, Schema: "race", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		JS: hookedJS{Publisher: js, before: func(m *nats.Msg) {
			if m.Subject == "race.late" {
				must(t, early.Commit(ctx))
			}
		}}}
	n, err := relay.Flush(ctx)
	must(t, err)
	if n != 1 {
		t.Fatalf("first pass published %d, want 1 (the row committed before it began)", n)
	}
	if pending, _ := outbox.Pending(ctx, pool, "race"); pending != 1 {
		t.Fatalf("%d rows pending after the first pass, want 1: the row committed during the publish was deleted unpublished", pending)
	}
	if n, err := relay.Flush(ctx); err != nil || n != 1 {
		t.Fatalf("second pass published %d (%v), want the early row", n, err)
	}
	info, err := str.Info(ctx)
	must(t, err)
	if info.State.Msgs != 2 {
		t.Fatalf("the stream holds %d messages, want both", info.State.Msgs)
	}
}

// TestRelayParksWhatJetStreamRefuses: a message over the server's
// max_payload and one over the stream's message limit can never be
// published. Each is parked with a dead letter and an alarm, and the
// messages after them go on in order: one message cannot stop the relay.
func TestRelayParksWhatJetStreamRefuses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, js, _ := start(t, ctx, "parks", "OUTBOX_PARK_SPARE", "spare.>")
	str, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OUTBOX_PARK", Subjects: []string{"park.>"}, Duplicates: time.Hour, MaxMsgSize: 4096})
	must(t, err)
	letters, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: events.StreamDeadLetters, Subjects: []string{events.DeadLetter.Subject() + ".>"}})
	must(t, err)
	msg := func(id string, size int) *nats.Msg {
		m := nats.NewMsg("park." + id)
		m.Header.Set(jetstream.MsgIDHeader, id)
		m.Data = []byte(id + strings.Repeat(" ", size))
		return m
	}
	tx, err := pool.Begin(ctx)
	must(t, err)
	must(t, outbox.Add(ctx, tx, "parks", msg("first", 10), msg("over-max-payload", 2<<20), msg("over-stream-limit", 8192), msg("last", 10)))
	must(t, tx.Commit(ctx))
	var alarms []outbox.Parked
	relay := &outbox.Relay{Pool: pool, Schema: "parks", JS: js, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Source: "/test", DeadLetters: "outbox-test",
		OnParked: func(_ context.Context, _ pgx.Tx, p outbox.Parked) error { alarms = append(alarms, p); return nil }}
	for range 3 { // the second pass publishes the dead letters the first wrote
		if _, err := relay.Flush(ctx); err != nil {
			t.Fatalf("the relay stopped on a refused message: %v", err)
		}
	}
	var got []string
	for seq := uint64(1); seq <= 2; seq++ {
		m, err := str.GetMsg(ctx, seq)
		must(t, err)
		got = append(got, strings.TrimSpace(string(m.Data)))
	}
	if fmt.Sprint(got) != "[first last]" {
		t.Fatalf("stream holds %v", got)
	}
	if len(alarms) != 2 || alarms[0].Subject != "park.over-max-payload" || alarms[1].Subject != "park.over-stream-limit" {
		t.Fatalf("alarms %+v", alarms)
	}
	if n, _ := outbox.ParkedRows(ctx, pool, "parks"); n != 2 {
		t.Fatalf("%d rows parked", n)
	}
	if n, _ := outbox.Pending(ctx, pool, "parks"); n != 0 {
		t.Fatalf("%d rows pending", n)
	}
	info, err := letters.Info(ctx)
	must(t, err)
	if info.State.Msgs != 2 {
		t.Fatalf("%d dead letters, want 2", info.State.Msgs)
	}
	raw, err := letters.GetMsg(ctx, 1)
	must(t, err)
	ev, _, err := events.Decode(raw.Header, raw.Data)
	must(t, err)
	d, err := events.DataAs[events.DeadLetterData](ev)
	must(t, err)
	if d.Consumer != "outbox-test" || !d.Truncated() || d.OriginalSize < 2<<20 || !strings.Contains(d.Reason, "maximum payload") {
		t.Fatalf("dead letter: consumer %q, %d of %d bytes, reason %q", d.Consumer, len(d.OriginalData), d.OriginalSize, d.Reason)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// flakyJS stores every message but, every nth publish, reports a failure
// anyway: the relay's view of a crash (or a lost connection) between
// JetStream storing a message and the relay deleting its row.
type flakyJS struct {
	outbox.Publisher
	n     int64
	calls *atomic.Int64
}

func (f flakyJS) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := f.Publisher.PublishMsg(ctx, m, opts...)
	if err == nil && f.calls.Add(1)%f.n == 0 {
		return nil, fmt.Errorf("connection lost after the publish (simulated)")
	}
	return ack, err
}

// TestRelayConcurrentWriters: four writers commit interleaved transactions
// (some hold a lower seq and commit late) while two relays publish the
// same outbox, one of them losing every seventh acknowledgement after
// JetStream stored the message. Every committed message reaches the stream
// exactly once, and each writer's messages keep their commit order.
func TestRelayConcurrentWriters(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool, js, str := start(t, ctx, "conc", "OUTBOX_CONC", "conc.>")
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	var calls atomic.Int64
	relays := []*outbox.Relay{
		{Pool: pool, Schema: "conc", JS: js, Logger: logger, Poll: 10 * time.Millisecond, Batch: 7,
			OnDuplicate: func(context.Context, *nats.Msg, *jetstream.PubAck) error { return nil }},
		{Pool: pool, Schema: "conc", JS: flakyJS{Publisher: js, n: 7, calls: &calls}, Logger: logger, Poll: 10 * time.Millisecond, Batch: 5,
			OnDuplicate: func(context.Context, *nats.Msg, *jetstream.PubAck) error { return nil }},
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{}, len(relays))
	for _, r := range relays {
		go func() { _ = r.Run(rctx); done <- struct{}{} }() // ends with rctx
	}
	const writers, txs = 4, 40
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for n := range txs {
				tx, err := pool.Begin(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				var msgs []*nats.Msg
				for k := range 1 + n%3 {
					id := fmt.Sprintf("w%d-%03d-%d", w, n, k)
					m := nats.NewMsg(fmt.Sprintf("conc.w%d", w))
					m.Header.Set(jetstream.MsgIDHeader, id)
					m.Data = []byte(id)
					msgs = append(msgs, m)
				}
				if err := outbox.Add(ctx, tx, "conc", msgs...); err != nil {
					t.Error(err)
					return
				}
				if n%5 == 0 {
					time.Sleep(15 * time.Millisecond) // a lower seq that commits after higher ones
				}
				if err := tx.Commit(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	want := 0
	for n := range txs {
		want += writers * (1 + n%3)
	}
	testwait.For(t, time.Minute, "the outbox to drain", func() bool { n, _ := outbox.Pending(ctx, pool, "conc"); return n == 0 })
	stop()
	for range relays {
		<-done
	}
	info, err := str.Info(ctx)
	must(t, err)
	if int(info.State.Msgs) != want {
		t.Fatalf("the stream holds %d messages, %d were committed", info.State.Msgs, want)
	}
	last := map[string]string{}
	seen := map[string]bool{}
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := str.GetMsg(ctx, seq)
		must(t, err)
		id := string(m.Data)
		if seen[id] {
			t.Fatalf("%s stored twice", id)
		}
		seen[id] = true
		if prev := last[m.Subject]; prev > id {
			t.Fatalf("%s published after %s: the writer's order is lost", id, prev)
		}
		last[m.Subject] = id
	}
	if calls.Load() < 7 {
		t.Fatalf("the flaky relay published %d times: the lost acknowledgements were not exercised", calls.Load())
	}
}
