package app_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockdown/lockdown/services/assessor/internal/app"
	"github.com/lockdown/lockdown/services/assessor/internal/assess"
	"github.com/lockdown/lockdown/services/assessor/internal/audit"
	"github.com/lockdown/lockdown/services/assessor/internal/ingest"
	"github.com/lockdown/lockdown/services/assessor/internal/store"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// BenchmarkAssessment loads 1,000,000 realistic audit lines (500,000
// requests and their responses over 24 h of a busy cluster: 300 tenants,
// five service identities reading their tenants' secrets, writes, a few
// errors, one intruder) through the ingestion pipeline into PostgreSQL, as
// the socket device writes them and then again as the file device beside
// it writes them (each device with its own accessor HMACs, so the second
// feed stores nothing new but ties every token's two accessors together),
// and assesses the window, beside two baselines measured in the same run:
// a bare COPY of the same rows into an unindexed table (the ingestion
// floor) and the same counts computed with one GROUP BY over the raw
// entries (what the hourly aggregates replace). Run it with make bench;
// -benchtime is ignored (one load per run), the figures are printed and
// reported.
func BenchmarkAssessment(b *testing.B) {
	const lines = 1_000_000
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	s := localstack.StartTest(b, ctx, localstack.Options{Postgres: true})
	db, err := store.Open(ctx, s.Postgres.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	end := time.Now().UTC().Truncate(time.Minute)
	data := generate(lines, end, "socket")
	cfg := &app.Config{TenantTemplates: []string{"secret/data/tenants/{tenant}/", "secret/metadata/tenants/{tenant}/", "secret/data/api_keys/{tenant}/"},
		SuspiciousPatterns: []string{"sys/raw/", "auth/token/create"}}
	tenants, _ := audit.ParseTemplates(cfg.TenantTemplates)
	b.ResetTimer()

	// Baseline 1: bare COPY of the parsed rows into an unindexed table.
	parsed := make([][]any, 0, lines)
	for _, l := range data {
		e, err := audit.Parse(l, tenants)
		if err != nil {
			b.Fatal(err)
		}
		parsed = append(parsed, []any{e.RequestID, e.Type, e.Time, e.Path, e.Accessor, string(l)})
	}
	conn, err := db.Pool().Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	_, err = conn.Exec(ctx, `CREATE TABLE bare_copy (request_id text, type text, time timestamptz, path text, accessor text, raw text)`)
	must(b, err)
	start := time.Now()
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"bare_copy"}, []string{"request_id", "type", "time", "path", "accessor", "raw"}, pgx.CopyFromRows(parsed)); err != nil {
		b.Fatal(err)
	}
	bareCopy := time.Since(start)
	_, err = conn.Exec(ctx, `DROP TABLE bare_copy`)
	must(b, err)
	conn.Release()

	// Lockdown: parse, de-duplicate, index and aggregate through the pipeline.
	p := ingest.NewPipeline(db, ingest.Options{Buffer: 50_000, BatchSize: 20_000, FlushEvery: 100 * time.Millisecond, MaxLine: 1 << 20,
		Parsers: 2, Writers: 2, Tenants: tenants, PatternHit: cfg.PatternHit, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { p.Run(runCtx); close(done) }()
	feed := func(device string, data [][]byte, total int64) time.Duration {
		start := time.Now()
		for _, l := range data {
			if err := p.Put(ctx, device, l); err != nil {
				b.Fatal(err)
			}
		}
		for p.Stats.Stored.Load()+p.Stats.Repeated.Load()+p.Stats.Malformed.Load() < total {
			time.Sleep(5 * time.Millisecond)
		}
		return time.Since(start)
	}
	ingestTime := feed("socket", data, lines)
	data = generate(lines, end, "file")
	secondFeedTime := feed("file", data, 2*lines)
	stop()
	<-done
	_, err = db.Pool().Exec(ctx, `ANALYZE assessor.audit_entries; ANALYZE assessor.audit_hourly`)
	must(b, err)

	// Assessment of the whole 24 h window, detection a few minutes past the hour.
	detected := end.Add(-17 * time.Minute)
	var trusted []string
	for i := range serviceNames {
		trusted = append(trusted, serviceEntity(i))
	}
	acfg := assess.Config{Window: 24 * time.Hour, WidespreadAbove: 10, TrustedEntities: trusted, ListLimit: 500}
	var best, naiveBest time.Duration
	var res assess.Result
	for i := range 3 {
		start = time.Now()
		if res, err = assess.Assess(ctx, db, acfg, "bench", detected); err != nil {
			b.Fatal(err)
		}
		if d := time.Since(start); i == 0 || d < best {
			best = d
		}
		start = time.Now()
		rows, err := db.Pool().Query(ctx, `SELECT accessor, entity_id, display_name, remote_address, tenant, kind, count(*) FILTER (WHERE pattern_hit), count(*)
			FROM assessor.audit_entries WHERE type = 'response' AND time >= $1 AND time < $2 GROUP BY 1, 2, 3, 4, 5, 6`, detected.Add(-24*time.Hour), detected)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for rows.Next() {
			n++
		}
		rows.Close()
		if d := time.Since(start); i == 0 || d < naiveBest {
			naiveBest = d
		}
	}
	b.StopTimer()
	rate := float64(lines) / ingestTime.Seconds()
	b.ReportMetric(rate, "ingest_entries/s")
	b.ReportMetric(float64(lines)/secondFeedTime.Seconds(), "second_device_entries/s")
	b.ReportMetric(float64(lines)/bareCopy.Seconds(), "bare_copy_rows/s")
	b.ReportMetric(float64(best.Milliseconds()), "assess_ms")
	b.ReportMetric(float64(naiveBest.Milliseconds()), "naive_groupby_ms")
	b.Logf("ingested %d lines in %s: %.0f entries/s (bare COPY of the same rows: %.0f rows/s); stored %d, malformed %d",
		lines, ingestTime.Round(time.Millisecond), rate, float64(lines)/bareCopy.Seconds(), p.Stats.Stored.Load(), p.Stats.Malformed.Load())
	b.Logf("the same %d lines through a second audit device (repeats, accessors linked): %s, %.0f entries/s; repeated %d",
		lines, secondFeedTime.Round(time.Millisecond), float64(lines)/secondFeedTime.Seconds(), p.Stats.Repeated.Load())
	lead := res.Actors[0]
	b.Logf("assessment over 24 h: %s (best of 3; naive GROUP BY over raw entries: %s); scope %s, %d affected tenants, %d actors, lead actor %s (%v) with %d tenants and %d accessors",
		best.Round(time.Millisecond), naiveBest.Round(time.Millisecond), res.Scope, len(res.AffectedTenants), len(res.Actors), lead.Key, lead.DisplayNames, len(lead.Tenants), len(lead.Accessors))
	if len(res.Actors) != len(serviceNames)+1 || len(lead.Accessors) != 2 || lead.DisplayNames[0] != "token-leaked" {
		b.Fatalf("the assessment did not find one actor per identity across both devices with the intruder leading: %+v", res.Actors)
	}
	var plan []string
	rows, _ := db.Pool().Query(ctx, `EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) SELECT accessor, entity_id, display_name, remote_address, tenant, kind, sum(pattern_hits)::bigint, sum(count)::bigint
		FROM assessor.audit_hourly WHERE hour >= $1 AND hour < $2 GROUP BY 1, 2, 3, 4, 5, 6`, detected.Add(-23*time.Hour).Truncate(time.Hour), detected.Truncate(time.Hour))
	for rows.Next() {
		var l string
		must(b, rows.Scan(&l))
		plan = append(plan, l)
	}
	b.Logf("plan of the aggregate query:\n%s", strings.Join(plan, "\n"))
}

var serviceNames = []string{"token-mailer", "token-dkim-signer", "token-dashboard", "token-billing", "token-smtp-relay"}

// serviceEntity is the entity id of service i.
func serviceEntity(i int) string { return fmt.Sprintf("%08x-0000-4000-8000-%012x", i+1, i+1) }

// generate makes n audit lines (request + response pairs) spread over the
// 24 h before end, as the named audit device writes them: the same
// requests for every device, each device with its own accessor HMACs.
func generate(n int, end time.Time, device string) [][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	out := make([][]byte, 0, n)
	kinds := []string{"ssh", "smtp", "dkim"}
	for i := 0; len(out) < n; i++ {
		t := end.Add(-time.Duration(r.Int64N(int64(24 * time.Hour))))
		tenant := fmt.Sprintf("tenant-%03d", r.IntN(300))
		ai := r.IntN(len(serviceNames))
		actor, op, path, errText := serviceNames[ai], "read", "", ""
		accessor, entity := "hmac-sha256:"+device+"-"+actor, serviceEntity(ai)
		remote := fmt.Sprintf("10.0.%d.%d", ai, 10+r.IntN(3)) // a few pods per service
		switch x := r.IntN(1000); {
		case x < 850:
			path = "secret/data/tenants/" + tenant + "/" + kinds[r.IntN(3)]
		case x < 940:
			op, path = "update", "secret/data/tenants/"+tenant+"/"+kinds[r.IntN(3)]
		case x < 990:
			op, path = "list", "secret/metadata/tenants/"
		case x < 995:
			path, errText = "secret/data/config/"+actor, "permission denied"
		default:
			actor, accessor, entity, remote = "token-leaked", "hmac-sha256:"+device+"-intruder", "", "203.0.113.7"
			path = "secret/data/api_keys/" + tenant + "/k1"
			if r.IntN(10) == 0 {
				path, errText = "sys/raw/core/keyring", "permission denied"
			}
		}
		id := fmt.Sprintf("%016x-%08x", r.Uint64(), i)
		authPart := fmt.Sprintf(`"auth":{"client_token":"hmac-sha256:ct%d","accessor":%q,"display_name":%q,"policies":["default","svc"],"entity_id":%q}`, i%97, accessor, actor, entity)
		req := fmt.Sprintf(`{"time":%q,"type":"request",%s,"request":{"id":%q,"operation":%q,"mount_type":"kv","path":%q,"remote_address":%q,"namespace":{"id":"root"}}}`,
			t.Format(time.RFC3339Nano), authPart, id, op, path, remote)
		errField := ""
		if errText != "" {
			errField = fmt.Sprintf(`,"error":%q`, errText)
		}
		resp := fmt.Sprintf(`{"time":%q,"type":"response",%s,"request":{"id":%q,"operation":%q,"mount_type":"kv","path":%q,"remote_address":%q},"response":{"mount_type":"kv","data":{"data":{"value":"hmac-sha256:v"}}}%s}`,
			t.Add(300*time.Microsecond).Format(time.RFC3339Nano), authPart, id, op, path, remote, errField)
		out = append(out, []byte(req), []byte(resp))
	}
	return out[:n]
}
