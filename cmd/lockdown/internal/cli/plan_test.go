package cli_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockdown/lockdown/cmd/lockdown/internal/cli"
	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/pkg/platform/natsconn"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/testkit/localstack"
	"github.com/lockdown/lockdown/testkit/tenantseed"
)

// TestPlan runs `lockdown plan` against a real Vault holding the tenants'
// secrets, the platform estate deploy/rotation/catalogue.json covers, and
// three things nothing covers: it names exactly those, counts every kind,
// exits 1 until they are gone and 0 after, and its requests — read from
// Vault's audit log — list and read metadata only, never a secret's data.
func TestPlan(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.Options{Vault: true, Postgres: true, NATS: true, NATSAuth: true})
	root, err := s.Vault.Client()
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, s.Postgres.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	const tenants = 4
	if _, err := tenantseed.Seed(ctx, pool, root, tenantseed.Options{Count: tenants, APIKeys: func(int) int { return 2 }}); err != nil {
		t.Fatal(err)
	}
	estate, err := s.SeedPlatform(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// What nothing covers: a secret outside every pattern, a KV mount and
	// a TOTP engine no entry names.
	if _, err := root.KVv2(localstack.VaultKVMount).Put(ctx, "legacy/ftp", map[string]any{"password": "x"}); err != nil {
		t.Fatal(err)
	}
	for path, typ := range map[string]string{"team-kv": "kv-v2", "totp": "totp"} {
		if err := root.Sys().MountWithContext(ctx, path, &vault.MountInput{Type: typ}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := root.KVv2("team-kv").Put(ctx, "ci/deploy", map[string]any{"token": "x"}); err != nil {
		t.Fatal(err)
	}
	repo, err := localstack.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("VAULT_ADDR", s.Vault.Addr)
	t.Setenv("VAULT_TOKEN", s.Vault.RootToken)
	// The operator's NATS identity: the plan is kept for the console.
	t.Setenv("LOCKDOWN_NATS_URL", s.NATS.URL)
	t.Setenv("LOCKDOWN_NATS_USER", events.UserOperator)
	t.Setenv("LOCKDOWN_NATS_PASSWORD", s.NATS.Password(events.UserOperator))
	args := []string{"plan", "--json", "--catalogue", estate.Catalogue, "--baseline", filepath.Join(repo, "deploy", "vault", "baseline.json")}

	from := auditSize(t, s)
	code, out, errOut := run(ctx, args...)
	if code != cli.ExitFailure {
		t.Fatalf("exit %d with gaps, want %d: %s", code, cli.ExitFailure, errOut)
	}
	var plan credentials.Plan
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Run("it names exactly what nothing covers", func(t *testing.T) {
		var gaps []string
		for _, g := range plan.Uncovered {
			gaps = append(gaps, g.Mount+":"+g.Item)
		}
		slices.Sort(gaps)
		if want := []string{"secret:legacy/ftp", "team-kv:", "totp:"}; !slices.Equal(gaps, want) {
			t.Errorf("uncovered %v, want %v", gaps, want)
		}
		if !slices.Equal(plan.UndeclaredMounts, []string{"team-kv", "totp"}) {
			t.Errorf("undeclared mounts %v, want team-kv and totp", plan.UndeclaredMounts)
		}
	})
	t.Run("it counts every kind", func(t *testing.T) {
		want := map[credentials.Kind]int{credentials.SSH: tenants, credentials.SMTP: tenants, credentials.DKIM: tenants, credentials.APIKeys: 2 * tenants,
			credentials.Transit: len(estate.TransitKeys), credentials.Database: 2, credentials.PKI: 2, credentials.KV: len(estate.Secrets)}
		for _, k := range plan.Kinds {
			if k.Count != want[k.Kind] {
				t.Errorf("%s: %d, want %d", k.Kind, k.Count, want[k.Kind])
			}
		}
		if plan.Tenants != tenants || plan.Tokens < 4 || !slices.Equal(plan.AuthMounts, []string{"approle", "jwt"}) {
			t.Errorf("tenants %d, tokens %d, auth mounts %v", plan.Tenants, plan.Tokens, plan.AuthMounts)
		}
	})
	t.Run("it is kept for the console and the reports, where only the operator may write it", func(t *testing.T) {
		conn, err := natsconn.Connect(ctx, natsconn.Options{URL: s.NATS.URL, User: events.UserOperator, Password: s.NATS.Password(events.UserOperator)})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close(context.Background()) }()
		kept, err := stream.LastPlan(ctx, conn.JS)
		if err != nil || kept == nil || len(kept.Uncovered) != len(plan.Uncovered) || !kept.At.Equal(plan.At) {
			t.Fatalf("kept %+v, %v", kept, err)
		}
		rot, err := natsconn.Connect(ctx, natsconn.Options{URL: s.NATS.URL, User: events.ServiceRotator, Password: s.NATS.Password(events.ServiceRotator)})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = rot.Close(context.Background()) }()
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if err := stream.PutPlan(pctx, rot.JS, credentials.Plan{}); err == nil {
			t.Error("the rotator wrote the plans bucket")
		}
	})
	t.Run("the console's first page shows the last plan and its gaps", func(t *testing.T) {
		rm, err := cli.OpenReadModelForTest(ctx, s.NATS.URL, s.NATS.Password(events.UserOperator))
		if err != nil {
			t.Fatal(err)
		}
		defer rm.Close()
		req := httptest.NewRequest("GET", "/", nil)
		req.Host = "127.0.0.1:8090"
		w := httptest.NewRecorder()
		rm.Console().ServeHTTP(w, req)
		body := w.Body.String()
		for _, want := range []string{"Last plan", "3 not covered", "legacy/ftp", "team-kv", "transit encryption keys"} {
			if !strings.Contains(body, want) {
				t.Errorf("the page lacks %q (status %d)", want, w.Code)
			}
		}
	})
	t.Run("it reads no secret value", func(t *testing.T) {
		n := 0
		for _, req := range auditRequests(t, s, from) {
			n++
			ok := req.Operation == "list" || (req.Operation == "read" && (req.Path == "sys/mounts" || req.Path == "sys/auth"))
			if !ok {
				t.Errorf("the plan made a %s of %s", req.Operation, req.Path)
			}
		}
		if n < 10 {
			t.Errorf("only %d requests in the audit log: the check saw nothing", n)
		}
	})
	t.Run("once the gaps are gone it exits 0", func(t *testing.T) {
		if err := root.KVv2(localstack.VaultKVMount).DeleteMetadata(ctx, "legacy/ftp"); err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{"team-kv", "totp"} {
			if err := root.Sys().UnmountWithContext(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
		code, out, errOut := run(ctx, "plan", "--catalogue", estate.Catalogue, "--baseline", args[5])
		if code != cli.ExitOK || !strings.Contains(out, "Every credential Vault holds is covered") {
			t.Fatalf("exit %d: %s%s", code, out, errOut)
		}
	})
	t.Run("bad input is named at once", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "catalogue.json")
		if err := os.WriteFile(bad, []byte(`{"entries": [{"name": "x", "kind": "aws", "mount": "aws"}]}`), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("VAULT_TOKEN", "")
		code, _, errOut := run(ctx, "plan", "--catalogue", bad, "--baseline", args[5])
		if code != cli.ExitUsage || !strings.Contains(errOut, `unknown kind "aws"`) || !strings.Contains(errOut, "VAULT_TOKEN") {
			t.Fatalf("exit %d: %s", code, errOut)
		}
	})
}

func auditSize(t *testing.T, s *localstack.Stack) int64 {
	t.Helper()
	fi, err := os.Stat(s.Vault.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

type auditRequest struct{ Operation, Path string }

// auditRequests reads the requests Vault's file audit device logged after
// offset from.
func auditRequests(t *testing.T, s *localstack.Stack, from int64) []auditRequest {
	t.Helper()
	f, err := os.Open(s.Vault.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	var out []auditRequest
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var line struct {
			Type    string `json:"type"`
			Request struct {
				Operation string `json:"operation"`
				Path      string `json:"path"`
			} `json:"request"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Type == "request" {
			out = append(out, auditRequest{line.Request.Operation, line.Request.Path})
		}
	}
	return out
}
