package events_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/lockdown/lockdown/pkg/events"
)

// TestNATSPermissions checks the generated permissions for the shapes that
// would let one credential stop or fake the response. TestBusPermissions
// (cmd/lockdown) proves the same against a real nats-server.
func TestNATSPermissions(t *testing.T) {
	perms := map[string]events.NATSPermission{}
	for _, p := range events.NATSPermissions() {
		perms[p.User] = p
	}
	manage := []string{"$JS.API.STREAM.CREATE", "$JS.API.STREAM.UPDATE", "$JS.API.STREAM.DELETE", "$JS.API.STREAM.PURGE",
		"$JS.API.CONSUMER.DURABLE.CREATE", "$JS.API.>", "$JS.ACK.>", ">"}
	for user, p := range perms {
		if user == events.UserAdmin {
			continue
		}
		t.Run(user+" subscribes only below its own inbox and to what it watches", func(t *testing.T) {
			for _, s := range p.SubscribeAllow {
				if strings.HasPrefix(s, "_INBOX") && s != events.InboxPrefix(user)+".>" {
					t.Errorf("subscribes to %s", s)
				}
				if !strings.HasPrefix(s, "_INBOX") && strings.Contains(s, ">") {
					t.Errorf("subscribes to the wildcard %s", s)
				}
			}
		})
		t.Run(user+" cannot manage streams or consumers", func(t *testing.T) {
			// The one exception: the owner of an object store purges an
			// object's replaced chunks (its own derived data; the records
			// it is built from stay in the owner's database).
			owned := map[string]bool{}
			for _, b := range events.Buckets() {
				if b.Owner == user && b.Kind == events.BucketObject {
					owned["$JS.API.STREAM.PURGE."+b.BucketStream()] = true
				}
			}
			for _, s := range p.PublishAllow {
				if owned[s] {
					continue
				}
				for _, m := range manage {
					if strings.HasPrefix(s, m) {
						t.Errorf("may publish %s", s)
					}
				}
			}
		})
	}
	t.Run("only the SIEM and containment may publish a breach", func(t *testing.T) {
		for user, p := range perms {
			may := slices.Contains(p.PublishAllow, events.BreachDetected.Subject()) || slices.Contains(p.PublishAllow, ">")
			if may != (user == events.UserSIEM || user == events.ServiceContainment || user == events.UserAdmin) {
				t.Errorf("%s may publish a breach: %v", user, may)
			}
		}
		if got := perms[events.UserSIEM].PublishAllow; !slices.Equal(got, []string{events.BreachDetected.Subject()}) {
			t.Errorf("the SIEM may publish %v", got)
		}
	})
	t.Run("a service acks only its own durables", func(t *testing.T) {
		for _, c := range events.Consumers() {
			ack := "$JS.ACK." + c.Stream + "." + c.Durable + ".>"
			for user, p := range perms {
				if slices.Contains(p.PublishAllow, ack) != (user == c.Service) {
					t.Errorf("%s and the ack of %s", user, c.Durable)
				}
			}
		}
	})
	t.Run("readers are denied every declared durable by name", func(t *testing.T) {
		for _, user := range []string{events.UserOperator, events.UserReplayer} {
			for _, c := range events.Consumers() {
				for _, api := range []string{"CREATE", "MSG.NEXT", "DELETE"} {
					subject := "$JS.API.CONSUMER." + api + "." + c.Stream + "." + c.Durable
					if !slices.Contains(perms[user].PublishDeny, subject) {
						t.Errorf("%s is not denied %s", user, subject)
					}
				}
			}
		}
	})
}
