// Package outbox is the transactional outbox the services share. An event
// a service emits because its state changed is written to the service's
// own outbox table in the same PostgreSQL transaction as that state, so
// the two change together or not at all; a relay then publishes the
// stored messages to JetStream in the order they were written, each with
// its Nats-Msg-Id, and deletes them once JetStream has stored them. A
// crash between the publish and the delete publishes the message again
// with the same id, which JetStream drops as a duplicate. No handler
// publishes after a commit by hand.
//
// One relay per schema publishes at a time (a row lock on the schema's
// outbox_relay row, which no other service's role can take: an advisory
// lock could be taken by any role of the database, and held, to stop the
// relay silently): several processes of one service may run relays, and
// the order of a service's events is still the order of its commits.
package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/failpoint"
	"github.com/lockdown/lockdown/pkg/platform/migrate"
	"github.com/lockdown/lockdown/pkg/platform/retry"
	"github.com/lockdown/lockdown/pkg/platform/stream"
)

// ErrNoMsgID is returned by Add for a message without a Nats-Msg-Id: the
// relay may publish a message twice, and only the id makes that harmless.
var ErrNoMsgID = errors.New("outbox: message has no Nats-Msg-Id")

// DDL returns the statements that create the outbox table in schema and
// the one-row table whose row lock elects the relay; Ensure runs them at
// every start.
func DDL(schema string) string {
	t := pgx.Identifier{schema, "outbox"}.Sanitize()
	l := relayLock(schema)
	return `CREATE TABLE IF NOT EXISTS ` + t + ` (
    seq        bigserial PRIMARY KEY,
    subject    text NOT NULL,
    header     jsonb NOT NULL,
    data       bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS ` + parkedTable(schema) + ` (
    seq        bigint PRIMARY KEY,
    subject    text NOT NULL,
    header     jsonb NOT NULL,
    data       bytea NOT NULL,
    reason     text NOT NULL,
    created_at timestamptz NOT NULL,
    parked_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS ` + l + ` (id int PRIMARY KEY CHECK (id = 1));
INSERT INTO ` + l + ` VALUES (1) ON CONFLICT DO NOTHING`
}

// parkedTable holds the rows JetStream refused for good (see Relay).
func parkedTable(schema string) string { return pgx.Identifier{schema, "outbox_parked"}.Sanitize() }

// relayLock is the table whose one row the publishing relay holds.
func relayLock(schema string) string { return pgx.Identifier{schema, "outbox_relay"}.Sanitize() }

// Ensure creates the outbox table of schema if it does not exist. It
// takes the schema's migration lock (the one package migrate takes):
// processes starting together must not race on CREATE TABLE IF NOT EXISTS,
// which PostgreSQL does not make safe against itself.
func Ensure(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	if err := migrate.EnsureLedger(ctx, pool, schema); err != nil {
		return err
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	if err := migrate.Lock(ctx, tx, schema); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, DDL(schema)); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// Step is Ensure for schema as a step of migrate.Open: a store that
// publishes through an outbox opens with it, and its pool is closed again
// when the table cannot be made.
func Step(schema string) func(context.Context, *pgxpool.Pool) error {
	return func(ctx context.Context, pool *pgxpool.Pool) error { return Ensure(ctx, pool, schema) }
}

// channel is the LISTEN/NOTIFY channel that wakes the relay of schema.
func channel(schema string) string { return schema + "_outbox" }

// Add writes messages to schema's outbox within tx: they are published
// only if tx commits. Order is kept: messages of one Add, and of
// transactions committed one after another, are published in that order.
func Add(ctx context.Context, tx pgx.Tx, schema string, msgs ...*nats.Msg) error {
	if len(msgs) == 0 {
		return nil
	}
	rows := make([][]any, len(msgs))
	for i, m := range msgs {
		if m.Header.Get(jetstream.MsgIDHeader) == "" {
			return fmt.Errorf("%w (subject %s)", ErrNoMsgID, m.Subject)
		}
		h, err := json.Marshal(m.Header)
		if err != nil {
			return err
		}
		rows[i] = []any{m.Subject, h, m.Data}
	}
	table := pgx.Identifier{schema, "outbox"}
	if len(rows) > 16 {
		if _, err := tx.CopyFrom(ctx, table, []string{"subject", "header", "data"}, pgx.CopyFromRows(rows)); err != nil {
			return fmt.Errorf("outbox: %w", err)
		}
	} else {
		b := &pgx.Batch{}
		for _, r := range rows {
			b.Queue(`INSERT INTO `+table.Sanitize()+` (subject, header, data) VALUES ($1, $2, $3)`, r...)
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("outbox: %w", err)
		}
	}
	// Delivered at commit: the relay wakes at once instead of at its poll.
	_, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, channel(schema))
	return err
}

