package localstack_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/testkit/localstack"
)

func TestStack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := localstack.Start(ctx, localstack.All())
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = s.Close()
		}
	})

	t.Run("NATS answers with JetStream enabled", func(t *testing.T) {
		nc, err := nats.Connect(s.NATS.URL, nats.UserInfo(events.UserOperator, s.NATS.Password(events.UserOperator)),
			nats.CustomInboxPrefix(events.InboxPrefix(events.UserOperator)))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		if _, err := js.AccountInfo(ctx); err != nil {
			t.Fatalf("jetstream: %v", err)
		}
	})

	t.Run("NATS refuses a client without credentials", func(t *testing.T) {
		if nc, err := nats.Connect(s.NATS.URL); err == nil {
			nc.Close()
			t.Fatal("an anonymous client was let in")
		}
	})

	t.Run("PostgreSQL serves the lockdown database over TCP with a password", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, s.Postgres.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close(ctx) }()
		var db string
		if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil || db != "lockdown" {
			t.Fatalf("database %q, %v", db, err)
		}
	})

	t.Run("Vault is a real initialised, unsealed server with audit, KV v2 and the runbook's auth methods", func(t *testing.T) {
		c, err := s.Vault.Client()
		if err != nil {
			t.Fatal(err)
		}
		st, err := c.Sys().SealStatusWithContext(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Sealed || !st.Initialized || st.N != 5 || st.T != 3 || st.Type != "shamir" {
			t.Fatalf("seal status %+v", st)
		}
		if len(s.Vault.UnsealKeys) != 5 {
			t.Fatalf("%d unseal keys", len(s.Vault.UnsealKeys))
		}
		audits, err := c.Sys().ListAuditWithContext(ctx)
		if err != nil || audits["file/"] == nil {
			t.Fatalf("audit devices %v, %v", audits, err)
		}
		auths, err := c.Sys().ListAuthWithContext(ctx)
		if err != nil || auths["approle/"] == nil || auths["jwt/"] == nil {
			t.Fatalf("auth methods %v, %v", auths, err)
		}
		kv := c.KVv2("secret")
		if _, err := kv.Put(ctx, "tenants/acme/smtp", map[string]any{"password": "x"}); err != nil {
			t.Fatalf("kv put: %v", err)
		}
		if info, err := os.Stat(s.Vault.AuditLog); err != nil || info.Size() == 0 {
			t.Fatalf("audit log not written: %v", err)
		}
	})

	t.Run("Jaeger's query API and Mailpit's API answer", func(t *testing.T) {
		for _, u := range []string{s.Jaeger.QueryURL + "/api/services", s.Mailpit.APIURL + "/api/v1/messages"} {
			resp, err := http.Get(u)
			if err != nil {
				t.Fatal(err)
			}
			var body map[string]any
			err = json.NewDecoder(resp.Body).Decode(&body)
			_ = resp.Body.Close()
			if resp.StatusCode != 200 || err != nil {
				t.Fatalf("%s: %s %v", u, resp.Status, err)
			}
		}
	})

	t.Run("after Close every port is free, no server process is left and the directory is gone", func(t *testing.T) {
		ports, pids, dir := s.Ports(), s.PIDs(), s.Dir
		if len(ports) < 9 || len(pids) != 5 {
			t.Fatalf("ports %v pids %v", ports, pids)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		closed = true
		for _, p := range ports {
			if !localstack.PortFree(p) {
				t.Errorf("port %d still answers", p)
			}
		}
		for _, pid := range pids {
			if err := syscall.Kill(pid, 0); err == nil {
				t.Errorf("process %d still exists", pid)
			}
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s still exists", dir)
		}
	})
}
