package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/webhook"
	"github.com/lockdown/lockdown/pkg/platform/config"
	"github.com/lockdown/lockdown/pkg/platform/natsconn"
	"github.com/lockdown/lockdown/pkg/platform/runner"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/services/notifier/internal/app"
	"github.com/lockdown/lockdown/services/notifier/internal/notify"
	"github.com/lockdown/lockdown/services/notifier/internal/store"
	"github.com/lockdown/lockdown/testkit/localstack"
	"github.com/lockdown/lockdown/testkit/tenantseed"
	"github.com/lockdown/lockdown/testkit/testwait"
)

const (
	tenantCount = 50
	goneTenant  = 49 // its webhook answers 410 Gone: a permanent failure
)

// receiver is a tenant's webhook endpoint: it records every request.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	requests map[string][]hook // tenant → requests
}

type hook struct {
	timestamp, signature, delivery string
	body                           []byte
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{requests: map[string][]hook{}}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		tenant := strings.TrimPrefix(req.URL.Path, "/hooks/")
		r.mu.Lock()
		r.requests[tenant] = append(r.requests[tenant], hook{req.Header.Get(webhook.HeaderTimestamp), req.Header.Get(webhook.HeaderSignature), req.Header.Get(webhook.HeaderDelivery), body})
		r.mu.Unlock()
		if tenant == tenantseed.ID(goneTenant) {
			w.WriteHeader(http.StatusGone)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) snapshot() map[string][]hook {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]hook{}
	for k, v := range r.requests {
		out[k] = append([]hook(nil), v...)
	}
	return out
}

// lockedBuffer collects the notifier's log while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// mailbox reads every message Mailpit holds, with its bodies and headers.
func mailbox(t *testing.T, ctx context.Context, s *localstack.Stack) []localstack.Message {
	t.Helper()
	msgs, err := s.Mailpit.Messages(ctx)
	must(t, err)
	return msgs
}