// Publisher is what the relay needs of JetStream.
type Publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Relay publishes a schema's outbox.
type Relay struct {
	Pool   *pgxpool.Pool
	Schema string
	JS     Publisher
	Logger *slog.Logger
	// Poll is how often the table is read without a notification
	// (default 1s); Batch is how many messages one pass publishes
	// (default 500).
	Poll  time.Duration
	Batch int
	// OnDuplicate, when set, judges every publish JetStream reports as a
	// duplicate of an earlier message with the same id: a republish after
	// a crash is one; anything else may be a forged id, and an error stops
	// the relay there (the message stays in the outbox, retried and
	// logged) rather than let it go on as if the event had been stored.
	OnDuplicate func(ctx context.Context, msg *nats.Msg, ack *jetstream.PubAck) error
	// Failpoints are the crash tests' kill points: "outbox.published"
	// fires after a batch is stored in JetStream, before it is deleted.
	Failpoints *failpoint.Set
	// Source is the CloudEvents source of the dead letter written for a
	// parked row; DeadLetters names it (the dead letter's consumer field,
	// and its subject lockdown.deadletter.<DeadLetters>). Both required.
	Source, DeadLetters string
	// OnParked, when set, adds the service's own alarm for a parked row
	// within the transaction that parks it (containment: incident.stuck).
	OnParked func(ctx context.Context, tx pgx.Tx, p Parked) error
}

// Parked is an outbox row JetStream refused for a reason no retry can
// change (larger than the server's max_payload or the stream's message
// limit, a request JetStream calls bad). Holding it would hold every event
// after it, forever: it is moved to <schema>.outbox_parked with the reason
// and a dead letter, and the relay goes on.
type Parked struct {
	Seq     int64
	Subject string
	Size    int
	Reason  string
	// EventID, EventType and IncidentID describe the event when the row
	// decodes as one (empty otherwise).
	EventID, EventType, IncidentID string
}

// ErrRefused marks a publish JetStream refused for good.
var ErrRefused = errors.New("outbox: JetStream refused the message for good")

// refused reports whether a publish error is one no retry can change: the
// message itself is wrong, not the server's state.
func refused(err error) bool {
	if errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrBadHeaderMsg) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.Code == 400
}

// Run publishes until ctx ends. Failures (PostgreSQL or NATS down) are
// retried with backoff: the messages wait in the table.
func (r *Relay) Run(ctx context.Context) error {
	wake := make(chan struct{}, 1)
	go r.listen(ctx, wake)
	poll := r.Poll
	if poll <= 0 {
		poll = time.Second
	}
	failing := retry.Default().Start()
	for ctx.Err() == nil {
		n, err := r.Flush(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			r.Logger.Warn("outbox relay: publish pending messages failed; retrying", slog.String("schema", r.Schema), slog.Any("error", err))
			failing.Wait(ctx)
			continue
		case n > 0:
			failing.Reset()
			continue // there may be more
		}
		failing.Reset()
		select {
		case <-ctx.Done():
		case <-wake:
		case <-time.After(poll):
		}
	}
	return nil
}

