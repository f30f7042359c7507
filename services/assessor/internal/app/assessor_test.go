package app_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/config"
	"github.com/lockdown/lockdown/pkg/platform/natsconn"
	"github.com/lockdown/lockdown/pkg/platform/runner"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/services/assessor/internal/app"
	"github.com/lockdown/lockdown/services/assessor/internal/store"
	"github.com/lockdown/lockdown/testkit/localstack"
	"github.com/lockdown/lockdown/testkit/testwait"
)

// feedOrder says which of the two audit feeds reaches the assessor first.
type feedOrder int

const (
	// socketFirst: the file follower polls once an hour, so the file's
	// copy arrives only with the assessment's catch-up.
	socketFirst feedOrder = iota
	// fileFirst: the socket's lines are held by the proxy until the file's
	// copy is stored.
	fileFirst
	// interleaved: the socket's lines are let through in random chunks
	// while the file is polled every few milliseconds.
	interleaved
)

// TestAssessment runs the real Vault with the two audit devices the
// operations guide prescribes — a socket device pointed at the assessor
// (through a proxy the test controls, to force the order of the feeds)
// and a file device the assessor follows — plays the platform's trusted
// mailer and intruders, publishes the incident and checks the assessment
// the assessor publishes.
func TestAssessment(t *testing.T) {
	for _, tc := range []struct {
		name  string
		order feedOrder
		seed  uint64
	}{
		{"an intruder seen through the socket first and the file later is one actor and every tenant it read is affected", socketFirst, 0},
		{"an intruder seen through the file first and the socket later is one actor and every tenant it read is affected", fileFirst, 0},
		{"an intruder seen through both feeds interleaved (seed 1) is one actor and every tenant it read is affected", interleaved, 1},
		{"an intruder seen through both feeds interleaved (seed 2) is one actor and every tenant it read is affected", interleaved, 2},
	} {
		t.Run(tc.name, func(t *testing.T) { runFeedOrder(t, tc.order, tc.seed) })
	}
	t.Run("a quiet reader hiding behind a noisier actor, and a token named like the trusted mailer, are both caught", runHiding)
}

// scene is one stack with Vault's two audit devices feeding a running
// assessor, 30 tenants with SSH, SMTP and DKIM secrets, and the platform's
// mailer: a trusted entity that reads one tenant's SMTP secret.
type scene struct {
	ctx          context.Context
	stack        *localstack.Stack
	root         *vault.Client
	assessor     *app.Assessor
	db           *store.Store
	proxy        *auditProxy
	mailer       *vault.Secret
	mailerEntity string
}

func newScene(t *testing.T, order feedOrder, seed uint64) *scene {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	s := localstack.StartTest(t, ctx, localstack.Options{NATS: true, NATSAuth: true, Postgres: true, Vault: true})
	root, err := s.Vault.Client()
	must(t, err)
	kv := root.KVv2("secret")
	for i := range 30 {
		for _, kind := range []string{"ssh", "smtp", "dkim"} {
			_, err := kv.Put(ctx, fmt.Sprintf("tenants/t%02d/%s", i, kind), map[string]any{"value": "seed"})
			must(t, err)
		}
	}
	must(t, root.Sys().PutPolicyWithContext(ctx, "mailer", `path "secret/data/tenants/t29/smtp" { capabilities = ["read"] }`))
	must(t, root.Sys().PutPolicyWithContext(ctx, "leaked", `path "secret/data/tenants/*" { capabilities = ["read"] }`))
	must(t, root.Sys().PutPolicyWithContext(ctx, "probe", `path "secret/data/tenants/t20/*" { capabilities = ["read"] }`))
	// The mailer's tokens come from a token role bound to an entity alias,
	// so they carry the mailer's entity: the one thing that can be trusted.
	_, err = root.Logical().WriteWithContext(ctx, "auth/token/roles/mailer", map[string]any{
		"allowed_policies": "mailer", "allowed_entity_aliases": "mailer-service", "orphan": true})
	must(t, err)
	mailer, err := root.Logical().WriteWithContext(ctx, "auth/token/create/mailer", map[string]any{
		"entity_alias": "mailer-service", "policies": []string{"mailer"}, "display_name": "mailer"})
	must(t, err)
	if mailer.Auth == nil || mailer.Auth.EntityID == "" {
		t.Fatalf("the mailer's token has no entity: %+v", mailer.Auth)
	}

	poll := map[feedOrder]string{socketFirst: "1h", fileFirst: "20ms", interleaved: "5ms"}[order]
	a, db, stop := startAssessor(t, ctx, s, map[string]string{
		"LOCKDOWN_AUDIT_LISTEN_DEVICE": "socket", "LOCKDOWN_AUDIT_FILE": s.Vault.AuditLog, "LOCKDOWN_AUDIT_FILE_DEVICE": "file",
		"LOCKDOWN_AUDIT_FOLLOW_POLL": poll, "LOCKDOWN_TRUSTED_ACTORS": mailer.Auth.EntityID,
	})
	t.Cleanup(stop)
	proxy := newAuditProxy(t, a.Listener.Addr(), order, seed)
	must(t, root.Sys().EnableAuditWithOptionsWithContext(ctx, "socket", &vault.EnableAuditOptions{Type: "socket",
		Options: map[string]string{"address": proxy.Addr(), "socket_type": "tcp"}}))
	sc := &scene{ctx: ctx, stack: s, root: root, assessor: a, db: db, proxy: proxy, mailer: mailer, mailerEntity: mailer.Auth.EntityID}
	// The mailer's ordinary traffic.
	for range 3 {
		must(t, sc.read(mailer.Auth.ClientToken, "127.0.0.1", "secret/data/tenants/t29/smtp"))
	}
	return sc
}

