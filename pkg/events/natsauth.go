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

// NATSUsers lists the users of a deployment in a stable order.
func NATSUsers() []string {
	return []string{UserSIEM, UserOperator, ServiceContainment, ServiceAssessor, ServiceRotator, ServiceNotifier}
}

// NATSPasswordEnv is the environment variable nats-server reads a user's
// password from (the generated config references it as $VAR).
func NATSPasswordEnv(user string) string {
	return "LOCKDOWN_NATS_PASSWORD_" + strings.ToUpper(user)
}

// jetStreamClient are the JetStream API calls every service makes: account
// and stream info, the idempotent creation of the declared streams and
// consumers at start, and reading one stored message by sequence (a
// publish JetStream calls a duplicate is checked against the message it
// kept: stream.CheckDuplicate; events hold no secret). Deleting or purging
// is not among them.
var jetStreamClient = []string{
	"$JS.API.INFO",
	"$JS.API.STREAM.INFO.*",
	"$JS.API.STREAM.MSG.GET.*",
	"$JS.API.STREAM.CREATE.*",
	"$JS.API.STREAM.UPDATE.*",
	"$JS.API.CONSUMER.INFO.*.*",
	"$JS.API.CONSUMER.CREATE.>",
	"$JS.API.CONSUMER.DURABLE.CREATE.*.*",
}

// NATSPermissions derives every user's permissions from the catalog and the
// declared consumers.
func NATSPermissions() []NATSPermission {
	var out []NATSPermission
	for _, user := range NATSUsers() {
		p := NATSPermission{User: user, SubscribeAllow: []string{"_INBOX.>"}}
		switch user {
		case UserSIEM:
			p.PublishAllow = []string{BreachDetected.Subject()}
			for _, s := range catalog {
				if slices.Contains(s.Watchers, user) {
					p.SubscribeAllow = append(p.SubscribeAllow, s.Subject())
				}
			}
		case UserOperator:
			// The CLI reads everything and replays dead letters onto
			// their original subjects, but never raises a breach.
			p.PublishAllow = []string{SubjectPrefix + ">", "$JS.API.>", "$JS.ACK.>"}
			p.PublishDeny = []string{BreachDetected.Subject()}
		default:
			for _, s := range catalog {
				if slices.Contains(s.Publishers, user) {
					p.PublishAllow = append(p.PublishAllow, s.Subject())
				}
				if slices.Contains(s.Watchers, user) {
					p.SubscribeAllow = append(p.SubscribeAllow, s.Subject())
				}
			}
			p.PublishAllow = append(p.PublishAllow, jetStreamClient...)
			for _, c := range Consumers() {
				if c.Service != user {
					continue
				}
				p.PublishAllow = append(p.PublishAllow,
					DeadLetterSubject(c.Durable),
					fmt.Sprintf("$JS.API.CONSUMER.MSG.NEXT.%s.%s", c.Stream, c.Durable),
					fmt.Sprintf("$JS.ACK.%s.%s.>", c.Stream, c.Durable))
			}
		}
		out = append(out, p)
	}
	return out
}

// NATSAuthConfig renders the authorization block of nats-server's
// configuration. Passwords are not in it: nats-server substitutes
// $LOCKDOWN_NATS_PASSWORD_<USER> from its environment.
func NATSAuthConfig() string {
	var b strings.Builder
	b.WriteString("# Generated from pkg/events (make docs). Do not edit by hand.\n")
	b.WriteString("# One user per service, the SIEM and the operator CLI; each may publish only the\n")
	b.WriteString("# events it produces. Passwords come from nats-server's environment.\n")
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