// listen turns the schema's notifications into wake-ups, reconnecting
// when the connection drops. The poll covers the time it is down.
func (r *Relay) listen(ctx context.Context, wake chan<- struct{}) {
	for ctx.Err() == nil {
		conn, err := r.Pool.Acquire(ctx)
		if err == nil {
			if _, err = conn.Exec(ctx, `LISTEN `+pgx.Identifier{channel(r.Schema)}.Sanitize()); err == nil {
				// A commit between the relay's last flush and this LISTEN
				// notified nobody: flush once now that nothing is missed.
				select {
				case wake <- struct{}{}:
				default:
				}
				for {
					if _, err = conn.Conn().WaitForNotification(ctx); err != nil {
						break
					}
					select {
					case wake <- struct{}{}:
					default:
					}
				}
			}
			// A connection left listening must not go back to the pool.
			conn.Conn().Close(context.WithoutCancel(ctx)) //nolint:errcheck // closing a broken connection
			conn.Release()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// Flush publishes what is pending now, in order, and returns how many it
// published. It publishes nothing while another relay of the schema holds
// the lock (and returns 0).
func (r *Relay) Flush(ctx context.Context) (int, error) {
	batch := r.Batch
	if batch <= 0 {
		batch = 500
	}
	tx, err := r.Pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	var one int
	err = tx.QueryRow(ctx, `SELECT id FROM `+relayLock(r.Schema)+` FOR UPDATE SKIP LOCKED`).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil // another relay of the schema is publishing
	}
	if err != nil {
		return 0, err
	}
	rows, err := tx.Query(ctx, `SELECT seq, subject, header, data FROM `+pgx.Identifier{r.Schema, "outbox"}.Sanitize()+` ORDER BY seq LIMIT $1`, batch)
	if err != nil {
		return 0, err
	}
	type pending struct {
		seq int64
		msg *nats.Msg
	}
	var msgs []pending
	var seq int64
	var subject string
	var header []byte
	var data []byte
	if _, err := pgx.ForEachRow(rows, []any{&seq, &subject, &header, &data}, func() error {
		m := nats.NewMsg(subject)
		if err := json.Unmarshal(header, &m.Header); err != nil {
			return fmt.Errorf("outbox row %d: header: %w", seq, err)
		}
		m.Data = append([]byte(nil), data...)
		msgs = append(msgs, pending{seq, m})
		return nil
	}); err != nil {
		return 0, err
	}
	var published []int64
	var pubErr error
	parked := 0
	// One at a time: a message is stored before the next is sent, so a
	// failure can never let a later event overtake an earlier one. A
	// message refused for good is parked and the next one goes on: the
	// order of the others is kept, the gap is announced.
	for _, p := range msgs {
		ack, err := r.JS.PublishMsg(ctx, p.msg)
		if err != nil && refused(err) {
			if err := r.park(ctx, tx, p.seq, p.msg, err); err != nil {
				return 0, err
			}
			parked++
			continue
		}
		if err != nil {
			pubErr = fmt.Errorf("publish %s: %w", p.msg.Subject, err)
			break
		}
		if ack.Duplicate && r.OnDuplicate != nil {
			if err := r.OnDuplicate(ctx, p.msg, ack); err != nil {
				pubErr = fmt.Errorf("publish %s: %w", p.msg.Subject, err)
				break
			}
		}
		published = append(published, p.seq)
	}
	if len(published) > 0 || parked > 0 {
		r.Failpoints.Hit("outbox.published")
		// By the rows published, never by a range: a transaction that drew
		// a lower seq and committed while this batch was being published
		// is not in the batch, and must stay for the next pass.
		if _, err := tx.Exec(ctx, `DELETE FROM `+pgx.Identifier{r.Schema, "outbox"}.Sanitize()+` WHERE seq = ANY($1)`, published); err != nil {
			return 0, err
		}
		if err := tx.Commit(ctx); err != nil {
			return 0, err
		}
	}
	return len(published) + parked, pubErr
}

// park moves a refused row to the parked table, writes its dead letter
// (bounded, whatever the row's size) to the outbox and lets the service
// add its alarm — all in the relay's transaction: the row is parked with
// its alarms or not at all.
func (r *Relay) park(ctx context.Context, tx pgx.Tx, seq int64, msg *nats.Msg, cause error) error {
	reason := fmt.Sprintf("%v: %v", ErrRefused, cause)
	if _, err := tx.Exec(ctx, `INSERT INTO `+parkedTable(r.Schema)+` (seq, subject, header, data, reason, created_at)
SELECT seq, subject, header, data, $2, created_at FROM `+pgx.Identifier{r.Schema, "outbox"}.Sanitize()+` WHERE seq = $1
ON CONFLICT (seq) DO NOTHING`, seq, reason); err != nil {
		return fmt.Errorf("park outbox row %d: %w", seq, err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM `+pgx.Identifier{r.Schema, "outbox"}.Sanitize()+` WHERE seq = $1`, seq); err != nil {
		return fmt.Errorf("park outbox row %d: %w", seq, err)
	}
	dl := stream.DeadLetterOf(msg.Subject, msg.Header, msg.Data)
	dl.Consumer, dl.Reason, dl.Deliveries, dl.FailedAt = r.DeadLetters, reason, 1, time.Now().UTC()
	ev, err := events.New(events.DeadLetter, r.Source, dl)
	if err != nil {
		return fmt.Errorf("park outbox row %d: %w", seq, err)
	}
	ev.SetID(fmt.Sprintf("%s-%d", r.DeadLetters, seq)) // one per row, whatever the retries
	body, err := events.Marshal(ev)
	if err != nil {
		return err
	}
	letter := nats.NewMsg(events.DeadLetterSubject(r.DeadLetters))
	// The de-duplication id every publisher uses (subject and event id):
	// an id chosen on another subject cannot pre-empt it.
	letter.Header.Set(jetstream.MsgIDHeader, stream.MsgID(letter.Subject, ev.ID()))
	letter.Data = body
	if err := Add(ctx, tx, r.Schema, letter); err != nil {
		return err
	}
	p := Parked{Seq: seq, Subject: msg.Subject, Size: len(msg.Data), Reason: reason}
	if orig, _, err := events.Decode(msg.Header, msg.Data); err == nil {
		p.EventID, p.EventType, p.IncidentID = orig.ID(), orig.Type(), events.IncidentOf(orig.Data())
	}
	if r.OnParked != nil {
		if err := r.OnParked(ctx, tx, p); err != nil {
			return fmt.Errorf("park outbox row %d: alarm: %w", seq, err)
		}
	}
	r.Logger.Error("outbox relay: JetStream refused an event for good; parked it with a dead letter and went on",
		slog.String("schema", r.Schema), slog.Int64("seq", seq), slog.String("subject", msg.Subject), slog.Int("bytes", len(msg.Data)), slog.String("reason", reason))
	return nil
}

// Alarm is the readiness alarm of a schema's parked rows: raised while any
// row is parked (an operator looks at them, then deletes them from
// <schema>.outbox_parked).
func Alarm(pool *pgxpool.Pool, schema string) func(context.Context) error {
	return func(ctx context.Context) error {
		n, err := ParkedRows(ctx, pool, schema)
		if err != nil || n == 0 {
			return err
		}
		return fmt.Errorf("%d event(s) refused by JetStream for good and parked in %s (see their dead letters: lockdown dlq list)", n, parkedTable(schema))
	}
}

// PendingInfo reports how many events wait in the schema's outbox to be
// published (/readyz "info": a backlog an operator can watch drain; zero
// once every committed event is in JetStream).
func PendingInfo(pool *pgxpool.Pool, schema string) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		n, err := Pending(ctx, pool, schema)
		return strconv.Itoa(n), err
	}
}

// ParkedRows counts the rows parked so far (readiness detail, tests).
func ParkedRows(ctx context.Context, pool *pgxpool.Pool, schema string) (int, error) {
	var n int
	err := pool.QueryRow(ctx, `SELECT count(*) FROM `+parkedTable(schema)).Scan(&n)
	return n, err
}

// Pending counts the messages not yet published (tests, readiness).
func Pending(ctx context.Context, pool *pgxpool.Pool, schema string) (int, error) {
	var n int
	err := pool.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{schema, "outbox"}.Sanitize()).Scan(&n)
	return n, err
}
