package cli

import (
	"bytes"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// TestRetryFailedTenant: a tenant the intruder read but the directory
// lacks fails its rotation (an unknown tenant is a permanent failure, the
// one kind that ends a tenant); the incident ends with it failed. The
// operator adds it to the directory and runs `lockdown retry`: it is
// rotated and told, and the corrected totals reach rotation.completed,
// notifications.completed and the stored report.
func TestRetryFailedTenant(t *testing.T) {
	const tenants = 3
	s := newSystem(t, 15*time.Minute, tenants)
	s.startAll(nil)
	root, err := s.stack.Vault.Client()
	must(t, err)
	const ghost = "tenant-ghost"
	for _, secret := range []string{"ssh", "smtp", "dkim"} {
		_, err := root.KVv2(localstack.VaultKVMount).Put(s.ctx, "tenants/"+ghost+"/"+secret, map[string]any{"value": "issued before the incident"})
		must(t, err)
	}
	must(t, root.Sys().PutPolicyWithContext(s.ctx, "ghost-reader", `path "secret/data/tenants/*" { capabilities = ["read"] }`))
	tok, err := root.Auth().Token().CreateWithContext(s.ctx, &vault.TokenCreateRequest{Policies: []string{"ghost-reader"}, DisplayName: "intruder"})
	must(t, err)
	intruder, err := root.Clone()
	must(t, err)
	intruder.SetToken(tok.Auth.ClientToken)
	_, err = intruder.KVv2(localstack.VaultKVMount).Get(s.ctx, "tenants/"+ghost+"/ssh")
	must(t, err)

	id, resolved := s.runIncident(s.breach("an intruder read a tenant the directory does not know"))
	if resolved.Outcome != "resolved" || resolved.TenantsRotated != tenants {
		t.Fatalf("incident.resolved %+v, want %d tenants rotated and %s failed", resolved, tenants, ghost)
	}
	failed := await(s, events.RotationTenantFailed, time.Minute, func(d events.RotationTenantFailedData) bool { return d.IncidentID == id && d.TenantID == ghost })
	if failed.Step != "plan" {
		t.Fatalf("rotation.tenant.failed %+v", failed)
	}

	// The cause is mended: the tenant is in the directory now.
	_, err = s.directory.Exec(s.ctx, `INSERT INTO directory.tenants (id, name, domain, contact_email) VALUES ($1, 'Ghost', 'ghost.example', 'security@ghost.example')`, ghost)
	must(t, err)
	t.Setenv("LOCKDOWN_NATS_URL", s.stack.NATS.URL)
	t.Setenv("LOCKDOWN_NATS_PASSWORD", s.stack.NATS.Password(events.UserOperator))
	var out, errOut bytes.Buffer
	if code := Main(s.ctx, []string{"retry", id, "--tenant", ghost, "--as", "bob@soc"}, &out, &errOut); code != ExitOK {
		t.Fatalf("lockdown retry: exit %d: %s", code, errOut.String())
	}
	rotated := await(s, events.RotationCompleted, 2*time.Minute, func(d events.RotationCompletedData) bool { return d.IncidentID == id && d.Retry == 1 })
	if rotated.Completed != tenants+1 || rotated.Failed != 0 {
		t.Fatalf("corrected rotation.completed %+v", rotated)
	}
	notified := await(s, events.NotificationsCompleted, 2*time.Minute, func(d events.NotificationsCompletedData) bool { return d.IncidentID == id && d.Corrected })
	if notified.Sent != tenants+1 || notified.Failed != 0 {
		t.Fatalf("corrected notifications.completed %+v", notified)
	}
	msgs, err := s.stack.Mailpit.Messages(s.ctx)
	must(t, err)
	told := 0
	for _, m := range msgs {
		for _, to := range m.To {
			if to.Address == "security@ghost.example" {
				told++
			}
		}
	}
	if told != 1 {
		t.Fatalf("%s got %d messages, want 1", ghost, told)
	}
	var r struct{ Rotated, Notified int }
	deadline := time.Now().Add(time.Minute)
	for {
		rep, err := s.report(id)
		must(t, err)
		r.Rotated, r.Notified = rep.Actions.TenantsRotated, rep.Actions.TenantsNotified
		if r.Rotated == tenants+1 && r.Notified == tenants+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the report still says %d rotated and %d notified", r.Rotated, r.Notified)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Nothing to retry any more: the request ends as a dead letter that
	// says so, and nothing else changes.
	if code := Main(s.ctx, []string{"retry", id, "--tenant", ghost}, &out, &errOut); code != ExitOK {
		t.Fatalf("lockdown retry: exit %d", code)
	}
	s.settled()
}
