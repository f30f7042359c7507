package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/stream"
)

// deadLetterView is one dead letter as `dlq list` prints it.
type deadLetterView struct {
	Sequence   uint64    `json:"sequence"`
	Consumer   string    `json:"consumer"`
	Subject    string    `json:"subject"`
	EventID    string    `json:"event_id,omitempty"`
	EventType  string    `json:"event_type,omitempty"`
	IncidentID string    `json:"incident_id,omitempty"`
	Deliveries uint64    `json:"deliveries"`
	Reason     string    `json:"reason"`
	FailedAt   time.Time `json:"failed_at"`
}

// replayResult is what `dlq replay --json` prints.
type replayResult struct {
	Sequence  uint64 `json:"sequence"`
	Subject   string `json:"subject"`
	MsgID     string `json:"msg_id"`
	Stream    string `json:"stream"`
	StreamSeq uint64 `json:"stream_sequence"`
	Duplicate bool   `json:"duplicate"`
}

func runDLQ(ctx context.Context, args []string, out, errOut io.Writer) int {
	if len(args) == 0 || (args[0] != "list" && args[0] != "replay") {
		Writeln(errOut, "usage: lockdown dlq list [--consumer NAME] [--json] | lockdown dlq replay <sequence> [--json]")
		return ExitUsage
	}
	sub, args := args[0], args[1:]
	fs := NewFlags("dlq "+sub, errOut)
	// Listing reads; replaying publishes, which only the replayer
	// identity may do.
	defaultUser := events.UserOperator
	if sub == "replay" {
		defaultUser = events.UserReplayer
	}
	nf := addNATSFlags(fs, defaultUser)
	asJSON := fs.Bool("json", false, "print as JSON")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	consumer := fs.String("consumer", "", "list only this durable consumer's dead letters")
	var seqArg string
	if sub == "replay" {
		var code int
		var ok bool
		if seqArg, code, ok = parseWithID(fs, args, "usage: lockdown dlq replay <sequence> [--json]", errOut); !ok {
			return code
		}
	} else if code, ok := Parse(fs, args); !ok {
		return code
	}
	cctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	conn, err := nf.connect(cctx)
	if err != nil {
		Writef(errOut, "lockdown dlq: %v\n", err)
		return ExitFailure
	}
	defer CloseNATS(conn)
	if sub == "replay" {
		seq, err := strconv.ParseUint(seqArg, 10, 64)
		if err != nil {
			Writef(errOut, "lockdown dlq replay: %q is not a sequence number (see lockdown dlq list)\n", seqArg)
			return ExitUsage
		}
		res, err := replay(cctx, conn.JS, seq)
		if err != nil {
			Writef(errOut, "lockdown dlq replay: %v\n", conn.Explain(err))
			return ExitFailure
		}
		if *asJSON {
			ShowJSON(out, res)
			return ExitOK
		}
		note := ""
		if res.Duplicate {
			note = " (already replayed: JetStream kept the first)"
		}
		Writef(out, "dead letter %d replayed onto %s as %s (stream %s, seq %d)%s\n", res.Sequence, res.Subject, res.MsgID, res.Stream, res.StreamSeq, note)
		return ExitOK
	}
	list, err := deadLetters(cctx, conn.JS, *consumer)
	if err != nil {
		Writef(errOut, "lockdown dlq list: %v\n", err)
		return ExitFailure
	}
	if *asJSON {
		ShowJSON(out, list)
		return ExitOK
	}
	Writef(out, "%-6s  %-24s  %-22s  %-36s  %-4s  %s\n", "SEQ", "FAILED", "CONSUMER", "SUBJECT", "DLV", "REASON")
	for _, d := range list {
		Writef(out, "%-6d  %-24s  %-22s  %-36s  %-4d  %s\n", d.Sequence, stamp(d.FailedAt), d.Consumer, d.Subject, d.Deliveries, d.Reason)
	}
	return ExitOK
}

// deadLetters reads the whole dead-letter stream (it holds failures, not
// traffic) by subject, without a consumer (readers may not create one).
func deadLetters(ctx context.Context, js jetstream.JetStream, consumer string) ([]deadLetterView, error) {
	list := []deadLetterView{}
	err := stream.Scan(ctx, js, events.StreamDeadLetters, events.DeadLetter.Subject()+".>", false, func(m *jetstream.RawStreamMsg) bool {
		if v, ok := decodeDeadLetter(m.Header, m.Data, m.Sequence); ok && (consumer == "" || v.Consumer == consumer) {
			list = append(list, v)
		}
		return true
	})
	return list, err
}

func decodeDeadLetter(h nats.Header, data []byte, seq uint64) (deadLetterView, bool) {
	ev, _, err := events.Decode(h, data)
	if err != nil {
		return deadLetterView{}, false
	}
	d, err := events.DataAs[events.DeadLetterData](ev)
	if err != nil {
		return deadLetterView{}, false
	}
	v := deadLetterView{Sequence: seq, Consumer: d.Consumer, Subject: d.Subject, Deliveries: d.Deliveries, Reason: d.Reason, FailedAt: d.FailedAt}
	if orig, _, err := events.Decode(nats.Header(d.OriginalHeaders), d.OriginalData); err == nil {
		v.EventID, v.EventType, v.IncidentID = orig.ID(), orig.Type(), events.IncidentOf(orig.Data())
	}
	return v, true
}

