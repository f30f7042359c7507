package vaultclient_test

import (
	"errors"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/platform/vaultclient"
)

func TestNew(t *testing.T) {
	t.Run("the environment's namespace and token are not taken", func(t *testing.T) {
		t.Setenv("VAULT_NAMESPACE", "intruder-ns")
		t.Setenv("VAULT_TOKEN", "hvs.from-the-environment")
		t.Setenv("VAULT_MAX_RETRIES", "7")
		t.Setenv("VAULT_AGENT_ADDR", "http://127.0.0.1:1")
		c, err := vaultclient.New(vaultclient.Options{Address: "http://127.0.0.1:8200"})
		if err != nil {
			t.Fatal(err)
		}
		if c.Namespace() != "" || c.Token() != "" || c.MaxRetries() != 0 || c.Address() != "http://127.0.0.1:8200" {
			t.Fatalf("namespace %q, a token set %v, %d retries, address %s", c.Namespace(), c.Token() != "", c.MaxRetries(), c.Address())
		}
	})
	t.Run("the options are applied, defaults where unset", func(t *testing.T) {
		c, err := vaultclient.New(vaultclient.Options{Address: "http://127.0.0.1:8200", Token: "t", MaxRetries: 2})
		if err != nil {
			t.Fatal(err)
		}
		if c.Address() != "http://127.0.0.1:8200" || c.Token() != "t" || c.MaxRetries() != 2 || c.ClientTimeout() != 30*time.Second {
			t.Fatalf("address %s, retries %d, timeout %v", c.Address(), c.MaxRetries(), c.ClientTimeout())
		}
	})
	t.Run("an empty address is refused", func(t *testing.T) {
		if _, err := vaultclient.New(vaultclient.Options{}); !errors.Is(err, vaultclient.ErrNoAddress) {
			t.Fatalf("err %v", err)
		}
	})
}
