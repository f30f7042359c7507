package app_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// TestReadyMeansListening follows docs/operations.md as an operator does:
// start the assessor, wait for /readyz, then enable Vault's socket audit
// device at once. Vault refuses the device while nothing accepts at the
// address, so /readyz must not answer 200 before the listener does.
func TestReadyMeansListening(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.Options{NATS: true, NATSAuth: true, Postgres: true, Vault: true})
	bin, err := localstack.Service(events.ServiceAssessor)
	must(t, err)
	api, err := s.Vault.Client()
	must(t, err)
	for i := range 3 {
		t.Run(fmt.Sprintf("run %d: the socket audit device is enabled right after /readyz says ready", i+1), func(t *testing.T) {
			health, audit := freeAddr(t), freeAddr(t)
			env := append(s.Env(events.ServiceAssessor), "LOCKDOWN_HEALTH_ADDR="+health, "LOCKDOWN_AUDIT_LISTEN="+audit, "LOCKDOWN_AUDIT_FILE=")
			pid, _, err := s.Spawn(fmt.Sprintf("assessor-%d", i), bin, nil, env)
			if err != nil {
				t.Fatalf("%v (run make build)", err)
			}
			defer func() { _ = s.Kill(pid) }()
			deadline := time.Now().Add(time.Minute)
			for {
				resp, err := http.Get("http://" + health + "/readyz")
				if err == nil {
					_ = resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						break
					}
				}
				if time.Now().After(deadline) {
					t.Fatal("the assessor never became ready")
				}
				time.Sleep(5 * time.Millisecond)
			}
			path := fmt.Sprintf("socket-%d", i)
			if err := api.Sys().EnableAuditWithOptionsWithContext(ctx, path, &vault.EnableAuditOptions{Type: "socket",
				Options: map[string]string{"address": audit, "socket_type": "tcp"}}); err != nil {
				t.Fatalf("vault audit enable socket right after /readyz: %v", err)
			}
			// The device must go before the assessor does: a socket device
			// that cannot write (with the file device beside it) is harmless,
			// but leave Vault as it was.
			must(t, api.Sys().DisableAuditWithContext(ctx, path))
		})
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}
