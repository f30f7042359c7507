package events

import (
	"fmt"
	"slices"
	"strings"
)

// NATSPermission is what one NATS user may do. Lockdown's least-privilege
// NATS configuration (deploy/nats/auth.conf) is generated from the catalog
// with it, so a new event cannot be published by anyone until its
// publishers are declared.
type NATSPermission struct {
	User           string
	PublishAllow   []string
	PublishDeny    []string
	SubscribeAllow []string
}

// Users of NATS besides the services and the SIEM.
const (
	// UserReplayer is the NATS user of `lockdown dlq replay`: it reads the
	// dead letters and may publish a consumed event again (never a
	// breach). It is kept apart from the operator so that the credential
	// used every day cannot inject events.
	UserReplayer = "replayer"
	// UserAdmin provisions the streams and durable consumers
	// (`lockdown install nats`). No service holds it: after the install
	// step nobody else may create, change or delete JetStream objects.
	UserAdmin = "admin"
)

// NATSUsers lists the users of a deployment in a stable order.
func NATSUsers() []string {
	return []string{UserSIEM, UserOperator, UserReplayer, UserAdmin, ServiceContainment, ServiceAssessor, ServiceRotator, ServiceNotifier}
}

// NATSPasswordEnv is the environment variable nats-server reads a user's
// password from (the generated config references it as $VAR).
func NATSPasswordEnv(user string) string {
	return "LOCKDOWN_NATS_PASSWORD_" + strings.ToUpper(user)
}

// InboxPrefix is the prefix of a user's reply subjects. Each user may
// subscribe only below its own prefix, so no client sees another's pull
// deliveries, publish acknowledgements or replies (with the shared
// `_INBOX.>` any user could read every service's deliveries). Clients set
// it with nats.CustomInboxPrefix; the nats CLI with --inbox-prefix.
func InboxPrefix(user string) string { return "_INBOX_" + user }

