package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/readmodel"
	"github.com/lockdown/lockdown/pkg/platform/outbox"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/pkg/platform/telemetry"
	"github.com/lockdown/lockdown/services/containment/internal/intake"
	"github.com/lockdown/lockdown/services/containment/internal/store"
	"github.com/lockdown/lockdown/testkit/localstack"
	"github.com/lockdown/lockdown/testkit/testwait"
)

// TestContainment drives containment on the real local stack — NATS with
// deploy/nats's users, PostgreSQL, a real Vault, Jaeger — through the
// first phases of the runbook. The subtests run in order and share the
// stack: each leaves Vault unsealed and no incident open.
func TestContainment(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.Options{NATS: true, NATSAuth: true, Postgres: true, Vault: true, Jaeger: true})
	c := startContainment(t, s, nil, nil, nil, nil)
	t.Cleanup(func() { c.stop() }) // whichever instance runs last
	siem, _ := connectAs(t, s, events.UserSIEM)
	pool, err := pgxpool.New(ctx, s.Postgres.URL)
	must(t, err)
	defer pool.Close()
	countIncidents := func() (n int) {
		must(t, pool.QueryRow(ctx, "SELECT count(*) FROM containment.incidents").Scan(&n))
		return n
	}

	var first events.VaultSealedData
	t.Run("a breach published by the SIEM user seals Vault and opens one incident", func(t *testing.T) {
		siemTel, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: "test-siem", OTLPEndpoint: s.Jaeger.OTLPHTTPEndpoint})
		must(t, err)
		spanCtx, span := siemTel.TracerProvider.Tracer("siem").Start(ctx, "send lockdown.breach.detected", trace.WithSpanKind(trace.SpanKindProducer))
		headers := propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(spanCtx, headers)
		ev := newBreach(t, "root token used from 203.0.113.7")
		publishAsSIEM(t, siem, ev, headers)
		span.End()
		must(t, siemTel.Shutdown(ctx))

		_, opened := waitEvent(t, s, events.IncidentOpened, 10*time.Second, func(d events.IncidentOpenedData) bool { return d.BreachEventID == ev.ID() })
		_, first = waitEvent(t, s, events.VaultSealed, 10*time.Second, func(d events.VaultSealedData) bool { return d.IncidentID == opened.IncidentID })
		if !sealed(t, s.Vault.Addr) {
			t.Fatal("Vault reports unsealed after vault.sealed")
		}
		if len(first.Nodes) != 1 || first.Nodes[0].Method != "api" || first.Nodes[0].ConfirmedAt.IsZero() {
			t.Fatalf("seal record %+v", first.Nodes)
		}
		var summary, severity, source string
		var detected time.Time
		must(t, pool.QueryRow(ctx, `SELECT summary, severity, source, detected_at FROM containment.detections WHERE event_id = $1`, ev.ID()).
			Scan(&summary, &severity, &source, &detected))
		data, _ := events.DataAs[events.BreachDetectedData](ev)
		if summary != data.Summary || severity != "critical" || source != "/siem/test" || !detected.Equal(data.DetectedAt.Truncate(time.Microsecond)) {
			t.Fatalf("detection stored as %q %q %q %v", summary, severity, source, detected)
		}
		if opened.Severity != events.SeverityCritical || opened.Summary != data.Summary {
			t.Fatalf("incident.opened %+v", opened)
		}

		// One trace: containment's consumer span is the SIEM span's child.
		c.stop()
		tr := waitForTrace(t, ctx, s.Jaeger.QueryURL, span.SpanContext().TraceID().String(), 2)
		if parent := tr.parentOf("containment", "process lockdown.breach.detected"); parent != span.SpanContext().SpanID().String() {
			t.Fatalf("containment's span parent is %q, want the SIEM's span %s", parent, span.SpanContext().SpanID())
		}
		c = startContainment(t, s, nil, nil, nil, nil)
	})

	t.Run("a restarted containment resumes the open incident and the unseal gate emits vault.unsealed", func(t *testing.T) {
		// The previous subtest restarted containment mid-incident: it
		// must not open a new incident and must watch the gate.
		if n := countIncidents(); n != 1 {
			t.Fatalf("%d incidents", n)
		}
		must(t, s.Vault.Unseal(ctx))
		_, un := waitEvent(t, s, events.VaultUnsealed, 10*time.Second, func(d events.VaultUnsealedData) bool { return d.IncidentID == first.IncidentID })
		if un.Address != s.Vault.Addr || un.GateMS <= 0 {
			t.Fatalf("vault.unsealed %+v", un)
		}
		var phase string
		must(t, pool.QueryRow(ctx, "SELECT phase FROM containment.incidents WHERE id = $1", first.IncidentID).Scan(&phase))
		// The engine revokes access right after the gate: either phase.
		if phase != "unsealed" && phase != "recovering" {
			t.Fatalf("phase %s", phase)
		}
	})

	t.Run("the operator reads the incident from the read model, and only containment writes it", func(t *testing.T) {
		op, _ := connectAs(t, s, events.UserOperator)
		js, err := jetstream.New(op)
		must(t, err)
		rm, err := stream.OpenReadModel(ctx, js)
		must(t, err)
		var doc readmodel.Incident
		testwait.For(t, 10*time.Second, "the document to show the recorded phase", func() bool {
			var phase string
			must(t, pool.QueryRow(ctx, "SELECT phase FROM containment.incidents WHERE id = $1", first.IncidentID).Scan(&phase))
			doc, err = rm.Incident(ctx, first.IncidentID)
			return err == nil && doc.Phase == phase
		})
		if doc.Schema != readmodel.SchemaVersion || len(doc.Seals) != 1 || doc.Seals[0].Method != "api" || doc.SealedAt == nil || doc.TraceID == "" ||
			len(doc.Phases) == 0 || doc.Report.State != readmodel.ReportDraft {
			t.Fatalf("document %+v", doc)
		}
		draft, err := rm.Report(ctx, first.IncidentID)
		if err != nil || draft.Outcome != "open" || draft.IncidentID != first.IncidentID {
			t.Fatalf("draft report %+v: %v", draft, err)
		}
		// The operator may read, never write: a forged document would
		// mislead the room.
		forged := doc
		forged.Phase = "resolved"
		pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
		defer pcancel()
		if err := rm.PutIncident(pctx, forged); err == nil {
			t.Fatal("the operator wrote an incident document")
		}
		// A service other than containment cannot read it either.
		rot, _ := connectAs(t, s, events.ServiceRotator)
		rjs, err := jetstream.New(rot)
		must(t, err)
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		defer rcancel()
		if other, err := stream.OpenReadModel(rctx, rjs); err == nil {
			if _, err := other.Incident(rctx, first.IncidentID); err == nil {
				t.Fatal("the rotator read an incident document")
			}
		}
	})

	t.Run("the same event published again does not open a second incident", func(t *testing.T) {
		resolveOpen(t, s)
		ev := newBreach(t, "duplicate test")
		publishAsSIEM(t, siem, ev, nil)
		_, opened := waitEvent(t, s, events.IncidentOpened, 10*time.Second, func(d events.IncidentOpenedData) bool { return d.BreachEventID == ev.ID() })
		waitEvent(t, s, events.VaultSealed, 10*time.Second, func(d events.VaultSealedData) bool { return d.IncidentID == opened.IncidentID })
		before := countIncidents()
		// Same id with the same Nats-Msg-Id: JetStream drops it. Same id
		// with another Nats-Msg-Id (outside the window, say): it reaches
		// containment, whose unique key refuses it.
		publishAsSIEM(t, siem, ev, map[string]string{"Nats-Msg-Id": ev.ID()})
		publishAsSIEM(t, siem, ev, map[string]string{"Nats-Msg-Id": "other-" + ev.ID()})
		marker := newBreach(t, "a later detection")
		publishAsSIEM(t, siem, marker, nil)
		waitDetection(t, ctx, pool, marker.ID())
		var detections int
		must(t, pool.QueryRow(ctx, "SELECT count(*) FROM containment.detections WHERE incident_id = $1", opened.IncidentID).Scan(&detections))
		if n := countIncidents(); n != before || detections != 2 {
			t.Fatalf("incidents %d → %d, detections %d (want the original and the later one)", before, n, detections)
		}
		var rounds int
		must(t, pool.QueryRow(ctx, "SELECT seal_round FROM containment.incidents WHERE id = $1", opened.IncidentID).Scan(&rounds))
		if rounds != 1 {
			t.Fatalf("a detection while every node is sealed re-sealed (round %d)", rounds)
		}
		must(t, s.Vault.Unseal(ctx))
		waitEvent(t, s, events.VaultUnsealed, 10*time.Second, func(d events.VaultUnsealedData) bool { return d.IncidentID == opened.IncidentID })
	})

	t.Run("a detection that finds Vault unsealed seals it again", func(t *testing.T) {
		inc := openIncidentID(t, ctx, pool)
		since := time.Now()
		publishAsSIEM(t, siem, newBreach(t, "intruder still active"), nil)
		_, again := waitEvent(t, s, events.VaultSealed, 10*time.Second, func(d events.VaultSealedData) bool {
			return d.IncidentID == inc && d.Nodes[0].ConfirmedAt.After(since)
		})
		if !sealed(t, s.Vault.Addr) || again.Nodes[0].Method != "api" {
			t.Fatalf("not sealed again: %+v", again)
		}
		must(t, s.Vault.Unseal(ctx))
		waitUnsealedPhase(t, ctx, pool, inc)
		resolveOpen(t, s)
	})

	t.Run("an invalid event does not seal and ends on the dead-letter subject", func(t *testing.T) {
		before := countIncidents()
		bad := fmt.Sprintf(`{"specversion":"1.0","id":"bad-%d","type":"io.lockdown.breach.detected.v1","source":"/siem/test","time":"%s",
			"datacontenttype":"application/json","data":{"severity":"catastrophic"}}`, time.Now().UnixNano(), time.Now().UTC().Format(time.RFC3339))
		msg := nats.NewMsg(events.BreachDetected.Subject())
		msg.Data = []byte(bad)
		must(t, siem.PublishMsg(msg))
		dl := waitDeadLetter(t, s, events.ConsumerContainmentBreach, "catastrophic")
		if !strings.Contains(dl.Reason, "summary is required") {
			t.Fatalf("reason %q", dl.Reason)
		}
		if sealed(t, s.Vault.Addr) || countIncidents() != before {
			t.Fatal("an invalid breach sealed Vault or opened an incident")
		}
	})

	t.Run("a publish to the breach subject by another user is refused by NATS", func(t *testing.T) {
		for _, user := range []string{events.ServiceRotator, events.ServiceNotifier, events.ServiceAssessor, events.UserOperator} {
			nc, errs := connectAs(t, s, user)
			body, _ := events.Marshal(newBreach(t, "forged by "+user))
			must(t, nc.Publish(events.BreachDetected.Subject(), body))
			must(t, nc.Flush())
			select {
			case err := <-errs:
				if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
					t.Fatalf("%s: %v", user, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s could publish a breach", user)
			}
		}
		if sealed(t, s.Vault.Addr) {
			t.Fatal("a refused publish sealed Vault")
		}
	})

	t.Run("the HTTP intake refuses a bad signature, a stale timestamp, a bad token and no credentials", func(t *testing.T) {
		body, _ := events.Marshal(newBreach(t, "via http"))
		cases := map[string]map[string]string{
			"bad signature":   signed("wrong-key", body, nil, time.Now()),
			"stale timestamp": signed(testHMACKey, body, nil, time.Now().Add(-10*time.Minute)),
			"bad token":       {"Authorization": "Bearer nope"},
			"no credentials":  {},
		}
		for name, h := range cases {
			resp := post(t, c.intake, body, h)
			if resp.code != http.StatusUnauthorized || resp.body["error"] == "" {
				t.Errorf("%s: %d %v", name, resp.code, resp.body)
			}
		}
		if sealed(t, s.Vault.Addr) {
			t.Fatal("a refused request sealed Vault")
		}
	})

	t.Run("a captured signed request cannot be changed or replayed, and an anonymous one is refused before its body is read", func(t *testing.T) {
		data, _ := json.Marshal(events.BreachDetectedData{Summary: "binary mode, signed", Severity: events.SeverityLow})
		ce := map[string]string{"Content-Type": "application/json", "ce-specversion": "1.0", "ce-id": "captured-1",
			"ce-type": events.BreachDetected.Type(), "ce-source": "/siem/http"}
		h := signed(testHMACKey, data, ce, time.Now())
		// The signature covers every ce-* header: a new id is a new request.
		tampered := map[string]string{}
		for k, v := range h {
			tampered[k] = v
		}
		// Header keys come back canonical ("Ce-Id"); set the same key, or map
		// order decides which of two spellings the request carries.
		tampered[http.CanonicalHeaderKey("ce-id")] = "forged-2"
		if resp := post(t, c.intake, data, tampered); resp.code != http.StatusUnauthorized {
			t.Fatalf("a changed ce-id: %d %v", resp.code, resp.body)
		}
		if resp := post(t, c.intake, data, h); resp.code != http.StatusAccepted {
			t.Fatalf("the signed request: %d %v", resp.code, resp.body)
		}
		if resp := post(t, c.intake, data, h); resp.code != http.StatusConflict {
			t.Fatalf("the same request again: %d %v, want 409 (a replay)", resp.code, resp.body)
		}
		big := bytes.Repeat([]byte("x"), 200_000)
		if resp := post(t, c.intake, big, map[string]string{"Content-Type": "application/json"}); resp.code != http.StatusUnauthorized {
			t.Fatalf("an anonymous large body: %d %v, want 401", resp.code, resp.body)
		}
		if resp := post(t, c.intake, big, signed(testHMACKey, big, nil, time.Now())); resp.code != http.StatusRequestEntityTooLarge {
			t.Fatalf("a signed body over the limit: %d %v, want 413", resp.code, resp.body)
		}
		resolveOpen(t, s)
	})

	t.Run("a breach outside the auto-seal policy waits for an operator: lockdown confirm seals", func(t *testing.T) {
		ev, err := events.New(events.BreachDetected, "/siem/test", events.BreachDetectedData{Summary: "a low-severity finding", Severity: events.SeverityLow})
		must(t, err)
		nc, _ := connectAs(t, s, events.UserSIEM)
		publishAsSIEM(t, nc, ev, nil)
		waitDetection(t, ctx, pool, ev.ID())
		var id, phase string
		must(t, pool.QueryRow(ctx, `SELECT incident_id::text, (SELECT phase FROM containment.incidents WHERE id = d.incident_id)
			FROM containment.detections d WHERE event_id = $1`, ev.ID()).Scan(&id, &phase))
		if phase != "awaiting_confirmation" {
			t.Fatalf("phase %s, want awaiting_confirmation", phase)
		}
		c.awaitPasses(t, 5) // passes over the recorded, unconfirmed incident
		if sealed(t, s.Vault.Addr) {
			t.Fatal("a low-severity breach sealed Vault by itself")
		}
		op, _ := connectAs(t, s, events.UserOperator)
		js, err := jetstream.New(op)
		must(t, err)
		_, err = stream.NewPublisher(js, events.SourceOf(events.ServiceCLI), nil).Publish(ctx, events.IncidentConfirmRequested,
			events.IncidentControlData{IncidentID: id, RequestedBy: "alice@soc"})
		must(t, err)
		waitEvent(t, s, events.VaultSealed, 20*time.Second, func(d events.VaultSealedData) bool { return d.IncidentID == id && d.Round == 1 })
		if !sealed(t, s.Vault.Addr) {
			t.Fatal("not sealed after the confirmation")
		}
		must(t, s.Vault.Unseal(ctx))
		waitUnsealedPhase(t, ctx, pool, id)
		resolveOpen(t, s)
	})

	t.Run("a signed HTTP breach seals and answers 202 with the incident id", func(t *testing.T) {
		ev := newBreach(t, "via http, signed")
		body, _ := events.Marshal(ev)
		resp := post(t, c.intake, body, signed(testHMACKey, body, map[string]string{"Content-Type": "application/cloudevents+json"}, time.Now()))
		if resp.code != http.StatusAccepted || resp.body["event_id"] != ev.ID() || resp.body["incident_id"] == "" {
			t.Fatalf("%d %v", resp.code, resp.body)
		}
		waitEvent(t, s, events.VaultSealed, 10*time.Second, func(d events.VaultSealedData) bool { return d.IncidentID == resp.body["incident_id"] })
		if !sealed(t, s.Vault.Addr) {
			t.Fatal("not sealed")
		}
		// Binary mode with a bearer token joins the same incident.
		data, _ := json.Marshal(events.BreachDetectedData{Summary: "binary mode", Severity: events.SeverityHigh})
		bin := post(t, c.intake, data, map[string]string{"Authorization": "Bearer " + testBearerToken, "Content-Type": "application/json",
			"ce-specversion": "1.0", "ce-id": "bin-" + ev.ID(), "ce-type": events.BreachDetected.Type(), "ce-source": "/siem/http"})
		if bin.code != http.StatusAccepted || bin.body["incident_id"] != resp.body["incident_id"] {
			t.Fatalf("binary: %d %v", bin.code, bin.body)
		}
		bad := post(t, c.intake, []byte(`{"summary":""}`), map[string]string{"Authorization": "Bearer " + testBearerToken, "Content-Type": "application/json",
			"ce-specversion": "1.0", "ce-id": "bad-bin", "ce-type": events.BreachDetected.Type(), "ce-source": "/siem/http"})
		if bad.code != http.StatusBadRequest || !strings.Contains(bad.body["error"], "summary is required") {
			t.Fatalf("invalid data: %d %v", bad.code, bad.body)
		}
		badID := post(t, c.intake, data, map[string]string{"Authorization": "Bearer " + testBearerToken, "Content-Type": "application/json",
			"ce-specversion": "1.0", "ce-id": "inc/vault.unsealed/1", "ce-type": events.BreachDetected.Type(), "ce-source": "/siem/http"})
		if badID.code != http.StatusBadRequest || !strings.Contains(badID.body["error"], "event id") {
			t.Fatalf("an id with a slash: %d %v", badID.code, badID.body)
		}
		must(t, s.Vault.Unseal(ctx))
		waitUnsealedPhase(t, ctx, pool, resp.body["incident_id"])
		resolveOpen(t, s)
	})

	t.Run("a critical breach on an incident awaiting confirmation starts a round: sealed, gated, revoked", func(t *testing.T) {
		nc, _ := connectAs(t, s, events.UserSIEM)
		low, err := events.New(events.BreachDetected, "/siem/test", events.BreachDetectedData{Summary: "a medium finding", Severity: events.SeverityMedium})
		must(t, err)
		publishAsSIEM(t, nc, low, nil)
		waitDetection(t, ctx, pool, low.ID())
		id := openIncidentID(t, ctx, pool)
		critical, err := events.New(events.BreachDetected, "/siem/test", events.BreachDetectedData{Summary: "root token used", Severity: events.SeverityCritical})
		must(t, err)
		publishAsSIEM(t, nc, critical, nil)
		// Before: attached to the awaiting incident with no round — Vault
		// sealed, and no gate, no revocation ever followed.
		waitEvent(t, s, events.VaultSealed, 20*time.Second, func(d events.VaultSealedData) bool { return d.IncidentID == id && d.Round == 1 })
		must(t, s.Vault.Unseal(ctx))
		waitEvent(t, s, events.AccessRevoked, 60*time.Second, func(d events.AccessRevokedData) bool { return d.IncidentID == id && d.Round == 1 })
		resolveOpen(t, s)
	})

	t.Run("a breach summary of 200 KB of '<' still seals, and the incident's events flow", func(t *testing.T) {
		// 200 KB of '<' is 1.2 MB once JSON-escaped: before the contract's
		// bounds, incident.opened could never be published and held every
		// event of containment's outbox behind it.
		ev, err := events.New(events.BreachDetected, "/siem/test", events.BreachDetectedData{Summary: "x", Severity: events.SeverityCritical})
		must(t, err)
		body := fmt.Sprintf(`{"specversion":"1.0","id":%q,"type":%q,"source":"/siem/test","time":%q,"datacontenttype":"application/json","data":{"summary":%q,"severity":"critical"}}`,
			ev.ID(), ev.Type(), time.Now().UTC().Format(time.RFC3339Nano), strings.Repeat("<", 200_000))
		nc, _ := connectAs(t, s, events.UserSIEM)
		js, err := jetstream.New(nc)
		must(t, err)
		msg := nats.NewMsg(events.BreachDetected.Subject())
		msg.Header.Set(jetstream.MsgIDHeader, ev.ID())
		msg.Data = []byte(body)
		_, err = js.PublishMsg(ctx, msg)
		must(t, err)
		_, opened := waitEvent(t, s, events.IncidentOpened, 20*time.Second, func(d events.IncidentOpenedData) bool { return d.BreachEventID == ev.ID() })
		if len(opened.Summary) > events.DefaultTextLimit {
			t.Fatalf("incident.opened carries a summary of %d bytes", len(opened.Summary))
		}
		waitEvent(t, s, events.VaultSealed, 20*time.Second, func(d events.VaultSealedData) bool { return d.IncidentID == opened.IncidentID })
		if n, _ := outbox.Pending(ctx, pool, store.Schema); n > 0 {
			testwait.For(t, 10*time.Second, "the outbox to drain", func() bool { n, _ := outbox.Pending(ctx, pool, store.Schema); return n == 0 })
		}
		must(t, s.Vault.Unseal(ctx))
		resolveOpen(t, s)
	})

	t.Run("a request whose data PostgreSQL cannot hold is dead-lettered at once, not retried forever", func(t *testing.T) {
		ev := newBreach(t, "before a poisoned resume request")
		publishAsSIEM(t, siem, ev, nil)
		waitDetection(t, ctx, pool, ev.ID())
		id := openIncidentID(t, ctx, pool)
		op, _ := connectAs(t, s, events.UserOperator)
		js, err := jetstream.New(op)
		must(t, err)
		// "\u0000" is valid JSON and valid UTF-8, and PostgreSQL's jsonb
		// refuses it (SQLSTATE 22P05). Before, neither permanent nor an
		// outage: retried forever, and 64 of them stalled the consumers.
		_, err = stream.NewPublisher(js, events.SourceOf(events.ServiceCLI), nil).Publish(ctx, events.IncidentResumeRequested,
			events.IncidentControlData{IncidentID: id, RequestedBy: "\x00"})
		must(t, err)
		_, d := waitEvent(t, s, events.DeadLetter, 20*time.Second, func(d events.DeadLetterData) bool {
			return d.Consumer == events.ConsumerContainmentTimeline && strings.Contains(d.Reason, "22P05")
		})
		if d.Deliveries != 1 {
			t.Fatalf("dead-lettered after %d deliveries", d.Deliveries)
		}
		must(t, s.Vault.Unseal(ctx))
		resolveOpen(t, s)
	})

	t.Run("no secret reaches containment's log", func(t *testing.T) {
		c.stop()
		logs := c.logs.String()
		if !strings.Contains(logs, "every vault node confirmed sealed") {
			t.Fatalf("the log was not captured:\n%s", logs)
		}
		secrets := []string{s.Vault.SealToken, s.Vault.RootToken, testHMACKey, testBearerToken}
		secrets = append(secrets, s.Vault.UnsealKeys...)
		for _, u := range events.NATSUsers() {
			secrets = append(secrets, s.NATS.Password(u))
		}
		assertNoSecrets(t, logs, secrets...)
	})
}

