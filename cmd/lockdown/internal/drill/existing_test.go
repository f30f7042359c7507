package drill_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockdown/lockdown/cmd/lockdown/internal/cli"
	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// TestDrillExistingServers follows docs/operations.md as a newcomer would:
// servers already run (here the local stack stands for staging), the four
// services are started against them with their own credentials, and
// `lockdown-drill --existing` drills there, playing the key holders only
// because it is told to and given the shares.
func TestDrillExistingServers(t *testing.T) {
	t.Run("without addresses and credentials it says everything that is missing and exits 2", func(t *testing.T) {
		t.Setenv("LOCKDOWN_NATS_URL", "")
		t.Setenv("LOCKDOWN_DATABASE_URL", "")
		t.Setenv("LOCKDOWN_VAULT_ADDR", "")
		t.Setenv("LOCKDOWN_DRILL_VAULT_TOKEN", "")
		code, _, errOut := runDrill(context.Background(), "--existing", "--play-key-holders")
		for _, want := range []string{"--nats-url", "--database-url", "--vault-addr", "LOCKDOWN_DRILL_VAULT_TOKEN", "--unseal-keys-file", events.NATSPasswordEnv(events.UserSIEM)} {
			if !strings.Contains(errOut, want) {
				t.Errorf("the error does not name %s: %s", want, errOut)
			}
		}
		if code != cli.ExitUsage {
			t.Fatalf("exit %d", code)
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.All())
	for _, svc := range []string{events.ServiceContainment, events.ServiceAssessor, events.ServiceRotator, events.ServiceNotifier} {
		bin, err := localstack.Service(svc)
		if err != nil {
			t.Fatal(err)
		}
		env := s.Env(svc)
		if svc == events.ServiceContainment {
			// The drill's admin token must survive the lockdown: the
			// operator lists it as break-glass (docs/operations.md).
			env = append(env, "LOCKDOWN_BREAK_GLASS="+s.Vault.RootAccessor)
		}
		if _, _, err := s.Spawn(svc, bin, nil, env); err != nil {
			t.Fatal(err)
		}
	}
	keys := filepath.Join(t.TempDir(), "shares")
	if err := os.WriteFile(keys, []byte(strings.Join(s.Vault.UnsealKeys, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LOCKDOWN_DRILL_VAULT_TOKEN", s.Vault.RootToken)
	t.Setenv(events.NATSPasswordEnv(events.UserSIEM), s.NATS.Password(events.UserSIEM))
	t.Setenv(events.NATSPasswordEnv(events.UserOperator), s.NATS.Password(events.UserOperator))

	t.Run("a shares file others may read is refused", func(t *testing.T) {
		open := filepath.Join(t.TempDir(), "shares")
		if err := os.WriteFile(open, []byte("x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, errOut := runDrill(ctx, "--existing", "--nats-url", s.NATS.URL, "--database-url", s.Postgres.URL, "--vault-addr", s.Vault.Addr,
			"--play-key-holders", "--unseal-keys-file", open)
		if code != cli.ExitUsage || !strings.Contains(errOut, "chmod 600") {
			t.Fatalf("exit %d: %s", code, errOut)
		}
	})
	t.Run("the drill runs against the running services and its checks pass", func(t *testing.T) {
		code, stdout, stderr := runDrill(ctx, "--existing", "--json", "--tenants", "12", "--intruder-reads", "3",
			"--nats-url", s.NATS.URL, "--database-url", s.Postgres.URL, "--vault-addr", s.Vault.Addr,
			"--play-key-holders", "--unseal-keys-file", keys, "--mailpit-url", s.Mailpit.APIURL,
			"--jaeger-url", s.Jaeger.QueryURL, "--otlp-endpoint", s.Jaeger.OTLPHTTPEndpoint)
		var res struct {
			OK       bool
			Problems []string
			Verified struct {
				RotatedInVault int  `json:"rotated_in_vault"`
				TenantsMailed  int  `json:"tenants_mailed"`
				MailChecked    bool `json:"mail_checked"`
			}
			Breach struct{ Services []string }
		}
		if err := json.Unmarshal([]byte(stdout), &res); err != nil {
			t.Fatalf("exit %d, not JSON: %v\n%s", code, err, stderr)
		}
		if code != cli.ExitOK || !res.OK || res.Verified.RotatedInVault != 12 || !res.Verified.MailChecked || res.Verified.TenantsMailed != 12 || len(res.Breach.Services) < 5 {
			t.Fatalf("exit %d, result %+v, stderr %s", code, res, stderr)
		}
		// The rekey replaced the shares: the file holds the new ones, which
		// open the staging Vault (the old ones no longer would).
		b, err := os.ReadFile(keys)
		if err != nil {
			t.Fatal(err)
		}
		fresh := strings.Fields(string(b))
		if len(fresh) != localstack.VaultShares || fresh[0] == s.Vault.UnsealKeys[0] {
			t.Fatalf("shares file not updated: %d shares", len(fresh))
		}
		root, err := s.Vault.Client()
		if err != nil {
			t.Fatal(err)
		}
		if err := root.Sys().SealWithContext(ctx); err != nil { // the root token is break-glass: it survived
			t.Fatal(err)
		}
		staging := &localstack.Vault{Addr: s.Vault.Addr, UnsealKeys: fresh}
		if err := staging.Unseal(ctx); err != nil {
			t.Fatalf("the new shares do not unseal: %v", err)
		}
	})
}