// jetStreamInfo are the read-only JetStream API calls every user may make:
// account info and stream info (configuration and counters, no content).
var jetStreamInfo = []string{"$JS.API.INFO", "$JS.API.STREAM.INFO.*", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST"}

// NATSPermissions derives every user's permissions from the catalog and the
// declared streams and consumers.
//
// The shape: the admin provisions; a service publishes the events it
// produces, pulls and acks its own durables and nothing else; the SIEM
// publishes breaches; the operator reads (stream information and stored
// messages, one by one: no consumer) and publishes its control requests; the replayer reads dead letters and republishes consumed
// events. Nobody but the admin may create, update, purge or delete a
// stream or a durable consumer, or ack another user's deliveries.
func NATSPermissions() []NATSPermission {
	var out []NATSPermission
	for _, user := range NATSUsers() {
		p := NATSPermission{User: user, SubscribeAllow: []string{InboxPrefix(user) + ".>"}}
		for _, s := range catalog {
			if slices.Contains(s.Watchers, user) {
				p.SubscribeAllow = append(p.SubscribeAllow, s.Subject())
			}
		}
		switch user {
		case UserAdmin:
			p.PublishAllow, p.SubscribeAllow = []string{">"}, []string{">"}
		case UserSIEM:
			p.PublishAllow = []string{BreachDetected.Subject()}
		case UserOperator:
			p.PublishAllow = append(append(append(publishedBy(user), readStreams()...), readBuckets()...), writeBuckets(user)...)
			p.PublishDeny = append(durableDenies(), consumerDenies...)
		case UserReplayer:
			p.PublishAllow = append(replayable(), readStreams()...)
			p.PublishDeny = append(durableDenies(), consumerDenies...)
		default:
			p.PublishAllow = append(publishedBy(user), jetStreamInfo...)
			p.PublishAllow = append(p.PublishAllow, DeadLetterSubject(OutboxDeadLetters(user)))
			streams := map[string]bool{StreamDeadLetters: true}
			for _, s := range catalog {
				if slices.Contains(s.Publishers, user) {
					streams[s.Stream] = true
				}
			}
			for _, c := range Consumers() {
				if c.Service != user {
					continue
				}
				streams[StreamDeadLetters] = true
				p.PublishAllow = append(p.PublishAllow,
					DeadLetterSubject(c.Durable),
					fmt.Sprintf("$JS.API.CONSUMER.INFO.%s.%s", c.Stream, c.Durable),
					fmt.Sprintf("$JS.API.CONSUMER.MSG.NEXT.%s.%s", c.Stream, c.Durable),
					fmt.Sprintf("$JS.ACK.%s.%s.>", c.Stream, c.Durable))
			}
			// A publish JetStream calls a duplicate is checked against the
			// message it kept (stream.CheckDuplicate): reading one stored
			// message of a stream the service publishes to. Events hold no
			// secret.
			for _, s := range Streams() {
				if streams[s.Name] {
					p.PublishAllow = append(p.PublishAllow, "$JS.API.STREAM.MSG.GET."+s.Name)
				}
			}
			p.PublishAllow = append(p.PublishAllow, writeBuckets(user)...)
			p.PublishDeny = consumerDenies
		}
		out = append(out, p)
	}
	return out
}

// publishedBy are the subjects of the events the catalog lets user publish.
func publishedBy(user string) []string {
	var out []string
	for _, s := range catalog {
		if slices.Contains(s.Publishers, user) {
			out = append(out, s.Subject())
		}
	}
	return out
}

// replayable are the subjects a dead letter can be replayed onto: every
// event a durable consumer takes, except the breach (only a detector
// raises one).
func replayable() []string {
	var out []string
	for _, c := range Consumers() {
		for _, s := range c.FilterSubjects() {
			if s != BreachDetected.Subject() && !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// readStreams lets a reader see every stream's and consumer's information
// and read the stored messages of the events and dead-letter streams one
// by one (next by subject: stream.Scan). The work queue is left out.
//
// Readers create no consumer, in any form: a consumer's definition is its
// creator's choice — the legacy create ($JS.API.CONSUMER.CREATE.<stream>,
// the name in the body) can redefine another service's durable, and a
// push consumer delivers wherever its creator says, into a key-value
// bucket's subject included (a forged incident document). Only the admin
// creates consumers (the install step).
func readStreams() []string {
	// Consumer information (settings and counters: how far each service
	// is) of every consumer, the job queue's included.
	out := append(slices.Clone(jetStreamInfo), "$JS.API.CONSUMER.INFO.*.*", "$JS.API.CONSUMER.NAMES.*", "$JS.API.CONSUMER.LIST.*")
	for _, s := range []string{StreamEvents, StreamDeadLetters} {
		out = append(out, "$JS.API.STREAM.MSG.GET."+s, "$JS.API.DIRECT.GET."+s, "$JS.API.DIRECT.GET."+s+".>")
	}
	return out
}

// readBuckets lets a reader get the read model's values (direct or stream
// message get) and read a bucket's stored messages by subject; it polls
// for changes (stream.ReadModel), with no consumer.
func readBuckets() []string {
	var out []string
	for _, b := range Buckets() {
		st := b.BucketStream()
		out = append(out, "$JS.API.DIRECT.GET."+st, "$JS.API.DIRECT.GET."+st+".>", "$JS.API.STREAM.MSG.GET."+st)
	}
	return out
}

// consumerDenies are refused to every user but the admin, whatever an
// allow says: creating a consumer in any form.
var consumerDenies = []string{"$JS.API.CONSUMER.CREATE.>", "$JS.API.CONSUMER.DURABLE.CREATE.>", "$JS.API.CONSUMER.DELETE.>"}

// writeBuckets lets a bucket's owner write it: publish values, read the
// current one, and purge an object's replaced chunks.
func writeBuckets(user string) []string {
	var out []string
	for _, b := range Buckets() {
		if b.Owner != user {
			continue
		}
		st := b.BucketStream()
		out = append(out, b.BucketSubjects(), "$JS.API.DIRECT.GET."+st+".>", "$JS.API.STREAM.MSG.GET."+st)
		if b.Kind == BucketObject {
			out = append(out, "$JS.API.STREAM.PURGE."+st)
		}
	}
	return out
}

// durableDenies keeps readers away from the declared durables: they may
// not redefine one (a create with its name is an update), pull its
// deliveries or delete it.
func durableDenies() []string {
	var out []string
	for _, c := range Consumers() {
		out = append(out,
			fmt.Sprintf("$JS.API.CONSUMER.CREATE.%s.%s", c.Stream, c.Durable),
			fmt.Sprintf("$JS.API.CONSUMER.CREATE.%s.%s.>", c.Stream, c.Durable),
			fmt.Sprintf("$JS.API.CONSUMER.MSG.NEXT.%s.%s", c.Stream, c.Durable),
			fmt.Sprintf("$JS.API.CONSUMER.DELETE.%s.%s", c.Stream, c.Durable))
	}
	return out
}

// NATSAuthConfig renders the authorization block of nats-server's
// configuration. Passwords are not in it: nats-server substitutes
// $LOCKDOWN_NATS_PASSWORD_<USER> from its environment.
func NATSAuthConfig() string {
	var b strings.Builder
	b.WriteString("# Generated from pkg/events (make docs). Do not edit by hand.\n")
	b.WriteString("# One user per service, the SIEM, the operator CLI, the dead-letter replayer and\n")
	b.WriteString("# the admin that provisions streams and consumers (`lockdown install nats`).\n")
	b.WriteString("# Each may publish only the events it produces and subscribe only below its own\n")
	b.WriteString("# inbox prefix (_INBOX_<user>). Passwords come from nats-server's environment.\n")
	b.WriteString("authorization {\n  users = [\n")
	for _, p := range NATSPermissions() {
		fmt.Fprintf(&b, "    {\n      user: %q\n      password: $%s\n      permissions: {\n", p.User, NATSPasswordEnv(p.User))
		fmt.Fprintf(&b, "        publish: {\n          allow: %s\n", quoteList(p.PublishAllow))
		if len(p.PublishDeny) > 0 {
			fmt.Fprintf(&b, "          deny: %s\n", quoteList(p.PublishDeny))
		}
		fmt.Fprintf(&b, "        }\n        subscribe: { allow: %s }\n      }\n    }\n", quoteList(p.SubscribeAllow))
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}

func quoteList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
