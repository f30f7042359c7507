package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/stream"
)

// TestMessageIDPoisoning plays an attacker who holds the SIEM's NATS
// credential: once the incident is open (the intake even says its id), it
// publishes breaches whose Nats-Msg-Id is the one containment will give
// vault.unsealed and access.revoked, hoping JetStream drops the real
// events as duplicates and the response stops at the gate. The response
// goes on unharmed: the events are in the stream, access is revoked, and
// containment raises the alarm.
func TestMessageIDPoisoning(t *testing.T) {
	t.Parallel() // its own stack, nothing in the environment: beside the other long system tests
	s := newSystem(t, 10*time.Minute, 3)
	s.startAll(nil)
	eventID := s.breach("the real detection")
	id := s.incidentOf(eventID)
	await(s, events.VaultSealed, time.Minute, func(d events.VaultSealedData) bool { return d.IncidentID == id })

	nc, err := nats.Connect(s.stack.NATS.URL, nats.UserInfo(events.UserSIEM, s.stack.NATS.Password(events.UserSIEM)))
	must(t, err)
	defer nc.Close()
	for _, target := range []string{
		stream.MsgID(events.VaultUnsealed.Subject(), id+"/vault.unsealed/1"),
		stream.MsgID(events.AccessRevoked.Subject(), id+"/access.revoked/1"),
		id + "/vault.unsealed/1", // the scheme before subjects were in the id
	} {
		ev, err := events.New(events.BreachDetected, "/siem/attacker", events.BreachDetectedData{Summary: "poison", Severity: events.SeverityLow})
		must(t, err)
		body, err := events.Marshal(ev)
		must(t, err)
		msg := nats.NewMsg(events.BreachDetected.Subject())
		msg.Header.Set(jetstream.MsgIDHeader, target)
		msg.Data = body
		must(t, nc.PublishMsg(msg))
	}
	must(t, nc.Flush())

	_, resolved := s.runIncident(eventID)
	if resolved.Outcome != "resolved" {
		t.Fatalf("incident ended %s", resolved.Outcome)
	}
	counts, twice := s.eventCounts(id)
	if counts[events.VaultUnsealed] != 1 || counts[events.AccessRevoked] != 1 || len(twice) > 0 {
		t.Fatalf("vault.unsealed %d, access.revoked %d in the stream (ids twice: %v): the poisoned ids dropped the response",
			counts[events.VaultUnsealed], counts[events.AccessRevoked], twice)
	}
	log, err := os.ReadFile(filepath.Join(s.stack.Dir, "containment.log"))
	must(t, err)
	if !strings.Contains(string(log), "ALARM: an event's message id was taken") {
		t.Fatal("containment raised no alarm for the forged message ids")
	}
}
