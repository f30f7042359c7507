package app_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	vault "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/pkg/platform/natsconn"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/testkit/localstack"
	"github.com/lockdown/lockdown/testkit/testwait"
)

// TestPlatformCatalogue rotates the platform-wide credentials of
// deploy/rotation/catalogue.json on a real Vault and PostgreSQL — transit
// keys, the database engine's root and static-role passwords, PKI
// certificates, platform KV secrets — with rotators killed (SIGKILL) after
// recorded steps, and checks each in the real thing: the old database
// passwords no longer log in and the new ones do, the old certificates are
// on the CRL and the new one is not, each transit key moved exactly one
// version, and each secret's listed fields changed while the others kept
// their values.
func TestPlatformCatalogue(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const tenants = 3
	f := seed(t, ctx, tenants)
	estate, err := f.s.SeedPlatform(ctx)
	must(t, err)
	js := operator(t, ctx, f.s)

	// Before: what each credential is now (read with the root token).
	staticBefore := staticPassword(t, ctx, f.root, estate.StaticRole)
	logsIn(t, ctx, f.s, estate.RootUser, estate.RootPassword(), true)
	logsIn(t, ctx, f.s, estate.StaticUser, staticBefore, true)
	secretsBefore := map[string]map[string]any{}
	for _, p := range estate.Secrets {
		secretsBefore[p] = kvData(t, ctx, f.root, p)
	}

	incident := "inc-platform"
	bin, err := localstack.Service(events.ServiceRotator)
	must(t, err)
	startIncident(t, ctx, f.s, incident, nil)
	// Killed right after a write to Vault and before it is recorded, in
	// four processes one after another: a transit rotation, a database
	// rotation, a certificate issued or kept, a revocation or a patched
	// secret — whichever each process reaches (each kill point is a write
	// no earlier process made). A recorded step then killed is the
	// easier case, once.
	for i, point := range []string{"rotator.platform.written:1", "rotator.platform.written:4", "rotator.platform.written:2", "rotator.platform.saved:3", "rotator.platform.written:3"} {
		pid, _, err := f.s.Spawn(fmt.Sprintf("rotator-crash-%d", i), bin, nil,
			append(f.s.Env(events.ServiceRotator), "LOCKDOWN_TEST_FAILPOINTS="+point, "LOCKDOWN_ROTATION_CONCURRENCY=1", "LOCKDOWN_PREGENERATE=false"))
		must(t, err)
		select {
		case <-f.s.Exited(pid):
		case <-time.After(2 * time.Minute):
			t.Fatalf("the rotator did not reach failpoint %s", point)
		}
	}
	startRotators(t, f.s, 1)
	done := awaitCompleted(t, ctx, js, incident)
	if done.Completed != tenants || done.Failed != 0 || done.Platform != 4 || done.PlatformFailed != 0 {
		t.Fatalf("rotation.completed %+v, want %d tenants and 4 platform entries completed", done, tenants)
	}

	t.Run("each entry announces its kind's result", func(t *testing.T) {
		results := map[string]events.RotationPlatformCompletedData{}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_, _, err := stream.Await(wctx, js, events.RotationPlatformDone, func(_ event.Event, d events.RotationPlatformCompletedData) bool {
			if d.IncidentID == incident {
				results[d.Entry] = d
			}
			return len(results) == 4
		})
		must(t, err)
		want := map[string]struct {
			kind  credentials.Kind
			count int
		}{"platform-transit": {credentials.Transit, 2}, "platform-database": {credentials.Database, 2}, "platform-pki": {credentials.PKI, 1}, "platform-secrets": {credentials.KV, 3}}
		for name, w := range want {
			r := results[name].Result
			if r.Kind != w.kind || r.State != credentials.Rotated || r.Count != w.count {
				t.Errorf("%s: %+v, want %s rotated ×%d", name, r, w.kind, w.count)
			}
		}
	})
	t.Run("a forged job for an entry no plan has touches nothing in Vault", func(t *testing.T) {
		// A rotator's stolen NATS credential may publish jobs: one for an
		// incident never planned must not rotate the platform's keys.
		conn, err := natsconn.Connect(ctx, natsconn.Options{URL: f.s.NATS.URL, User: events.ServiceRotator, Password: f.s.NATS.Password(events.ServiceRotator)})
		must(t, err)
		defer func() { _ = conn.Close(context.Background()) }()
		must(t, stream.NewPublisher(conn.JS, events.SourceOf(events.ServiceRotator), nil).PublishWithID(ctx, events.RotationPlatformJob, "inc-forged/platform/platform-transit",
			events.RotationPlatformJobData{IncidentID: "inc-forged", Entry: "platform-transit", Kind: credentials.Transit}))
		testwait.For(t, time.Minute, "the forged job's dead letter", func() bool {
			dls, err := js.Stream(ctx, events.StreamDeadLetters)
			if err != nil {
				return false
			}
			di, err := dls.Info(ctx, jetstream.WithSubjectFilter(events.DeadLetterSubject(events.ConsumerRotatorJobs)))
			return err == nil && di.State.Subjects[events.DeadLetterSubject(events.ConsumerRotatorJobs)] == 1
		})
		var rows int
		must(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM rotator.platform_jobs WHERE incident_id = 'inc-forged'`).Scan(&rows))
		if rows != 0 {
			t.Errorf("the forged job left %d rows", rows)
		}
	})
	t.Run("each transit key moved exactly one version", func(t *testing.T) {
		for _, k := range estate.TransitKeys {
			s, err := f.root.Logical().ReadWithContext(ctx, "transit/keys/"+k)
			must(t, err)
			if v := fmt.Sprint(s.Data["latest_version"]); v != "2" {
				t.Errorf("transit key %s at version %s, want 2 (rotated once, whatever crashed)", k, v)
			}
		}
	})
	t.Run("the old database passwords no longer log in and the new ones do", func(t *testing.T) {
		logsIn(t, ctx, f.s, estate.RootUser, estate.RootPassword(), false)
		logsIn(t, ctx, f.s, estate.StaticUser, staticBefore, false)
		staticAfter := staticPassword(t, ctx, f.root, estate.StaticRole)
		if staticAfter == staticBefore {
			t.Fatal("the static role's password did not change")
		}
		logsIn(t, ctx, f.s, estate.StaticUser, staticAfter, true)
	})
	t.Run("the old certificates are revoked and the new one is kept", func(t *testing.T) {
		crl := revokedSerials(t, ctx, f.root)
		for _, s := range estate.CertSerials {
			if !crl[credentials.NormalSerial(s)] {
				t.Errorf("certificate %s (issued before the incident) is not on the CRL", s)
			}
		}
		kept := kvData(t, ctx, f.root, estate.CertStore)
		serial, _ := kept["serial_number"].(string)
		if serial == "" || slices.Contains(estate.CertSerials, serial) || crl[credentials.NormalSerial(serial)] {
			t.Errorf("the kept certificate %q is not a new, valid one", serial)
		}
		if pk, _ := kept["private_key"].(string); !strings.Contains(pk, "PRIVATE KEY") {
			t.Error("the kept certificate has no private key")
		}
	})
	t.Run("the listed fields of each platform secret changed and the others kept their values", func(t *testing.T) {
		for p, before := range secretsBefore {
			after := kvData(t, ctx, f.root, p)
			for field, old := range before {
				switch field {
				case "username":
					if after[field] != old {
						t.Errorf("%s: %s changed; it has no generator and must be kept", p, field)
					}
				default:
					if after[field] == old || after[field] == nil {
						t.Errorf("%s: %s was not rotated", p, field)
					}
				}
			}
		}
	})
}

func staticPassword(t *testing.T, ctx context.Context, root *vault.Client, role string) string {
	t.Helper()
	s, err := root.Logical().ReadWithContext(ctx, "database/static-creds/"+role)
	must(t, err)
	pw, _ := s.Data["password"].(string)
	return pw
}

// logsIn checks whether user logs in to the stack's PostgreSQL with pw.
func logsIn(t *testing.T, ctx context.Context, s *localstack.Stack, user, pw string, want bool) {
	t.Helper()
	conn, err := pgx.Connect(ctx, s.DatabaseURL(user, pw))
	if err == nil {
		_ = conn.Close(ctx)
	}
	if got := err == nil; got != want {
		t.Errorf("%s logs in with the password: %v, want %v (%v)", user, got, want, err)
	}
}

func kvData(t *testing.T, ctx context.Context, root *vault.Client, path string) map[string]any {
	t.Helper()
	s, err := root.KVv2(localstack.VaultKVMount).Get(ctx, path)
	must(t, err)
	return s.Data
}

// revokedSerials reads the PKI mount's CRL (DER).
func revokedSerials(t *testing.T, ctx context.Context, root *vault.Client) map[string]bool {
	t.Helper()
	resp, err := root.Logical().ReadRawWithContext(ctx, "pki/crl")
	must(t, err)
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	must(t, err)
	list, err := x509.ParseRevocationList(raw)
	must(t, err)
	out := map[string]bool{}
	for _, e := range list.RevokedCertificateEntries {
		out[credentials.NormalSerial(serialHex(e.SerialNumber))] = true
	}
	return out
}

func serialHex(n *big.Int) string { return fmt.Sprintf("%x", n) }

// TestPlatformRetry fails a catalogue entry that names a transit key Vault
// does not have — the entry is recorded failed, the plan completes and the
// failure is announced — then, once the key exists, `lockdown retry`
// (rotation.retry.requested) runs the entry again and the corrected
// completion counts it rotated.
func TestPlatformRetry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	f := seed(t, ctx, 2)
	js := operator(t, ctx, f.s)
	cat := filepath.Join(t.TempDir(), "catalogue.json")
	must(t, os.WriteFile(cat, []byte(`{"entries": [{"name": "late-key", "kind": "transit", "mount": "transit", "keys": ["later"]}]}`), 0o600))
	startRotators(t, f.s, 1, "LOCKDOWN_ROTATION_CATALOGUE="+cat)
	incident := "inc-platform-retry"
	startIncident(t, ctx, f.s, incident, nil)
	done := awaitCompleted(t, ctx, js, incident)
	if done.Completed != 2 || done.Platform != 0 || done.PlatformFailed != 1 {
		t.Fatalf("rotation.completed %+v, want 2 tenants and the entry failed", done)
	}
	wctx, cancelWait := context.WithTimeout(ctx, 30*time.Second)
	defer cancelWait()
	_, failed, err := stream.Await(wctx, js, events.RotationPlatformDone, func(_ event.Event, d events.RotationPlatformCompletedData) bool {
		return d.IncidentID == incident && d.Result.State == credentials.Failed
	})
	must(t, err)
	if !strings.Contains(failed.Result.Reason, "later") {
		t.Errorf("reason %q does not name the key", failed.Result.Reason)
	}

	if _, err := f.root.Logical().WriteWithContext(ctx, "transit/keys/later", nil); err != nil {
		t.Fatal(err)
	}
	conn, err := natsconn.Connect(ctx, natsconn.Options{URL: f.s.NATS.URL, User: events.UserOperator, Password: f.s.NATS.Password(events.UserOperator)})
	must(t, err)
	defer func() { _ = conn.Close(context.Background()) }()
	must(t, stream.NewPublisher(conn.JS, events.SourceOf(events.UserOperator), nil).PublishWithID(ctx, events.RotationRetryRequested, incident+"/retry-1",
		events.RotationRetryData{IncidentID: incident, RequestedBy: "test"}))
	rctx, cancelRetry := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelRetry()
	_, again, err := stream.Await(rctx, js, events.RotationCompleted, func(_ event.Event, d events.RotationCompletedData) bool {
		return d.IncidentID == incident && d.Retry == 1
	})
	must(t, err)
	if again.Platform != 1 || again.PlatformFailed != 0 || again.Completed != 2 {
		t.Fatalf("corrected rotation.completed %+v, want the entry rotated", again)
	}
	s, err := f.root.Logical().ReadWithContext(ctx, "transit/keys/later")
	must(t, err)
	if fmt.Sprint(s.Data["latest_version"]) != "2" {
		t.Errorf("the key is at version %v after the retry, want 2", s.Data["latest_version"])
	}
}