func runFeedOrder(t *testing.T, order feedOrder, seed uint64) {
	sc := newScene(t, order, seed)
	intruder := sc.token(t, "leaked", "intruder")
	var want []string
	for i := range 12 {
		tenant := fmt.Sprintf("t%02d", i)
		want = append(want, tenant)
		for _, kind := range []string{"ssh", "smtp", "dkim"} {
			must(t, sc.read(intruder.Auth.ClientToken, "127.0.0.1", "secret/data/tenants/"+tenant+"/"+kind))
		}
	}
	for _, p := range []string{"sys/mounts", "sys/auth", "sys/policies/acl/root"} {
		if err := sc.read(intruder.Auth.ClientToken, "127.0.0.1", p); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("the intruder's probe of %s: %v, want permission denied", p, err)
		}
	}
	// Let the first feed be stored completely before the second starts.
	// The last probe's path is one only the intruder asks for: the stack's
	// own install step reads sys/auth and sys/mounts (its baseline), and
	// their responses in the log would end the wait too early.
	lastPath := "sys/policies/acl/root"
	switch order {
	case socketFirst:
		sc.awaitStored(t, lastPath, "socket")
	case fileFirst:
		sc.awaitStored(t, lastPath, "file")
		sc.proxy.Release()
	}
	sc.proxy.AwaitDrained(t, sc.assessor)

	got := sc.assess(t, fmt.Sprintf("inc-order-%d-%d", order, seed))
	if !slices.Equal(got.AffectedTenants, want) {
		t.Fatalf("affected tenants %v, want exactly %v", got.AffectedTenants, want)
	}
	if got.Scope != "widespread" {
		t.Fatalf("scope %s, want widespread (12 tenants > 10)", got.Scope)
	}
	sc.checkIntruder(t, got, intruder, want, 3)
	// The feed order was really forced: the stored copy of the intruder's
	// reads is the first feed's.
	devices := sc.storedDevices(t, "secret/data/tenants/t0")
	switch order {
	case socketFirst:
		if !slices.Equal(devices, []string{"socket"}) {
			t.Fatalf("the intruder's reads were stored from %v, want the socket's copy", devices)
		}
	case fileFirst:
		if !slices.Equal(devices, []string{"file"}) {
			t.Fatalf("the intruder's reads were stored from %v, want the file's copy", devices)
		}
	default:
		t.Logf("interleaved feeds: the intruder's reads were stored from %v", devices)
	}
	sc.checkMailer(t, got)
	sc.checkNoSecrets(t, got, intruder)
}