func incidentOf(m localstack.Message) string {
	if h := m.Headers["X-Lockdown-Incident"]; len(h) == 1 {
		return h[0]
	}
	return ""
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func connect(t testing.TB, ctx context.Context, s *localstack.Stack, user string) *natsconn.Conn {
	t.Helper()
	conn, err := natsconn.Connect(ctx, natsconn.Options{URL: s.NATS.URL, User: user, Password: s.NATS.Password(user)})
	must(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// startIncident announces what the rotator's planner waits for.
func startIncident(t testing.TB, ctx context.Context, s *localstack.Stack, id string, affected []string) {
	t.Helper()
	must(t, stream.NewPublisher(connect(t, ctx, s, events.ServiceAssessor).JS, events.SourceOf(events.ServiceAssessor), nil).
		PublishWithID(ctx, events.AssessmentCompleted, id+"/assessment", events.AssessmentCompletedData{IncidentID: id, Scope: "limited",
			AffectedTenants: affected, WindowStart: time.Now().Add(-time.Hour), WindowEnd: time.Now()}))
	must(t, stream.NewPublisher(connect(t, ctx, s, events.ServiceContainment).JS, events.SourceOf(events.ServiceContainment), nil).
		PublishWithID(ctx, events.AccessRevoked, id+"/revoked", events.AccessRevokedData{IncidentID: id}))
}

// startNotifier runs the notifier in this process with the stack's
// settings, as its binary would read them from the environment.
func startNotifier(t *testing.T, ctx context.Context, s *localstack.Stack, logOut io.Writer, overrides ...string) {
	t.Helper()
	env := map[string]string{}
	for _, kv := range append(s.Env(events.ServiceNotifier), overrides...) {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	cfg := &app.Config{}
	must(t, config.LoadFrom(cfg, func(k string) (string, bool) { v, ok := env[k]; return v, ok }))
	db, err := store.Open(ctx, cfg.DatabaseURL)
	must(t, err)
	conn := connect(t, ctx, s, events.ServiceNotifier)
	must(t, stream.VerifyTopology(ctx, conn.JS, events.ServiceNotifier))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- app.Serve(runCtx, runner.NewRuntime(events.ServiceNotifier, slog.New(slog.NewJSONHandler(logOut, nil)), nil, nil, conn), cfg, app.Adapters{Store: db})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("notifier: %v", err)
		}
		db.Close()
	})
}

func startRotator(t *testing.T, s *localstack.Stack) {
	t.Helper()
	bin, err := localstack.Service(events.ServiceRotator)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Spawn("rotator", bin, nil, s.Env(events.ServiceRotator))
	must(t, err)
}

func awaitNotified(t *testing.T, ctx context.Context, js jetstream.JetStream, id string) events.NotificationsCompletedData {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	_, d, err := stream.Await(wctx, js, events.NotificationsCompleted, func(_ event.Event, d events.NotificationsCompletedData) bool { return d.IncidentID == id })
	must(t, err)
	return d
}

// idle waits until the notifier's consumer has nothing pending or in flight.
func idle(t *testing.T, ctx context.Context, js jetstream.JetStream) {
	t.Helper()
	testwait.For(t, time.Minute, "the notifier to settle every message", func() bool {
		c, err := js.Consumer(ctx, events.StreamEvents, events.ConsumerNotifier)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
}

// TestNotifier notifies 50 rotated tenants by email (Mailpit) and webhook
// (a local receiver), then proves redelivery sends nothing new and a mail
// relay that is away delays but loses nothing.
func TestNotifier(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.Options{NATS: true, NATSAuth: true, Postgres: true, Vault: true, Mailpit: true})
	pool, err := pgxpool.New(ctx, s.Postgres.URL)
	must(t, err)
	t.Cleanup(pool.Close)
	t.Cleanup(func() { checkOutcomeCounts(t, pool) })
	root, err := s.Vault.Client()
	must(t, err)
	recv := newReceiver(t)
	withWebhook := func(i int) bool { return i%5 == 0 || i == goneTenant }
	tenants, err := tenantseed.Seed(ctx, pool, root, tenantseed.Options{Count: tenantCount, WebhookURL: func(i int) string {
		if withWebhook(i) {
			return recv.URL + "/hooks/" + tenantseed.ID(i)
		}
		return ""
	}})
	must(t, err)
	// One tenant's address no relay would take: a permanent failure.
	badAddress := tenantseed.ID(7)
	_, err = pool.Exec(ctx, `UPDATE directory.tenants SET contact_email = 'not an address' WHERE id = $1`, badAddress)
	must(t, err)

	logs := &lockedBuffer{}
	startNotifier(t, ctx, s, logs)
	startRotator(t, s)
	operator := connect(t, ctx, s, events.UserOperator).JS

	incident := "inc-" + uuid.NewString()
	affected := map[string]bool{}
	var affectedIDs []string
	for i := range 12 {
		affected[tenantseed.ID(i*3)] = true
		affectedIDs = append(affectedIDs, tenantseed.ID(i*3))
	}
	startIncident(t, ctx, s, incident, affectedIDs)
	done := awaitNotified(t, ctx, operator, incident)
	idle(t, ctx, operator)

	t.Run("every tenant has a final state and the counts say so", func(t *testing.T) {
		if done.Sent != tenantCount-1 || done.Failed != 1 {
			t.Fatalf("notifications.completed: sent %d, failed %d; want %d and 1", done.Sent, done.Failed, tenantCount-1)
		}
	})

	messages := mailbox(t, ctx, s)
	t.Run("Mailpit holds exactly one message per tenant, the right variant, with the incident id", func(t *testing.T) {
		perTenant := map[string]int{}
		for _, m := range messages {
			if len(m.To) != 1 {
				t.Fatalf("message %s has %d recipients", m.ID, len(m.To))
			}
			id := strings.TrimSuffix(strings.TrimPrefix(m.To[0].Address, "security@"), ".example.com")
			perTenant[id]++
			if m.Subject != notify.DefaultSubject {
				t.Errorf("%s: subject %q", id, m.Subject)
			}
			if incidentOf(m) != incident || !strings.Contains(m.Text, incident) || !strings.Contains(m.HTML, incident) {
				t.Errorf("%s: the incident id is missing (header %q)", id, incidentOf(m))
			}
			if want := notify.MessageID(incident, id, "localhost"); "<"+m.MessageID+">" != want {
				t.Errorf("%s: Message-ID <%s>, want %s", id, m.MessageID, want)
			}
			accessed := strings.Contains(m.Text, "secrets were accessed by an")
			precaution := strings.Contains(m.Text, "We have no evidence")
			if accessed != affected[id] || precaution == affected[id] {
				t.Errorf("%s: affected %v but the message is the other variant", id, affected[id])
			}
			for _, want := range []string{"Regenerate your API keys", "Email sending continues to operate normally", "._domainkey." + id + ".example.com"} {
				if !strings.Contains(m.Text, want) {
					t.Errorf("%s: the text does not say %q", id, want)
				}
			}
		}
		for _, tn := range tenants {
			want := 1
			if tn.ID == badAddress {
				want = 0
			}
			if perTenant[tn.ID] != want {
				t.Errorf("%s: %d messages, want %d", tn.ID, perTenant[tn.ID], want)
			}
		}
	})

	hooks := recv.snapshot()
	t.Run("each webhook arrives once with a signature that verifies, and fails with one byte changed", func(t *testing.T) {
		for i, tn := range tenants {
			if !withWebhook(i) {
				if len(hooks[tn.ID]) != 0 {
					t.Errorf("%s has no webhook but got %d", tn.ID, len(hooks[tn.ID]))
				}
				continue
			}
			if len(hooks[tn.ID]) != 1 {
				t.Fatalf("%s: %d webhook requests, want 1", tn.ID, len(hooks[tn.ID]))
			}
			h := hooks[tn.ID][0]
			secret := webhook.TenantSecret([]byte(s.Mailpit.WebhookSecret), tn.ID)
			if err := webhook.Verify(secret, h.timestamp, h.signature, h.body, time.Now(), 10*time.Minute); err != nil {
				t.Fatalf("%s: %v", tn.ID, err)
			}
			tampered := append([]byte(nil), h.body...)
			tampered[len(tampered)/2] ^= 0x01
			if err := webhook.Verify(secret, h.timestamp, h.signature, tampered, time.Now(), 10*time.Minute); !errors.Is(err, webhook.ErrBadSignature) {
				t.Fatalf("%s: a changed byte verified: %v", tn.ID, err)
			}
			var n webhook.Notification
			must(t, json.Unmarshal(h.body, &n))
			if n.IncidentID != incident || n.TenantID != tn.ID || n.Affected != affected[tn.ID] || n.DKIMRecord == "" || n.APIKeysRevoked != len(tn.APIKeyPaths) {
				t.Errorf("%s: webhook body %+v", tn.ID, n)
			}
		}
	})

	t.Run("permanent failures are reported and dead-lettered, the others still go out", func(t *testing.T) {
		for _, want := range []struct{ tenant, channel string }{{badAddress, notify.ChannelEmail}, {tenantseed.ID(goneTenant), notify.ChannelWebhook}} {
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			_, d, err := stream.Await(wctx, operator, events.NotificationFailed, func(_ event.Event, d events.NotificationFailedData) bool {
				return d.IncidentID == incident && d.TenantID == want.tenant && d.Channel == want.channel
			})
			cancel()
			if err != nil {
				t.Fatalf("no notification.failed for %s/%s: %v", want.tenant, want.channel, err)
			}
			t.Logf("%s/%s failed: %s", want.tenant, want.channel, d.Reason)
		}
		var dead int
		must(t, pool.QueryRow(ctx, `SELECT count(*) FROM notifier.deliveries WHERE incident_id = $1 AND state = 'failed'`, incident).Scan(&dead))
		if dead != 2 {
			t.Errorf("%d failed deliveries recorded, want 2", dead)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if _, _, err := stream.Await(wctx, operator, events.DeadLetter, func(_ event.Event, d events.DeadLetterData) bool {
			return d.Consumer == events.ConsumerNotifier && strings.Contains(d.Reason, "not an address")
		}); err != nil {
			t.Fatalf("no dead letter for the refused address: %v", err)
		}
	})

	t.Run("no secret from Vault appears in any message or webhook", func(t *testing.T) {
		kv := root.KVv2(localstack.VaultKVMount)
		var secrets []string
		for _, tn := range tenants {
			for _, p := range []string{"ssh", "smtp", "dkim"} {
				sec, err := kv.Get(ctx, "tenants/"+tn.ID+"/"+p)
				must(t, err)
				for _, field := range []string{"private_key", "password"} {
					if v, ok := sec.Data[field].(string); ok && v != "" {
						secrets = append(secrets, v)
					}
				}
			}
		}
		if len(secrets) != 3*tenantCount {
			t.Fatalf("read %d secret values from Vault, want %d", len(secrets), 3*tenantCount)
		}
		var corpus strings.Builder
		for _, m := range messages {
			corpus.WriteString(m.Text + m.HTML)
		}
		for _, hs := range hooks {
			for _, h := range hs {
				corpus.Write(h.body)
			}
		}
		corpus.WriteString(logs.String())
		for _, sec := range secrets {
			if strings.Contains(corpus.String(), sec) {
				t.Fatal("a secret value from Vault appears in a notification or the notifier's log")
			}
		}
	})

	t.Run("redelivering every rotation.tenant.completed sends nothing new", func(t *testing.T) {
		republished := 0
		var completions []events.RotationTenantCompletedData
		must(t, stream.Scan(ctx, operator, events.StreamEvents, events.RotationTenantCompleted.Subject(), false, func(m *jetstream.RawStreamMsg) bool {
			ev, _, err := events.Decode(m.Header, m.Data)
			must(t, err)
			d, err := events.DataAs[events.RotationTenantCompletedData](ev)
			must(t, err)
			if d.IncidentID == incident {
				completions = append(completions, d)
			}
			return len(completions) < tenantCount
		}))
		// Republished as the rotator: only the rotator may publish it.
		pub := stream.NewPublisher(connect(t, ctx, s, events.ServiceRotator).JS, events.SourceOf(events.ServiceRotator), nil)
		for _, d := range completions {
			_, err := pub.Publish(ctx, events.RotationTenantCompleted, d)
			must(t, err) // a new event id: a true redelivery of the content
			republished++
		}
		if republished < tenantCount {
			t.Fatalf("republished %d events", republished)
		}
		idle(t, ctx, operator)
		if got := len(mailbox(t, ctx, s)); got != len(messages) {
			t.Fatalf("Mailpit holds %d messages after redelivery, had %d", got, len(messages))
		}
		for id, hs := range recv.snapshot() {
			if len(hs) != len(hooks[id]) {
				t.Fatalf("%s: %d webhooks after redelivery, had %d", id, len(hs), len(hooks[id]))
			}
		}
	})

	t.Run("a mail relay that refuses for a while delays the notifications but loses none", func(t *testing.T) {
		must(t, s.StopMailpit())
		second := "inc-" + uuid.NewString()
		startIncident(t, ctx, s, second, nil)
		testwait.For(t, 3*time.Minute, "sends to be refused and retried", func() bool {
			c, err := operator.Consumer(ctx, events.StreamEvents, events.ConsumerNotifier)
			if err != nil {
				return false
			}
			info, err := c.Info(ctx)
			return err == nil && info.NumRedelivered > 0
		})
		must(t, s.StartMailpit(ctx))
		d := awaitNotified(t, ctx, operator, second)
		if d.Sent != tenantCount-1 || d.Failed != 1 {
			t.Fatalf("second incident: sent %d, failed %d", d.Sent, d.Failed)
		}
		idle(t, ctx, operator)
		perTenant := map[string]int{}
		for _, m := range mailbox(t, ctx, s) {
			if incidentOf(m) == second {
				perTenant[m.To[0].Address]++
			}
		}
		if len(perTenant) != tenantCount-1 {
			t.Fatalf("%d tenants have the second incident's message, want %d", len(perTenant), tenantCount-1)
		}
		for addr, n := range perTenant {
			if n != 1 {
				t.Errorf("%s got %d messages for the second incident", addr, n)
			}
		}
	})
	t.Run("a tenant whose rotation failed gets one notice that says so, by email and webhook", func(t *testing.T) {
		third := "inc-" + uuid.NewString()
		tenant := tenantseed.ID(5) // has a webhook (i%5 == 0)
		rotator := stream.NewPublisher(connect(t, ctx, s, events.ServiceRotator).JS, events.SourceOf(events.ServiceRotator), nil)
		for range 2 { // the rotator's event, delivered twice
			must(t, rotator.PublishWithID(ctx, events.RotationTenantFailed, third+"/"+tenant+"/failed",
				events.RotationTenantFailedData{IncidentID: third, TenantID: tenant, Step: "smtp", Reason: "vault: permission denied", Replaced: []string{"ssh"}}))
		}
		var got []localstack.Message
		testwait.For(t, time.Minute, "the incomplete-rotation notice", func() bool {
			got = nil
			for _, m := range mailbox(t, ctx, s) {
				if incidentOf(m) == third {
					got = append(got, m)
				}
			}
			return len(got) > 0
		})
		idle(t, ctx, operator)
		if len(got) != 1 || got[0].To[0].Address != "security@"+tenant+".example.com" {
			t.Fatalf("%d messages for the failed tenant's incident", len(got))
		}
		if !strings.Contains(got[0].Text, "did NOT complete") || !strings.Contains(got[0].Text, `"smtp"`) || strings.Contains(got[0].Text, "permission denied") ||
			!strings.Contains(got[0].Text, "SSH key: replaced") || !strings.Contains(got[0].Text, "SMTP credentials: not replaced yet") {
			t.Fatalf("the notice:\n%s", got[0].Text)
		}
		hooks := recv.snapshot()[tenant]
		var last webhook.Notification
		if len(hooks) == 0 || json.Unmarshal(hooks[len(hooks)-1].body, &last) != nil || !last.RotationIncomplete || last.FailedStep != "smtp" || last.IncidentID != third ||
			len(last.Rotated) != 1 || last.Rotated[0] != "ssh" {
			t.Fatalf("webhook: %d requests, last %+v", len(hooks), last)
		}
	})
	if t.Failed() {
		fmt.Fprintln(os.Stderr, "notifier log:\n"+logs.String())
	}
}

// TestNotifierTenantDeadline: one tenant's webhook answers 503 to
// everything. Before, its notice was retried forever, notifications.completed
// never came and the platform's access was never restored. Now the tenant
// is recorded late at its deadline, the phase completes, the delivery goes
// on, and once the webhook answers a corrected completion says it was told.
func TestNotifierTenantDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.Options{NATS: true, NATSAuth: true, Postgres: true, Vault: true, Mailpit: true})
	pool, err := pgxpool.New(ctx, s.Postgres.URL)
	must(t, err)
	t.Cleanup(pool.Close)
	t.Cleanup(func() { checkOutcomeCounts(t, pool) })
	root, err := s.Vault.Client()
	must(t, err)
	var down atomic.Bool
	down.Store(true)
	var calls atomic.Int64
	hookSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(hookSrv.Close)
	const n = 3
	hostage := tenantseed.ID(0)
	_, err = tenantseed.Seed(ctx, pool, root, tenantseed.Options{Count: n, WebhookURL: func(i int) string {
		if i == 0 {
			return hookSrv.URL + "/hooks/" + hostage
		}
		return ""
	}})
	must(t, err)
	// The hostage has no email: only its webhook can reach it.
	_, err = pool.Exec(ctx, `UPDATE directory.tenants SET contact_email = 'not an address' WHERE id = $1`, hostage)
	must(t, err)
	startNotifier(t, ctx, s, io.Discard, "LOCKDOWN_NOTIFY_TENANT_DEADLINE=3s")
	startRotator(t, s)
	operator := connect(t, ctx, s, events.UserOperator).JS
	incident := "inc-" + uuid.NewString()
	startIncident(t, ctx, s, incident, nil)

	first := awaitNotified(t, ctx, operator, incident)
	if first.Sent != n-1 || first.Late != 1 || first.Failed != 0 {
		t.Fatalf("notifications.completed at the deadline: sent %d, late %d, failed %d; want %d, 1, 0", first.Sent, first.Late, first.Failed, n-1)
	}
	before := calls.Load()
	testwait.For(t, 30*time.Second, "the late notice to be tried again after the deadline", func() bool { return calls.Load() > before })
	down.Store(false)
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer wcancel()
	_, corrected, err := stream.Await(wctx, operator, events.NotificationsCompleted, func(_ event.Event, d events.NotificationsCompletedData) bool {
		return d.IncidentID == incident && d.Corrected
	})
	must(t, err)
	if corrected.Sent != n || corrected.Late != 0 {
		t.Fatalf("corrected completion: sent %d, late %d; want %d, 0", corrected.Sent, corrected.Late, n)
	}
}

// checkOutcomeCounts fails the test when the counters the database keeps
// per incident (migration 003) differ from a count of the outcomes
// themselves, for any incident the test made.
func checkOutcomeCounts(t testing.TB, pool *pgxpool.Pool) {
	t.Helper()
	rows, err := pool.Query(context.Background(), `WITH want AS (
		SELECT incident_id, count(*) FILTER (WHERE state = 'sent') s, count(*) FILTER (WHERE state = 'failed') f,
		  count(*) FILTER (WHERE state = 'late') l FROM notifier.outcomes GROUP BY incident_id)
	SELECT coalesce(w.incident_id, c.incident_id), concat_ws(' ', w.s, w.f, w.l), concat_ws(' ', c.sent, c.failed, c.late)
	FROM want w FULL JOIN notifier.outcome_counts c ON c.incident_id = w.incident_id
	WHERE concat_ws(' ', w.s, w.f, w.l) IS DISTINCT FROM concat_ws(' ', c.sent, c.failed, c.late)
	  AND NOT (w.incident_id IS NULL AND c.sent = 0 AND c.failed = 0 AND c.late = 0)`)
	if err != nil {
		t.Errorf("outcome counters: %v", err)
		return
	}
	var incident, want, got string
	if _, err := pgx.ForEachRow(rows, []any{&incident, &want, &got}, func() error {
		t.Errorf("incident %s: outcomes sent/failed/late %q, the counters say %q", incident, want, got)
		return nil
	}); err != nil {
		t.Errorf("outcome counters: %v", err)
	}
}
