package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/dkimdns"
	"github.com/lockdown/lockdown/pkg/platform/vaultdecl"
	"github.com/lockdown/lockdown/pkg/platform/vaulttoken"
	"github.com/lockdown/lockdown/services/rotator/internal/keys"
	"github.com/lockdown/lockdown/services/rotator/internal/store"
	"github.com/lockdown/lockdown/services/rotator/internal/vaultkv"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// BenchmarkRotation measures the rotation phase for 1,000 tenants on the
// local stack (real Vault, NATS, PostgreSQL) in tenants/s: Lockdown with 1
// and 2 rotator processes, with and without key material pre-generated
// during the unseal gate, beside baselines measured in the same run — the
// runbook's sequential loop (one tenant after another), and the bare work
// (key generation and Vault writes on all cores, no bus, no database),
// also with the keys generated beforehand. Each run rotates every tenant
// of a new incident: SSH, SMTP and DKIM (RSA-2048) written with
// check-and-set, and 1–5 API keys destroyed (re-created before each run).
// The last configuration rolls the DKIM keys over through the stack's real
// DNS server (every tenant delegated: stage, publish by RFC 2136, read
// back, activate, revoke the old selector); the others make them active at
// once.
// -benchtime is ignored: one measurement per configuration.
//
// LOCKDOWN_BENCH_TENANTS sets the tenants (default 1,000);
// LOCKDOWN_BENCH_SAMPLE=N runs the two baselines that generate keys as they
// go (the sequential loop, the bare work on all cores) over the first N
// tenants only — their rate per tenant does not depend on the directory's
// size, and at 10,000 tenants they alone would take half an hour;
// LOCKDOWN_BENCH_ONLY=baselines stops after the baselines (the drill
// measures Lockdown at that scale).
func BenchmarkRotation(b *testing.B) {
	tenants := 1000
	if v := os.Getenv("LOCKDOWN_BENCH_TENANTS"); v != "" {
		if _, err := fmt.Sscan(v, &tenants); err != nil {
			b.Fatalf("LOCKDOWN_BENCH_TENANTS: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	s := localstack.StartTest(b, ctx, localstack.Options{NATS: true, NATSAuth: true, Postgres: true, Vault: true, DNS: true})
	db, err := store.Open(ctx, s.Postgres.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	root, _ := s.Vault.Client()
	kvRoot := root.KVv2("secret")
	ids := make([]string, tenants)
	for i := range ids {
		ids[i] = fmt.Sprintf("tenant-%04d", i)
	}
	parallel(ids, 16, func(id string) {
		_, err := db.Pool().Exec(ctx, `INSERT INTO directory.tenants (id, name, domain, contact_email, dkim_delegation) VALUES ($1, $1, $1 || '.example.com', 'sec@' || $1 || '.example.com', $2)`,
			id, localstack.Delegation(id))
		noteErr(b, err)
		for _, sec := range []string{"ssh", "smtp", "dkim"} {
			_, err := kvRoot.Put(ctx, "tenants/"+id+"/"+sec, map[string]any{"value": "seed"})
			noteErr(b, err)
		}
	})
	apiKeys := func() {
		parallel(ids, 16, func(id string) {
			n := 1 + len(id)%5
			for k := range n {
				_, err := kvRoot.Put(ctx, fmt.Sprintf("api_keys/%s/key-%d", id, k), map[string]any{"key": "v"})
				noteErr(b, err)
			}
		})
	}
	token, err := vaulttoken.Open("", s.Vault.RotatorFile)
	if err != nil {
		b.Fatal(err)
	}
	baseline, err := vaultdecl.Load(s.Vault.BaselineFile)
	if err != nil {
		b.Fatal(err)
	}
	kv, err := vaultkv.New(s.Vault.Addr, token, "secret", 30*time.Second, baseline.AuditDevices)
	if err != nil {
		b.Fatal(err)
	}
	// direct is the same work straight through Vault's API with the
	// rotator's token: no audit gate (the bare baselines); kv is the
	// rotator's own client, which looks at sys/audit before every write.
	direct := &directKV{c: root}
	if err := direct.setToken(token.Token()); err != nil {
		b.Fatal(err)
	}
	// bare does one tenant's work without the bus or the database.
	bare := func(incident, id string, set *keys.Set) { bareWith(b, ctx, direct, incident, id, set) }
	gated := func(incident, id string, set *keys.Set) { bareWith(b, ctx, kv, incident, id, set) }
	_ = kv
	results := map[string]float64{}
	sample := ids
	if v := os.Getenv("LOCKDOWN_BENCH_SAMPLE"); v != "" {
		var n int
		if _, err := fmt.Sscan(v, &n); err != nil || n < 1 {
			b.Fatalf("LOCKDOWN_BENCH_SAMPLE: %q", v)
		}
		sample = ids[:min(n, len(ids))]
	}
	measureOver := func(over []string, name string, run func()) {
		apiKeys()
		start := time.Now()
		run()
		rate := float64(len(over)) / time.Since(start).Seconds()
		results[name] = rate
		b.Logf("%-60s %8.1f tenants/s (%d tenants, %s)", name, rate, len(over), time.Since(start).Round(time.Millisecond))
	}
	measure := func(name string, run func()) { measureOver(ids, name, run) }
	b.ResetTimer()
	measureOver(sample, "baseline: sequential loop (runbook)", func() {
		for _, id := range sample {
			bare("seq", id, nil)
		}
	})
	measureOver(sample, "baseline: bare work, all cores", func() {
		parallel(sample, 4*runtime.NumCPU(), func(id string) { bare("bare", id, nil) })
	})
	sets := map[string]*keys.Set{}
	var mu sync.Mutex
	parallel(ids, runtime.NumCPU(), func(id string) {
		s, _ := keys.NewSet(id, "ldbench", "rsa", 2048)
		mu.Lock()
		sets[id] = &s
		mu.Unlock()
	})
	measure("baseline: bare work, keys generated beforehand", func() {
		parallel(ids, 4*runtime.NumCPU(), func(id string) { bare("bare-pre", id, sets[id]) })
	})
	measure("bare work, keys beforehand, through the rotator's audit gate", func() {
		parallel(ids, 4*runtime.NumCPU(), func(id string) { gated("bare-gated", id, sets[id]) })
	})
	rotatorKey, err := dkimdns.LoadKey(s.DNS.RotatorKeyFile)
	if err != nil {
		b.Fatal(err)
	}
	dnsClient := &dkimdns.Client{Server: s.DNS.Addr, Key: rotatorKey}
	measure("baseline: bare work, keys beforehand, DKIM through DNS, 32 in flight", func() {
		parallel(ids, 32, func(id string) { bareRollover(b, ctx, direct, dnsClient, s.DNS.DKIMZone, id, sets[id]) })
	})
	if os.Getenv("LOCKDOWN_BENCH_ONLY") == "baselines" {
		return
	}
	js := operator(b, ctx, s)
	for _, c := range []struct {
		procs  int
		pregen bool
		dns    bool
	}{{1, false, false}, {2, false, false}, {1, true, false}, {2, true, false}, {2, true, true}} {
		name := fmt.Sprintf("lockdown: %d rotator process(es), pre-generated keys %v", c.procs, c.pregen)
		env := []string{"LOCKDOWN_DKIM_DNS_SERVER="} // the last value wins: no DNS
		if c.dns {
			name, env = name+", DKIM through DNS", nil
		}
		incident := fmt.Sprintf("bench-%d-%v-%v", c.procs, c.pregen, c.dns)
		bin, err := localstack.Service(events.ServiceRotator)
		if err != nil {
			b.Fatal(err)
		}
		var pids []int
		for i := range c.procs {
			pid, _, err := s.Spawn(fmt.Sprintf("%s-%d", incident, i), bin, nil, append(append(s.Env(events.ServiceRotator),
				"LOCKDOWN_ROTATION_CONCURRENCY=16", fmt.Sprintf("LOCKDOWN_PREGENERATE=%v", c.pregen)), env...))
			if err != nil {
				b.Fatal(err)
			}
			pids = append(pids, pid)
		}
		waitLogs(b, s, incident, c.procs, `"msg":"consumer started","service":"rotator","consumer":"rotator-jobs"`)
		if c.pregen {
			openIncident(b, ctx, s, incident)
			waitLogs(b, s, incident, c.procs, fmt.Sprintf(`"incident_id":%q,"tenants":%d`, incident, tenants))
		}
		measure(name, func() {
			startIncident(b, ctx, s, incident, nil)
			done := awaitCompleted(b, ctx, js, incident)
			if done.Completed != tenants {
				b.Fatalf("%s: %+v", name, done)
			}
		})
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGTERM) // ESRCH if it already exited: the wait below then ends at once
		}
		for _, pid := range pids {
			for syscall.Kill(pid, 0) == nil {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	b.StopTimer()
	seq := results["baseline: sequential loop (runbook)"]
	for name, r := range results {
		if !strings.HasPrefix(name, "lockdown") {
			continue
		}
		// Compare like with like: pre-generated runs against the bare
		// writes with keys generated beforehand.
		bare := results["baseline: bare work, all cores"]
		if strings.Contains(name, "keys true") {
			bare = results["baseline: bare work, keys generated beforehand"]
		}
		b.Logf("%-60s %5.1f× the sequential loop, %3.0f%% of the bare work", name, r/seq, 100*r/bare)
		b.ReportMetric(r, strings.NewReplacer(" ", "_", ":", "", "(", "", ")", "").Replace(name)+"_tenants/s")
	}
}

// benchKV is what one tenant's bare work needs of Vault.
type benchKV interface {
	Latest(ctx context.Context, path string) (int, string, error)
	WriteCAS(ctx context.Context, path string, data map[string]any, cas int) (int, error)
	List(ctx context.Context, folder string) ([]string, error)
	Destroy(ctx context.Context, path string) error
}

// bareWith does one tenant's work through kv: SSH, SMTP and DKIM written
// with check-and-set, every API key destroyed.
func bareWith(b *testing.B, ctx context.Context, kv benchKV, incident, id string, set *keys.Set) {
	if set == nil {
		s, err := keys.NewSet(id, "ldbench", "rsa", 2048)
		if err != nil {
			b.Fatal(err)
		}
		set = &s
	}
	for sec, data := range map[string]map[string]any{
		"ssh":  {"private_key": set.SSH.PrivateKey, "public_key": set.SSH.PublicKey},
		"smtp": {"password": set.SMTPPassword},
		"dkim": {"private_key": set.DKIM.PrivateKey, "dns_record": set.DKIM.Record},
	} {
		data["lockdown_incident"] = incident
		v, _, err := kv.Latest(ctx, "tenants/"+id+"/"+sec)
		if err == nil {
			_, err = kv.WriteCAS(ctx, "tenants/"+id+"/"+sec, data, v)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	list, _ := kv.List(ctx, "api_keys/"+id+"/")
	for _, k := range list {
		must(b, kv.Destroy(ctx, "api_keys/"+id+"/"+k))
	}
}

// bareRollover is one tenant's bare work with the DKIM key rolled over as
// the rotator does it, without bus, database, gate or batching: SSH and
// SMTP written, the API keys destroyed, the DKIM key staged at
// dkim-pending, its record published (one RFC 2136 update) and read back,
// the key copied to dkim, the other selector revoked, the staged copy
// destroyed.
func bareRollover(b *testing.B, ctx context.Context, kv *directKV, dns *dkimdns.Client, zone, id string, set *keys.Set) {
	for sec, data := range map[string]map[string]any{
		"ssh":  {"private_key": set.SSH.PrivateKey, "public_key": set.SSH.PublicKey},
		"smtp": {"password": set.SMTPPassword},
	} {
		v, _, err := kv.Latest(ctx, "tenants/"+id+"/"+sec)
		if err == nil {
			_, err = kv.WriteCAS(ctx, "tenants/"+id+"/"+sec, data, v)
		}
		noteErr(b, err)
	}
	list, _ := kv.List(ctx, "api_keys/"+id+"/")
	for _, k := range list {
		noteErr(b, kv.Destroy(ctx, "api_keys/"+id+"/"+k))
	}
	dkim := map[string]any{"private_key": set.DKIM.PrivateKey, "dns_record": set.DKIM.Record}
	_, err := kv.WriteCAS(ctx, "tenants/"+id+"/dkim-pending", dkim, 0)
	noteErr(b, err)
	name := "ld1." + localstack.Delegation(id)
	noteErr(b, dns.ReplaceTXT(ctx, zone, name, set.DKIM.Record, 60))
	if _, err := dns.Lookup(ctx, name); err != nil {
		noteErr(b, err)
	}
	v, _, err := kv.Latest(ctx, "tenants/"+id+"/dkim")
	if err == nil {
		_, err = kv.WriteCAS(ctx, "tenants/"+id+"/dkim", dkim, v)
	}
	noteErr(b, err)
	noteErr(b, dns.ReplaceTXT(ctx, zone, "ld2."+localstack.Delegation(id), "v=DKIM1; p=", 60))
	noteErr(b, kv.Destroy(ctx, "tenants/"+id+"/dkim-pending"))
}

// directKV is the bare baselines' Vault: the API with the rotator's
// token, no gate.
type directKV struct{ c *vault.Client }

func (d *directKV) setToken(token string) error {
	c, err := d.c.Clone()
	if err != nil {
		return err
	}
	c.SetToken(token)
	d.c = c
	return nil
}

func (d *directKV) Latest(ctx context.Context, path string) (int, string, error) {
	m, err := d.c.Logical().ReadWithContext(ctx, "secret/metadata/"+path)
	if err != nil || m == nil {
		return 0, "", err
	}
	n, _ := m.Data["current_version"].(json.Number).Int64()
	return int(n), "", nil
}

func (d *directKV) WriteCAS(ctx context.Context, path string, data map[string]any, cas int) (int, error) {
	_, err := d.c.Logical().WriteWithContext(ctx, "secret/data/"+path, map[string]any{"options": map[string]any{"cas": cas}, "data": data})
	return 0, err
}

func (d *directKV) List(ctx context.Context, folder string) ([]string, error) {
	s, err := d.c.Logical().ListWithContext(ctx, "secret/metadata/"+folder)
	if err != nil || s == nil {
		return nil, err
	}
	var out []string
	for _, k := range s.Data["keys"].([]any) {
		out = append(out, k.(string))
	}
	return out, nil
}

func (d *directKV) Destroy(ctx context.Context, path string) error {
	_, err := d.c.Logical().DeleteWithContext(ctx, "secret/metadata/"+path)
	return err
}

// noteErr reports err without stopping the benchmark: it is for the
// functions parallel runs on its goroutines, where b.Fatal must not be
// called.
func noteErr(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Error(err)
	}
}

func parallel(ids []string, n int, fn func(string)) {
	work := make(chan string)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				fn(id)
			}
		}()
	}
	for _, id := range ids {
		work <- id
	}
	close(work)
	wg.Wait()
}

// waitLogs waits until each of the run's rotator logs holds the line.
func waitLogs(b *testing.B, s *localstack.Stack, prefix string, procs int, want string) {
	deadline := time.Now().Add(10 * time.Minute)
	for {
		ok := 0
		for i := range procs {
			log, _ := os.ReadFile(filepath.Join(s.Dir, fmt.Sprintf("%s-%d.log", prefix, i)))
			if strings.Contains(string(log), want) {
				ok++
			}
		}
		if ok == procs {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("rotator logs never showed %s", want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
