package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestVaultInit runs the documented compose init step, deploy/compose/
// vault-init.sh, against a real, uninitialised Vault server (the one
// `make tools` builds) and checks what it leaves behind.
func TestVaultInit(t *testing.T) {
	bin, err := filepath.Abs(filepath.Join(root, ".bin", "vault"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%v (run `make tools`)", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	dir := t.TempDir()
	hcl := fmt.Sprintf(`storage "file" { path = %q }
listener "tcp" {
  address     = %q
  tls_disable = true
}
disable_mlock = true
`, filepath.Join(dir, "data"), addr)
	if err := os.WriteFile(filepath.Join(dir, "vault.hcl"), []byte(hcl), 0o600); err != nil {
		t.Fatal(err)
	}
	server := exec.Command(bin, "server", "-config="+filepath.Join(dir, "vault.hcl"))
	logf, _ := os.Create(filepath.Join(dir, "vault.log"))
	server.Stdout, server.Stderr = logf, logf
	server.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Process.Kill(); _ = server.Wait() })
	vaultAddr := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(vaultAddr + "/v1/sys/health")
		if err == nil {
			_ = resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vault did not start: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	out := filepath.Join(dir, "secrets")
	script, _ := filepath.Abs(filepath.Join(root, "deploy", "compose", "vault-init.sh"))
	policies, _ := filepath.Abs(filepath.Join(root, "deploy", "vault", "policies"))
	run := func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "sh", script)
		cmd.Env = append(os.Environ(), "VAULT_ADDR="+vaultAddr, "OUT_DIR="+out, "POLICY_DIR="+policies,
			"AUDIT_FILE="+filepath.Join(dir, "audit.log"), "HOST_UID="+strconv.Itoa(os.Getuid()), "TOKEN_UID="+strconv.Itoa(os.Getuid()), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"), "VAULT_TOKEN=")
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	if msg, err := run(); err != nil {
		t.Fatalf("vault-init.sh: %v\n%s", err, msg)
	}
	token := func(name string) string {
		b, err := os.ReadFile(filepath.Join(out, "tokens", name+".token"))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	vault := func(token string, args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "VAULT_ADDR="+vaultAddr, "VAULT_TOKEN="+token)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}

	t.Run("the shares and each token are written for the owner only, the tokens from their roles", func(t *testing.T) {
		for _, f := range []string{"vault-init.txt", "tokens/seal.token", "tokens/recovery.token", "tokens/rotator.token"} {
			st, err := os.Stat(filepath.Join(out, f))
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("%s has mode %v", f, st.Mode().Perm())
			}
		}
		for _, name := range []string{"seal", "recovery", "rotator"} {
			msg, err := vault(token(name), "token", "lookup", "-format=json")
			if err != nil || !strings.Contains(msg, `"role": "lockdown-`+name+`"`) || !strings.Contains(msg, `"lockdown-`+name+`"`) || !strings.Contains(msg, `"orphan": true`) {
				t.Errorf("the %s token: %v %s", name, err, msg)
			}
		}
		// The recovery token mints the successors from the roles.
		if msg, err := vault(token("recovery"), "token", "create", "-role=lockdown-rotator", "-field=token_accessor"); err != nil {
			t.Errorf("the recovery token cannot mint the rotator's successor: %v %s", err, msg)
		}
	})
	t.Run("Vault is unsealed with the audit device, KV, approle and jwt, and the rotator's token writes tenant secrets only", func(t *testing.T) {
		tok := token("rotator")
		if msg, err := vault(tok, "kv", "put", "-mount=secret", "tenants/acme/smtp", "password=x"); err != nil {
			t.Fatalf("rotator write: %v %s", err, msg)
		}
		if _, err := vault(tok, "kv", "put", "-mount=secret", "elsewhere/x", "a=b"); err == nil {
			t.Error("the rotator's token wrote outside tenants/")
		}
		if st, err := os.Stat(filepath.Join(dir, "audit.log")); err != nil || st.Mode().Perm() != 0o644 {
			t.Errorf("audit log (the assessor, another user, must read it): %v %v", err, st)
		}
		rec := token("recovery")
		if msg, err := vault(rec, "auth", "list"); err != nil || !strings.Contains(msg, "approle/") || !strings.Contains(msg, "jwt/") {
			t.Errorf("auth methods: %v %s", err, msg)
		}
	})
	t.Run("the shipped baseline declares what vault-init leaves: its audit device, the KV mount, no other policy", func(t *testing.T) {
		raw, err := os.ReadFile(filepath.Join(root, "deploy", "vault", "baseline.json"))
		if err != nil {
			t.Fatal(err)
		}
		var baseline struct {
			AuditDevices []struct {
				Path, Type string
				Options    map[string]string
			} `json:"audit_devices"`
			SecretsMounts []string `json:"secrets_mounts"`
			Policies      []string `json:"policies"`
		}
		if err := json.Unmarshal(raw, &baseline); err != nil {
			t.Fatal(err)
		}
		rec := token("recovery") // what containment reads it with
		msg, err := vault(rec, "audit", "list", "-format=json")
		if err != nil {
			t.Fatalf("%v %s", err, msg)
		}
		var devices map[string]struct {
			Type    string
			Options map[string]string
		}
		if err := json.Unmarshal([]byte(msg), &devices); err != nil {
			t.Fatal(err)
		}
		if len(devices) != len(baseline.AuditDevices) {
			t.Fatalf("vault-init enables %d audit devices, the baseline declares %d", len(devices), len(baseline.AuditDevices))
		}
		for _, d := range baseline.AuditDevices {
			live, ok := devices[d.Path+"/"]
			// The test writes the log elsewhere than compose's volume.
			live.Options["file_path"] = d.Options["file_path"]
			if !ok || live.Type != d.Type || !maps.Equal(live.Options, d.Options) {
				t.Errorf("audit device %s: vault-init's %+v, declared %+v", d.Path, live, d)
			}
		}
		msg, err = vault(rec, "secrets", "list", "-format=json")
		if err != nil {
			t.Fatalf("%v %s", err, msg)
		}
		var mounts map[string]any
		if err := json.Unmarshal([]byte(msg), &mounts); err != nil {
			t.Fatal(err)
		}
		for path := range mounts {
			p := strings.TrimSuffix(path, "/")
			if !slices.Contains([]string{"sys", "cubbyhole", "identity"}, p) && !slices.Contains(baseline.SecretsMounts, p) {
				t.Errorf("vault-init mounts %s, which the baseline does not declare: an incident would disable it with its data", p)
			}
		}
	})
	t.Run("running it again changes nothing", func(t *testing.T) {
		msg, err := run()
		if err != nil || !strings.Contains(msg, "already initialised") {
			t.Fatalf("%v %s", err, msg)
		}
	})
	t.Run("containment's seal token seals Vault", func(t *testing.T) {
		if msg, err := vault(token("seal"), "operator", "seal"); err != nil {
			t.Fatalf("%v %s", err, msg)
		}
		msg, _ := vault("", "status")
		if !statusSealed(msg) {
			t.Fatalf("status after seal:\n%s", msg)
		}
	})
}

func statusSealed(status string) bool {
	for _, line := range strings.Split(status, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "Sealed" {
			return f[1] == "true"
		}
	}
	return false
}
