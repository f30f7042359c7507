package stream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/retry"
)

// pollEvery is how often a reader without a consumer looks again for a
// message not stored yet.
const pollEvery = 200 * time.Millisecond

// Await reads the stored events of one name, oldest first, and returns the
// first whose data matches, waiting for new ones until ctx ends. It uses
// no consumer — one stored-message request per event (next by subject) —
// so it needs only read access: the CLI follows an incident with it, and
// no reader may create consumers (a consumer's definition, push delivery
// subject included, is the creator's choice; see docs/security.md).
func Await[T any](ctx context.Context, js jetstream.JetStream, name events.Name, match func(event.Event, T) bool) (event.Event, T, error) {
	var zero T
	spec := events.SpecOf(name)
	var found event.Event
	var data T
	err := Scan(ctx, js, spec.Stream, spec.FilterSubject(), true, func(m *jetstream.RawStreamMsg) bool {
		ev, _, err := events.Decode(m.Header, m.Data)
		if err != nil {
			return true // not ours to judge: the consumers dead-letter it
		}
		d, err := events.DataAs[T](ev)
		if err == nil && match(ev, d) {
			found, data = ev, d
			return false
		}
		return true
	})
	if err != nil {
		return event.Event{}, zero, fmt.Errorf("await %s: %w", name, err)
	}
	return found, data, nil
}

// Scan calls each for every stored message of streamName on subject
// (wildcards allowed), oldest first, until each returns false. With follow
// it then waits for new messages until ctx ends; without, it returns after
// the last one stored. No consumer is created: each message is one
// "next by subject" request, which a reader's permissions allow.
func Scan(ctx context.Context, js jetstream.JetStream, streamName, subject string, follow bool, each func(*jetstream.RawStreamMsg) bool) error {
	var st jetstream.Stream
	var err error
	for st == nil {
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		st, err = js.Stream(rctx, streamName)
		cancel()
		if err != nil {
			st = nil
			if !follow || !pause(ctx) {
				return fmt.Errorf("stream %s: %w", streamName, err)
			}
		}
	}
	seq := uint64(1)
	for {
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		m, err := st.GetMsg(rctx, seq, jetstream.WithGetMsgSubject(subject))
		cancel()
		switch {
		case err == nil:
			seq = m.Sequence + 1
			if !each(m) {
				return nil
			}
			continue
		case errors.Is(err, jetstream.ErrMsgNotFound) && !follow:
			return nil
		case !errors.Is(err, jetstream.ErrMsgNotFound) && !follow:
			return err
		}
		// Nothing newer yet, or NATS away for a moment: look again.
		if !pause(ctx) {
			return ctx.Err()
		}
	}
}

// requestTimeout bounds one JetStream API request of a scan: a reply lost
// while a stream's leader changes (a node killed, a node catching up after
// its restart) would otherwise hold the scan until its context ends — a
// follower then asks again.
const requestTimeout = 5 * time.Second

// pause waits pollEvery; false when ctx ended first.
func pause(ctx context.Context) bool { return retry.Sleep(ctx, pollEvery) }
