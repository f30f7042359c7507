package notify_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/directory"
	"github.com/lockdown/lockdown/services/notifier/internal/notify"
)

// memStore is the delivery bookkeeping in memory, with the semantics of
// the PostgreSQL store (this tests the domain's decisions; the real store
// is exercised by the integration test).
type memStore struct {
	mu        sync.Mutex
	tenants   map[string]directory.Tenant
	rows      map[string]string // incident/tenant/channel → state
	claimedAt map[string]time.Time
	outcomes  map[string]string
	planned   map[string]int
	announced map[string][2]int
	failDB    bool
}

func newStore() *memStore {
	return &memStore{tenants: map[string]directory.Tenant{}, rows: map[string]string{}, claimedAt: map[string]time.Time{},
		outcomes: map[string]string{}, planned: map[string]int{}, announced: map[string][2]int{}}
}

func key(a ...string) string {
	out := ""
	for _, s := range a {
		out += s + "/"
	}
	return out
}

func (m *memStore) Tenant(_ context.Context, id string) (directory.Tenant, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tenants[id]
	if !ok {
		return t, directory.ErrUnknownTenant
	}
	return t, nil
}

func (m *memStore) Claim(_ context.Context, inc, ten, ch string, stale time.Duration) (string, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failDB {
		return "", false, errors.New("database away")
	}
	k := key(inc, ten, ch)
	prev, ok := m.rows[k]
	switch {
	case !ok:
		m.rows[k], m.claimedAt[k] = notify.StateSending, time.Now()
		return "", true, nil
	case prev == notify.StateSending && time.Since(m.claimedAt[k]) > stale:
		m.claimedAt[k] = time.Now()
		return prev, true, nil
	}
	return prev, false, nil
}

func (m *memStore) Release(_ context.Context, inc, ten, ch string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rows[key(inc, ten, ch)] == notify.StateSending {
		delete(m.rows, key(inc, ten, ch))
	}
	return nil
}

func (m *memStore) Finish(_ context.Context, inc, ten, ch, state, _ string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := key(inc, ten, ch)
	if cur, ok := m.rows[k]; !ok || cur == notify.StateSending {
		m.rows[k] = state
		return true, nil
	}
	return false, nil
}

func (m *memStore) Outcome(_ context.Context, inc, ten, state, _ string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.outcomes[key(inc, ten)]; !ok || (cur == notify.StateFailed && state == notify.StateSent) ||
		(cur == notify.StateLate && state != notify.StateLate) {
		m.outcomes[key(inc, ten)] = state
	}
	return nil
}

func (m *memStore) Plan(_ context.Context, inc string, n int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.planned[inc] = n
	return nil
}

func (m *memStore) Progress(_ context.Context, inc string) (notify.Progress, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sent, failed, late := 0, 0, 0
	for k, st := range m.outcomes {
		if len(k) > len(inc) && k[:len(inc)+1] == inc+"/" {
			switch st {
			case notify.StateSent:
				sent++
			case notify.StateLate:
				late++
			default:
				failed++
			}
		}
	}
	p := notify.Progress{Planned: m.planned[inc], Sent: sent, Failed: failed, Late: late}
	if a, ok := m.announced[inc]; ok {
		p.Announced = &a
	}
	return p, nil
}

func (m *memStore) Announced(_ context.Context, inc string, sent, failed int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.announced[inc] = [2]int{sent, failed}
	return nil
}

type mailer struct {
	mu   sync.Mutex
	sent []notify.Email
	err  error
}

func (f *mailer) Send(_ context.Context, e notify.Email) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.sent = append(f.sent, e)
	return nil
}

type hooks struct{ posts int }

func (h *hooks) Post(context.Context, string, string, string, []byte) error { h.posts++; return nil }

type publisher struct {
	mu  sync.Mutex
	ids map[string]events.Name
}

func (p *publisher) PublishWithID(_ context.Context, name events.Name, id string, _ any) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ids[id] = name // JetStream keeps one per id
	return nil
}

func (p *publisher) count(name events.Name) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, v := range p.ids {
		if v == name {
			n++
		}
	}
	return n
}

type noLimit struct{}

func (noLimit) Wait(context.Context) error { return nil }
func (noLimit) Accepted()                  {}
func (noLimit) Refused()                   {}