// ErrForgedDeadLetter is returned by replay for a dead letter that its
// consumer could not have written: another consumer's dead-letter subject,
// or an original on a subject that consumer does not take. Each service
// may publish only its own durables' dead letters, so a stolen service
// credential cannot have an operator replay events it may not publish.
var ErrForgedDeadLetter = errors.New("refusing to replay: not a dead letter its consumer could have written")

// replayable checks a dead letter against the consumer it names.
func replayable(stored string, d events.DeadLetterData) error {
	c, ok := events.ConsumerOf(d.Consumer)
	switch {
	case !ok:
		return fmt.Errorf("%w (unknown consumer %q)", ErrForgedDeadLetter, d.Consumer)
	case stored != events.DeadLetterSubject(c.Durable):
		return fmt.Errorf("%w (stored on %s, not on %s)", ErrForgedDeadLetter, stored, events.DeadLetterSubject(c.Durable))
	case !slices.Contains(c.FilterSubjects(), d.Subject) || d.Subject == events.BreachDetected.Subject():
		return fmt.Errorf("%w (%s does not take %s; a breach is raised by a detector, never replayed)", ErrForgedDeadLetter, c.Durable, d.Subject)
	}
	return nil
}

// ErrOriginalGone is returned by replay for a dead letter that carries only
// the start of its original when the original is no longer in its stream
// as it was (aged out, or another message at that sequence).
var ErrOriginalGone = errors.New("the original is no longer in its stream")

// originalOf reads a cut dead letter's original from its stream and checks
// it is the one the dead letter describes (subject and SHA-256).
func originalOf(ctx context.Context, js jetstream.JetStream, d events.DeadLetterData) (*jetstream.RawStreamMsg, error) {
	if d.OriginalStream == "" || d.OriginalSequence == 0 {
		return nil, fmt.Errorf("%w: the dead letter names no stream sequence", ErrOriginalGone)
	}
	st, err := js.Stream(ctx, d.OriginalStream)
	if err != nil {
		return nil, err
	}
	raw, err := st.GetMsg(ctx, d.OriginalSequence)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("%w (%s sequence %d)", ErrOriginalGone, d.OriginalStream, d.OriginalSequence)
	}
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw.Data)
	if raw.Subject != d.Subject || hex.EncodeToString(sum[:]) != d.OriginalSHA256 {
		return nil, fmt.Errorf("%w (%s sequence %d holds another message)", ErrOriginalGone, d.OriginalStream, d.OriginalSequence)
	}
	return raw, nil
}

// replay publishes a dead letter's original message, byte for byte and
// with its original headers, onto its original subject. The Nats-Msg-Id
// names the dead letter, so replaying the same letter twice is dropped as
// a duplicate while the original id (still in the duplicate window) does
// not block the replay.
func replay(ctx context.Context, js jetstream.JetStream, seq uint64) (replayResult, error) {
	st, err := js.Stream(ctx, events.StreamDeadLetters)
	if err != nil {
		return replayResult{}, err
	}
	raw, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return replayResult{}, fmt.Errorf("no dead letter %d", seq)
	}
	if err != nil {
		return replayResult{}, err
	}
	ev, _, err := events.Decode(raw.Header, raw.Data)
	if err != nil {
		return replayResult{}, err
	}
	d, err := events.DataAs[events.DeadLetterData](ev)
	if err != nil {
		return replayResult{}, err
	}
	if err := replayable(raw.Subject, d); err != nil {
		return replayResult{}, fmt.Errorf("dead letter %d: %w", seq, err)
	}
	msg := nats.NewMsg(d.Subject)
	for k, vs := range d.OriginalHeaders {
		for _, v := range vs {
			msg.Header.Add(k, v)
		}
	}
	msg.Data = d.OriginalData
	if d.Truncated() {
		// The dead letter holds only the start of a large original: the
		// original itself is still in its stream.
		orig, err := originalOf(ctx, js, d)
		if err != nil {
			return replayResult{}, fmt.Errorf("dead letter %d: %w", seq, err)
		}
		msg.Header, msg.Data = orig.Header, orig.Data
	}
	msgID := fmt.Sprintf("%s/replay/%d", msg.Header.Get(jetstream.MsgIDHeader), seq)
	msg.Header.Set(jetstream.MsgIDHeader, msgID)
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		return replayResult{}, fmt.Errorf("publish to %s: %w", d.Subject, err)
	}
	return replayResult{Sequence: seq, Subject: d.Subject, MsgID: msgID, Stream: ack.Stream, StreamSeq: ack.Sequence, Duplicate: ack.Duplicate}, nil
}