func runHiding(t *testing.T) {
	sc := newScene(t, interleaved, 3)
	// The quiet accomplice reads six tenants and is never refused.
	quiet := sc.token(t, "leaked", "reporting")
	for i := range 6 {
		must(t, sc.read(quiet.Auth.ClientToken, "127.0.0.1", fmt.Sprintf("secret/data/tenants/t%02d/ssh", i)))
	}
	// The noisy decoy, from another address, reads its one tenant and is
	// refused five times.
	noisy := sc.token(t, "probe", "scanner")
	must(t, sc.read(noisy.Auth.ClientToken, "127.0.0.2", "secret/data/tenants/t20/ssh"))
	for _, p := range []string{"sys/mounts", "sys/auth", "secret/data/tenants/t21/ssh", "secret/data/tenants/t22/ssh", "sys/policies/acl/root"} {
		if err := sc.read(noisy.Auth.ClientToken, "127.0.0.2", p); err == nil {
			t.Fatalf("the decoy was allowed %s", p)
		}
	}
	// A token named exactly like the mailer, without its entity.
	impostor := sc.token(t, "leaked", "mailer")
	for i := 10; i < 13; i++ {
		must(t, sc.read(impostor.Auth.ClientToken, "127.0.0.1", fmt.Sprintf("secret/data/tenants/t%02d/smtp", i)))
	}
	sc.proxy.AwaitDrained(t, sc.assessor)
	got := sc.assess(t, "inc-hiding")

	want := []string{"t00", "t01", "t02", "t03", "t04", "t05", "t10", "t11", "t12", "t20"}
	if !slices.Equal(got.AffectedTenants, want) {
		t.Fatalf("affected tenants %v, want %v", got.AffectedTenants, want)
	}
	if got.Scope != "limited" {
		t.Fatalf("scope %s, want limited (10 tenants is not more than 10)", got.Scope)
	}
	lead := got.Actors[0]
	if !lead.Suspect || lead.Denied != 5 || !slices.Equal(lead.RemoteAddresses, []string{"127.0.0.2"}) {
		t.Fatalf("the decoy does not lead as the suspect: %+v", lead)
	}
	q := sc.actorOf(t, got, quiet)
	if q.Suspect || !slices.Equal(q.Tenants, want[:6]) {
		t.Fatalf("the quiet reader %+v, want its six tenants listed", q)
	}
	imp := sc.actorOf(t, got, impostor)
	m := sc.checkMailer(t, got)
	if imp.Trusted || !slices.Equal(imp.DisplayNames, m.DisplayNames) || !slices.Equal(imp.Tenants, []string{"t10", "t11", "t12"}) {
		t.Fatalf("the impostor %+v (the mailer is %+v): want the same display name, not trusted, its three tenants", imp, m)
	}
}

// token creates a token with the policy and the display name (Vault
// prefixes it with "token-").
func (sc *scene) token(t *testing.T, policy, name string) *vault.Secret {
	t.Helper()
	tok, err := sc.root.Auth().Token().CreateWithContext(sc.ctx, &vault.TokenCreateRequest{Policies: []string{policy}, DisplayName: name})
	must(t, err)
	return tok
}

// read reads path with token, connecting from the loopback address from.
func (sc *scene) read(token, from, path string) error {
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := vault.NewClient(&vault.Config{Address: sc.stack.Vault.Addr, HttpClient: &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}})
	if err != nil {
		return err
	}
	c.SetToken(token)
	_, err = c.Logical().ReadWithContext(sc.ctx, path)
	return err
}

// awaitStored waits until the response to the last request on path is
// stored, from the given device.
func (sc *scene) awaitStored(t *testing.T, path, device string) {
	t.Helper()
	testwait.For(t, 20*time.Second, "the "+device+" feed to reach PostgreSQL", func() bool {
		var n int
		err := sc.db.Pool().QueryRow(sc.ctx, `SELECT count(*) FROM assessor.audit_entries WHERE type = 'response' AND path = $1 AND device = $2`, path, device).Scan(&n)
		return err == nil && n == 1
	})
}

// storedDevices lists the devices whose copies of the secret reads on paths
// with the prefix were stored.
func (sc *scene) storedDevices(t *testing.T, prefix string) []string {
	t.Helper()
	var devices []string
	must(t, sc.db.Pool().QueryRow(sc.ctx, `SELECT coalesce(array_agg(DISTINCT device ORDER BY device), '{}') FROM assessor.audit_entries
		WHERE type = 'response' AND kind = 'read' AND starts_with(path, $1)`, prefix).Scan(&devices))
	return devices
}

