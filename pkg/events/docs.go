package events

import (
	"fmt"
	"strings"
)

// Markdown renders docs/events.md from the catalog and the topology, so the
// document cannot drift from the code (a test compares them).
func Markdown() string {
	var b strings.Builder
	b.WriteString("# Events\n\n")
	b.WriteString("<!-- Generated from pkg/events by `make docs` (go test ./pkg/events -run TestDocs -update). Do not edit by hand. -->\n\n")
	b.WriteString("Every message between Lockdown's services is a CloudEvent 1.0, published on NATS JetStream in **structured JSON mode** " +
		"(`content-type: application/cloudevents+json`) with `Nats-Msg-Id` set to the event id, so JetStream drops a duplicate publish inside the stream's duplicate window. " +
		"Consumers also accept **binary mode** (`ce-*` headers, data in the body). Trace context travels twice: the W3C `traceparent`/`tracestate` NATS headers, " +
		"and the CloudEvents distributed-tracing extension attributes of the same names.\n\n")
	b.WriteString("The JSON Schema of each event's `data` is in [`docs/schemas/`](schemas/).\n\n")
	b.WriteString("## Catalog\n\n| type | subject | producer | consumers | stream |\n|---|---|---|---|---|\n")
	for _, s := range catalog {
		subject := "`" + s.Subject() + "`"
		if s.Name == DeadLetter {
			subject = "`" + s.Subject() + ".<durable>`"
		}
		consumers := strings.Join(s.Consumers, ", ")
		if len(s.Watchers) > 0 {
			consumers += "; watched live by " + strings.Join(s.Watchers, ", ")
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | `%s` |\n", s.Type(), subject, strings.Join(s.Publishers, ", "), consumers, s.Stream)
	}
	b.WriteString("\n## Streams\n\n| stream | subjects | retention | duplicate window | max age | storage |\n|---|---|---|---|---|---|\n")
	for _, st := range Streams() {
		age := "unbounded"
		if st.MaxAge > 0 {
			age = st.MaxAge.String()
		}
		fmt.Fprintf(&b, "| `%s` | `%s` | %s | %s | %s | file |\n", st.Name, strings.Join(st.Subjects, "`, `"), st.Retention, st.DuplicateWindow, age)
	}
	b.WriteString("\n## Durable consumers\n\nAll are pull consumers with explicit acks and no bound on deliveries (max deliver -1): an outage delays work, " +
		"it never fails it. A handler's transient error is retried with `NakWithDelay` (base · 2^(delivery−1), capped); an error that says a dependency is " +
		"down (`stream.Unavailable`) also pauses the consumer (it fetches nothing, then one probe) until the dependency answers, and shows in `/readyz` and " +
		"the metric `lockdown.dependency.waiting`. A permanent error, a malformed payload, an unknown type or a handler panic is recorded by the service " +
		"(`OnPermanent`), terminated with `TermWithReason` and written to `lockdown.deadletter.<durable>`; if either record fails the message is retried, " +
		"so nothing is lost silently. An error that is neither an outage nor classified permanent is poison after `poison after` failures (outages are " +
		"not counted) and dead-lettered the same way; and at most `poison window` messages may be failing repeatedly (three failures or more) at once, a " +
		"further one is dead-lettered at its third, so poison never fills the in-flight window. A dead letter carries the original body up to 64 KiB, " +
		"its size, SHA-256 and stream sequence: a longer original stays in its stream and `lockdown dlq replay` reads it from there.\n\n")
	b.WriteString("| durable | service | stream | events | ack wait | max deliver | max ack pending | retry | poison after | poison window |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range Consumers() {
		names := make([]string, len(c.Events))
		for i, n := range c.Events {
			names[i] = "`" + string(n) + "`"
		}
		deliver := "unbounded"
		if c.MaxDeliver > 0 {
			deliver = fmt.Sprint(c.MaxDeliver)
		}
		fmt.Fprintf(&b, "| `%s` | %s | `%s` | %s | %s | %s | %d | %s → %s | %d | %d |\n", c.Durable, c.Service, c.Stream, strings.Join(names, ", "),
			c.AckWait, deliver, c.MaxAckPending, c.RetryBase, c.RetryMax, c.PoisonAttempts, c.PoisonWindow())
	}
	b.WriteString("\n## Read model\n\nContainment projects its records into these buckets after every change of an incident (a new phase within 250 ms, or twice the time " +
		"the last build took; progress alone at most once a second, or four times the build's time); the CLI and the console read and watch them as the `operator` NATS user and need no database access. " +
		"Only the engine's leader writes. The values are derived, never a source of truth: a lost write is made again at the next change or the next start. " +
		"A reader refuses a document whose `schema` is newer than it knows.\n\n")
	b.WriteString("| bucket | kind | stream | key | writer | value | history | max age |\n|---|---|---|---|---|---|---|---|\n")
	for _, k := range Buckets() {
		history := "—"
		if k.Kind == BucketKeyValue {
			history = fmt.Sprint(k.History)
		}
		fmt.Fprintf(&b, "| `%s` | %s | `%s` | %s | %s | [`schemas/%s`](schemas/%s): %s | %s | %s |\n", k.Name, k.Kind, k.BucketStream(), k.Key, k.Owner,
			k.Schema, k.Schema, k.Description, history, k.MaxAge)
	}
	b.WriteString("\n## Events and their data\n")
	for _, s := range catalog {
		fmt.Fprintf(&b, "\n### `%s`\n\n%s\n\n- subject: `%s`\n- producer: %s\n- consumers: %s\n- schema: [`schemas/%s.v1.json`](schemas/%s.v1.json)\n\n",
			s.Name, s.Description, s.Subject(), strings.Join(s.Publishers, ", "), strings.Join(s.Consumers, ", "), s.Name, s.Name)
		b.WriteString("| field | type | required | meaning |\n|---|---|---|---|\n")
		for _, f := range s.fields() {
			req := ""
			if f.Required {
				req = "yes"
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", f.Name, f.Type, req, f.Doc)
		}
	}
	return b.String()
}