func setup(t *testing.T) (*notify.Notifier, *memStore, *mailer, *hooks, *publisher) {
	t.Helper()
	tpl, err := notify.LoadTemplates("", notify.DefaultSubject)
	if err != nil {
		t.Fatal(err)
	}
	st, m, h, p := newStore(), &mailer{}, &hooks{}, &publisher{ids: map[string]events.Name{}}
	st.tenants["acme"] = directory.Tenant{ID: "acme", Name: "Acme", Domain: "acme.example", ContactEmail: "sec@acme.example", WebhookURL: "https://hooks.acme.example/x"}
	st.tenants["beta"] = directory.Tenant{ID: "beta", Name: "Beta", Domain: "beta.example", ContactEmail: "sec@beta.example"}
	n := notify.New(notify.Config{From: "security@platform.example", InFlight: 30 * time.Second}, st, m, h, tpl, p, noLimit{},
		noop.NewTracerProvider().Tracer("test"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	return n, st, m, h, p
}

func rotated(tenant string) events.RotationTenantCompletedData {
	return events.RotationTenantCompletedData{IncidentID: "inc", TenantID: tenant, DKIMSelector: "s1", DKIMRecord: "v=DKIM1; p=x", APIKeysDestroyed: 1, SMTPPasswordRotate: true}
}

func TestNotifier(t *testing.T) {
	ctx := context.Background()
	t.Run("each channel is sent once however often the event comes", func(t *testing.T) {
		n, _, m, h, p := setup(t)
		for range 3 {
			if err := n.Rotated(ctx, rotated("acme"), time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		if len(m.sent) != 1 || h.posts != 1 || p.count(events.NotificationSent) != 2 {
			t.Fatalf("mails %d, webhooks %d, sent events %d", len(m.sent), h.posts, p.count(events.NotificationSent))
		}
		if m.sent[0].MessageID != notify.MessageID("inc", "acme", "platform.example") {
			t.Errorf("Message-ID %s", m.sent[0].MessageID)
		}
		for _, want := range []string{"Get your new SMTP credentials in your dashboard", "TXT s1._domainkey.acme.example", "v=DKIM1; p=x"} {
			if !strings.Contains(m.sent[0].Text, want) {
				t.Errorf("the notice does not say where to find %q", want)
			}
		}
	})
	t.Run("a tenant whose rotation failed is told once, apart from the rotated notice a retry sends later", func(t *testing.T) {
		n, st, m, h, p := setup(t)
		failed := events.RotationTenantFailedData{IncidentID: "inc", TenantID: "acme", Step: "dkim", Reason: "vault: permission denied",
			Replaced: []string{"ssh", "smtp", "api_keys"}, APIKeysDestroyed: 3}
		for range 2 { // a second failure (after a retry) does not repeat it
			if err := n.RotationFailed(ctx, failed); err != nil {
				t.Fatal(err)
			}
		}
		if len(m.sent) != 1 || h.posts != 1 || st.outcomes[key("inc", "acme")] != notify.StateFailed {
			t.Fatalf("mails %d, webhooks %d, outcome %q", len(m.sent), h.posts, st.outcomes[key("inc", "acme")])
		}
		mail := m.sent[0]
		for _, want := range []string{"did NOT complete", `"dkim"`, "second message", "incident inc", "SSH key: replaced", "SMTP credentials: replaced",
			"API keys: all 3 revoked and destroyed", "DKIM signing key: not replaced yet"} {
			if !strings.Contains(mail.Text, want) {
				t.Errorf("the notice does not say %q:\n%s", want, mail.Text)
			}
		}
		if strings.Contains(mail.Text, "rotated") || strings.Contains(mail.Text, "permission denied") {
			t.Errorf("the notice claims a rotation or leaks the internal reason:\n%s", mail.Text)
		}
		// The retry rotates the tenant: the usual notice goes out too, under
		// its own Message-ID.
		if err := n.Rotated(ctx, rotated("acme"), time.Now()); err != nil {
			t.Fatal(err)
		}
		if len(m.sent) != 2 || h.posts != 2 || m.sent[0].MessageID == m.sent[1].MessageID || st.outcomes[key("inc", "acme")] != notify.StateSent {
			t.Fatalf("after the retry: mails %d, webhooks %d, outcome %q", len(m.sent), h.posts, st.outcomes[key("inc", "acme")])
		}
		if p.count(events.NotificationSent) != 4 {
			t.Fatalf("%d notification.sent events, want 4 (two notices on two channels)", p.count(events.NotificationSent))
		}
	})
	t.Run("a tenant whose rotation failed and that the directory lacks is recorded, with no one to tell", func(t *testing.T) {
		n, st, m, _, _ := setup(t)
		if err := n.RotationFailed(ctx, events.RotationTenantFailedData{IncidentID: "inc", TenantID: "ghost", Step: "plan"}); err != nil {
			t.Fatal(err)
		}
		if len(m.sent) != 0 || st.outcomes[key("inc", "ghost")] != notify.StateFailed {
			t.Fatalf("mails %d, outcome %q", len(m.sent), st.outcomes[key("inc", "ghost")])
		}
	})
	t.Run("a transient failure gives the claim back, so the retry sends at once", func(t *testing.T) {
		n, _, m, _, _ := setup(t)
		m.err = errors.New("connection refused")
		if err := n.Rotated(ctx, rotated("beta"), time.Now()); err == nil || errors.Is(err, notify.ErrPermanent) {
			t.Fatalf("want a transient error, got %v", err)
		}
		m.err = nil
		if err := n.Rotated(ctx, rotated("beta"), time.Now()); err != nil || len(m.sent) != 1 {
			t.Fatalf("retry: %v, %d mails", err, len(m.sent))
		}
	})
	t.Run("a relay that refuses however often is retried, never recorded as failed", func(t *testing.T) {
		n, st, m, _, p := setup(t)
		if err := n.Planned(ctx, events.RotationPlannedData{IncidentID: "inc", Policy: "all", Tenants: 1}); err != nil {
			t.Fatal(err)
		}
		m.err = errors.New("connection refused")
		for range 20 {
			err := n.Rotated(ctx, rotated("beta"), time.Now())
			if err == nil || errors.Is(err, notify.ErrPermanent) || st.outcomes[key("inc", "beta")] != "" || p.count(events.NotificationsCompleted) != 0 {
				t.Fatalf("%v, outcome %q, completed %d", err, st.outcomes[key("inc", "beta")], p.count(events.NotificationsCompleted))
			}
		}
		m.err = nil
		if err := n.Rotated(ctx, rotated("beta"), time.Now()); err != nil || st.outcomes[key("inc", "beta")] != notify.StateSent || p.count(events.NotificationsCompleted) != 1 {
			t.Fatalf("once the relay answers: %v, outcome %q", err, st.outcomes[key("inc", "beta")])
		}
	})
	t.Run("a redelivery after every channel failed records the outcome without panicking", func(t *testing.T) {
		n, st, m, _, _ := setup(t)
		m.err = notify.Permanent(errors.New("550 no such user"))
		_ = n.Rotated(ctx, rotated("beta"), time.Now()) // the email channel ends failed
		delete(st.outcomes, key("inc", "beta"))         // as if the process died before the outcome
		if err := n.Rotated(ctx, rotated("beta"), time.Now()); err != nil {
			t.Fatal(err)
		}
		if st.outcomes[key("inc", "beta")] != notify.StateFailed {
			t.Fatalf("outcome %q", st.outcomes[key("inc", "beta")])
		}
	})
	t.Run("an unknown tenant fails permanently and counts as not notified", func(t *testing.T) {
		n, st, _, _, p := setup(t)
		err := n.Rotated(ctx, rotated("ghost"), time.Now())
		if !errors.Is(err, notify.ErrPermanent) || st.outcomes[key("inc", "ghost")] != notify.StateFailed || p.count(events.NotificationFailed) != 1 {
			t.Fatalf("%v", err)
		}
	})
	t.Run("giving up after a permanent failure that is not a send records the tenant so the plan completes", func(t *testing.T) {
		n, st, _, _, p := setup(t)
		if err := n.Planned(ctx, events.RotationPlannedData{IncidentID: "inc", Policy: "all", Tenants: 1}); err != nil {
			t.Fatal(err)
		}
		st.failDB = true
		err := n.Rotated(ctx, rotated("beta"), time.Now())
		st.failDB = false
		if err == nil {
			t.Fatal("no error with the database away")
		}
		if err := n.GiveUp(ctx, rotated("beta"), err); err != nil {
			t.Fatal(err)
		}
		if st.outcomes[key("inc", "beta")] != notify.StateFailed || p.count(events.NotificationsCompleted) != 1 {
			t.Fatalf("outcome %q, completed %d", st.outcomes[key("inc", "beta")], p.count(events.NotificationsCompleted))
		}
	})
	t.Run("giving up never reports as failed a channel that was sent", func(t *testing.T) {
		n, st, _, _, p := setup(t)
		if err := n.Rotated(ctx, rotated("beta"), time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := n.GiveUp(ctx, rotated("beta"), errors.New("a later step failed")); err != nil {
			t.Fatal(err)
		}
		if p.count(events.NotificationFailed) != 0 || st.rows[key("inc", "beta", notify.ChannelEmail)] != notify.StateSent || st.outcomes[key("inc", "beta")] != notify.StateSent {
			t.Fatalf("failed events %d, row %q, outcome %q", p.count(events.NotificationFailed), st.rows[key("inc", "beta", notify.ChannelEmail)], st.outcomes[key("inc", "beta")])
		}
	})
	t.Run("completion is announced once, whichever comes last: the plan or the last tenant", func(t *testing.T) {
		n, _, _, _, p := setup(t)
		if err := n.Rotated(ctx, rotated("beta"), time.Now()); err != nil {
			t.Fatal(err)
		}
		if p.count(events.NotificationsCompleted) != 0 {
			t.Fatal("completed before the plan was known")
		}
		if err := n.Planned(ctx, events.RotationPlannedData{IncidentID: "inc", Policy: "all", Tenants: 1}); err != nil {
			t.Fatal(err)
		}
		if err := n.Rotated(ctx, rotated("beta"), time.Now()); err != nil {
			t.Fatal(err)
		}
		if p.count(events.NotificationsCompleted) != 1 {
			t.Fatalf("completed %d times", p.count(events.NotificationsCompleted))
		}
	})
}