func (sc *scene) assess(t *testing.T, incidentID string) events.AssessmentCompletedData {
	t.Helper()
	publishIncident(t, sc.ctx, sc.stack, incidentID, time.Now().Add(time.Second))
	return awaitAssessment(t, sc.ctx, sc.stack, incidentID)
}

// actorOf finds the actor of a token by its accessor as each device hashes it.
func (sc *scene) actorOf(t *testing.T, got events.AssessmentCompletedData, tok *vault.Secret) events.Actor {
	t.Helper()
	var hashes []string
	for _, device := range []string{"file", "socket"} {
		h, err := sc.root.Sys().AuditHashWithContext(sc.ctx, device, tok.Auth.Accessor)
		must(t, err)
		hashes = append(hashes, h)
	}
	if hashes[0] == hashes[1] {
		t.Fatal("the two audit devices hash the accessor alike: the test would prove nothing")
	}
	var found []events.Actor
	for _, a := range got.Actors {
		for _, da := range a.Accessors {
			if slices.Contains(hashes, da.Accessor) {
				found = append(found, a)
				break
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("the token (accessor HMACs %v) is %d actors, want 1: %+v", hashes, len(found), found)
	}
	var accs []string
	for _, da := range found[0].Accessors {
		accs = append(accs, da.Device+"="+da.Accessor)
	}
	if want := []string{"file=" + hashes[0], "socket=" + hashes[1]}; !slices.Equal(accs, want) {
		t.Fatalf("the token's actor has accessors %v, want both devices' %v", accs, want)
	}
	return found[0]
}

func (sc *scene) checkIntruder(t *testing.T, got events.AssessmentCompletedData, intruder *vault.Secret, tenants []string, denied int) {
	t.Helper()
	a := sc.actorOf(t, got, intruder)
	if got.Actors[0].Key != a.Key {
		t.Fatalf("the intruder %s does not lead the actors: %+v", a.Key, got.Actors[0])
	}
	if !slices.Equal(a.Tenants, tenants) || a.Reads != 3*len(tenants) || a.Denied != denied || !a.Suspect {
		t.Fatalf("the intruder %+v, want %d tenants, %d reads, %d denied, suspect", a, len(tenants), 3*len(tenants), denied)
	}
}

// checkMailer checks that the trusted mailer is one trusted actor whose
// tenant is not affected.
func (sc *scene) checkMailer(t *testing.T, got events.AssessmentCompletedData) events.Actor {
	t.Helper()
	m := sc.actorOf(t, got, sc.mailer)
	if m.Key != "entity:"+sc.mailerEntity || !m.Trusted || m.Suspect || m.Reads != 3 || !slices.Equal(m.Tenants, []string{"t29"}) {
		t.Fatalf("the mailer %+v, want the trusted entity %s with 3 reads of t29", m, sc.mailerEntity)
	}
	if slices.Contains(got.AffectedTenants, "t29") {
		t.Fatal("the trusted mailer's ordinary read made t29 affected")
	}
	return m
}

func (sc *scene) checkNoSecrets(t *testing.T, got events.AssessmentCompletedData, tok *vault.Secret) {
	t.Helper()
	if s := fmt.Sprint(got); strings.Contains(s, tok.Auth.ClientToken) || strings.Contains(s, tok.Auth.Accessor) {
		t.Fatal("a token or a clear accessor is in the assessment")
	}
	st := &sc.assessor.Pipeline.Stats
	if st.Malformed.Load() != 0 || st.Dropped.Load() != 0 {
		t.Fatalf("stats: malformed %d dropped %d", st.Malformed.Load(), st.Dropped.Load())
	}
}

// auditProxy stands between Vault's socket audit device and the
// assessor's listener: it accepts Vault's lines at once (Vault is never
// held up) and forwards them now, after Release, or in random chunks.
type auditProxy struct {
	ln        net.Listener
	lines     chan []byte
	release   chan struct{}
	once      sync.Once
	received  atomic.Int64
	forwarded atomic.Int64
}

func newAuditProxy(t *testing.T, target string, order feedOrder, seed uint64) *auditProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	p := &auditProxy{ln: ln, lines: make(chan []byte, 100_000), release: make(chan struct{})}
	if order != fileFirst {
		p.Release()
	}
	out, err := net.Dial("tcp", target)
	must(t, err)
	t.Cleanup(func() { _ = ln.Close(); _ = out.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = conn.Close() }()
				sc := bufio.NewScanner(conn)
				sc.Buffer(make([]byte, 1<<20), 1<<20)
				for sc.Scan() {
					p.received.Add(1)
					p.lines <- append(append([]byte(nil), sc.Bytes()...), '\n')
				}
			}()
		}
	}()
	go func() {
		<-p.release
		r := rand.New(rand.NewPCG(seed, seed+1))
		for line := range p.lines {
			if _, err := out.Write(line); err != nil {
				return
			}
			p.forwarded.Add(1)
			if order == interleaved && r.IntN(4) == 0 {
				time.Sleep(time.Duration(r.IntN(15)) * time.Millisecond)
			}
		}
	}()
	return p
}