type httpResult struct {
	code int
	body map[string]string
}

// signed returns headers with the intake's signature over a POST of body
// to /v1/breaches with them (every ce-* header included).
func signed(key string, body []byte, headers map[string]string, at time.Time) map[string]string {
	req, _ := http.NewRequest(http.MethodPost, "http://intake/v1/breaches", bytes.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	intake.SignRequest(key, req, body, at)
	out := map[string]string{}
	for k := range req.Header {
		out[k] = req.Header.Get(k)
	}
	return out
}

func post(t *testing.T, base string, body []byte, headers map[string]string) httpResult {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/breaches", bytes.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer func() { _ = resp.Body.Close() }()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out) // a body that is not JSON leaves out empty: the callers check it
	flat := map[string]string{}
	for k, v := range out {
		flat[k] = fmt.Sprint(v)
	}
	return httpResult{code: resp.StatusCode, body: flat}
}

func waitDetection(t *testing.T, ctx context.Context, pool *pgxpool.Pool, eventID string) {
	t.Helper()
	testwait.For(t, 10*time.Second, "detection "+eventID, func() bool {
		var n int
		err := pool.QueryRow(ctx, "SELECT count(*) FROM containment.detections WHERE event_id = $1", eventID).Scan(&n)
		return err == nil && n == 1
	})
}

func waitUnsealedPhase(t *testing.T, ctx context.Context, pool *pgxpool.Pool, incidentID string) {
	t.Helper()
	testwait.For(t, 10*time.Second, "phase unsealed", func() bool {
		var phase string
		err := pool.QueryRow(ctx, "SELECT phase FROM containment.incidents WHERE id = $1", incidentID).Scan(&phase)
		return err == nil && phase == "unsealed"
	})
}

func openIncidentID(t *testing.T, ctx context.Context, pool *pgxpool.Pool) string {
	t.Helper()
	var id string
	must(t, pool.QueryRow(ctx, "SELECT id::text FROM containment.incidents WHERE phase NOT IN ('resolved','failed')").Scan(&id))
	return id
}

func waitDeadLetter(t *testing.T, s *localstack.Stack, durable, contains string) events.DeadLetterData {
	t.Helper()
	_, d := waitEvent(t, s, events.DeadLetter, 10*time.Second, func(d events.DeadLetterData) bool {
		return d.Consumer == durable && strings.Contains(string(d.OriginalData), contains)
	})
	return d
}
