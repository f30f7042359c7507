package app_test

import (
	"bytes"
	"errors"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockdown/lockdown/testkit/localstack"
)

// TestStartRefusesMissingFiles: a containment whose baseline file is
// missing used to answer /readyz 200, then exit 1 some 200 ms later when
// it read the file. It now reads every file its configuration names while
// validating it: exit 2, the variable named, and /readyz never answers.
func TestStartRefusesMissingFiles(t *testing.T) {
	root, err := localstack.RepoRoot()
	must(t, err)
	bin, err := localstack.Service("containment")
	if err != nil {
		t.Fatal(err)
	}
	health := freeAddr(t)
	vault := filepath.Join(root, "deploy", "vault")
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LOCKDOWN_HEALTH_ADDR=" + health, "LOCKDOWN_DATABASE_URL=postgres://nobody@127.0.0.1:1/none",
		"LOCKDOWN_VAULT_ADDR=http://127.0.0.1:1", "LOCKDOWN_VAULT_SEAL_TOKEN=seal", "LOCKDOWN_VAULT_RECOVERY_TOKEN=recovery",
		"LOCKDOWN_REKEY_REQUIRE_VERIFICATION=true", "LOCKDOWN_AUTH_DIR=" + filepath.Join(vault, "auth"),
		"LOCKDOWN_VAULT_POLICY_DIR=" + filepath.Join(vault, "policies"), "LOCKDOWN_VAULT_BASELINE=" + filepath.Join(t.TempDir(), "baseline.json")}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	must(t, cmd.Start())
	var ready atomic.Bool
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if resp, err := http.Get("http://" + health + "/readyz"); err == nil {
				if resp.StatusCode == http.StatusOK {
					ready.Store(true)
				}
				_ = resp.Body.Close()
			}
		}
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var werr error
	select {
	case werr = <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("containment did not exit with its baseline missing")
	}
	close(stop)
	var exit *exec.ExitError
	if !errors.As(werr, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("exit %v, want 2 (an invalid configuration); stderr: %s", werr, stderr.String())
	}
	if !strings.Contains(stderr.String(), "LOCKDOWN_VAULT_BASELINE") {
		t.Fatalf("the error does not name the variable: %s", stderr.String())
	}
	if ready.Load() {
		t.Fatal("/readyz answered 200 before the exit")
	}
}