func (p *auditProxy) Addr() string { return p.ln.Addr().String() }

// Release lets held lines through.
func (p *auditProxy) Release() { p.once.Do(func() { close(p.release) }) }

// AwaitDrained waits until every line Vault wrote to the socket so far was
// forwarded and received by the assessor's pipeline, and the pipeline has
// accounted for it.
func (p *auditProxy) AwaitDrained(t *testing.T, a *app.Assessor) {
	t.Helper()
	testwait.For(t, 30*time.Second, "the socket feed to be forwarded", func() bool {
		return p.forwarded.Load() == p.received.Load() && len(p.lines) == 0
	})
	if !a.Pipeline.Settle(context.Background(), 20*time.Second) {
		t.Fatal("the pipeline did not settle")
	}
}

func startAssessor(t *testing.T, ctx context.Context, s *localstack.Stack, env map[string]string) (*app.Assessor, *store.Store, func()) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	conn, err := natsconn.Connect(ctx, natsconn.Options{URL: s.NATS.URL, User: events.ServiceAssessor, Password: s.NATS.Password(events.ServiceAssessor)})
	must(t, err)
	must(t, stream.VerifyTopology(ctx, conn.JS, events.ServiceAssessor))
	cfg := &app.Config{}
	must(t, config.LoadFrom(cfg, func(k string) (string, bool) {
		if v, ok := env[k]; ok {
			return v, true
		}
		switch k {
		case "LOCKDOWN_DATABASE_URL":
			return s.Postgres.URL, true
		case "LOCKDOWN_AUDIT_LISTEN":
			return "127.0.0.1:0", true
		case "LOCKDOWN_AUDIT_FLUSH":
			return "50ms", true
		}
		return "", false
	}))
	db, err := store.Open(ctx, cfg.DatabaseURL)
	must(t, err)
	rt := runner.NewRuntime(events.ServiceAssessor, logger, nil, nil, conn)
	a, err := app.New(rt, cfg, app.Adapters{Store: db})
	must(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Serve(runCtx) }()
	return a, db, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("assessor: %v", err)
		}
		_ = conn.Close(context.Background())
		db.Close()
	}
}

func publishIncident(t *testing.T, ctx context.Context, s *localstack.Stack, id string, detected time.Time) {
	t.Helper()
	conn, err := natsconn.Connect(ctx, natsconn.Options{URL: s.NATS.URL, User: events.ServiceContainment, Password: s.NATS.Password(events.ServiceContainment)})
	must(t, err)
	defer func() { _ = conn.Close(context.Background()) }()
	must(t, stream.NewPublisher(conn.JS, events.SourceOf(events.ServiceContainment), nil).PublishWithID(ctx, events.IncidentOpened, id+"/incident.opened",
		events.IncidentOpenedData{IncidentID: id, BreachEventID: "b-" + id, DetectedAt: detected, Severity: events.SeverityCritical, Summary: "test"}))
}

func awaitAssessment(t *testing.T, ctx context.Context, s *localstack.Stack, id string) events.AssessmentCompletedData {
	t.Helper()
	conn, err := natsconn.Connect(ctx, natsconn.Options{URL: s.NATS.URL, User: events.UserOperator, Password: s.NATS.Password(events.UserOperator)})
	must(t, err)
	defer func() { _ = conn.Close(context.Background()) }()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, d, err := stream.Await(wctx, conn.JS, events.AssessmentCompleted, func(_ event.Event, d events.AssessmentCompletedData) bool { return d.IncidentID == id })
	must(t, err)
	sort.Strings(d.AffectedTenants)
	return d
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
