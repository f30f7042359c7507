// Package vaultkv is the rotator's adapter to the KV v2 mount holding the
// tenants' secrets, with the rotator token (deploy/vault/policies/
// lockdown-rotator.hcl).
package vaultkv

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/pkg/platform/coalesce"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/pkg/platform/unavailable"
	"github.com/lockdown/lockdown/pkg/platform/vaultclient"
	"github.com/lockdown/lockdown/pkg/platform/vaultdecl"
	"github.com/lockdown/lockdown/pkg/platform/vaulttoken"
	"github.com/lockdown/lockdown/services/rotator/internal/kinds"
	"github.com/lockdown/lockdown/services/rotator/internal/rotation"
)

// KV implements rotation.Vault.
type KV struct {
	c     *vault.Client
	mount string
	token *vaulttoken.Source
	// devices are the declared audit devices (the baseline's): no secret
	// is written while Vault has another.
	devices []vaultdecl.AuditDevice
	// gates shares one look at sys/audit among the writes waiting for it.
	gates *coalesce.Batch[struct{}]
}

// ErrUndeclaredAuditDevice is returned by WriteCAS, before writing, while
// Vault has an audit device the baseline does not declare (or a declared
// one with other options): a root intruder's device with log_raw would
// receive the new secret in clear. The job waits (the consumer pauses as
// for an outage) until containment's sweep has removed the device.
var ErrUndeclaredAuditDevice = errors.New("vault has an undeclared audit device: no secret is written until containment removes it")

// New builds a client for the mount with the token of src, following it
// when it is replaced. devices are the declared audit devices: every write
// of a secret is preceded by a look at sys/audit (the gate).
func New(addr string, src *vaulttoken.Source, mount string, timeout time.Duration, devices []vaultdecl.AuditDevice) (*KV, error) {
	// Many jobs in flight share one node: keep their connections.
	c, err := vaultclient.New(vaultclient.Options{Address: addr, Token: src.Token(), Timeout: timeout, IdleConnsPerHost: 64})
	if err != nil {
		return nil, err
	}
	src.OnChange(c.SetToken)
	k := &KV{c: c, mount: mount, token: src, devices: devices}
	k.gates = coalesce.New(coalesce.Each[struct{}](k.lookAtAudit))
	return k, nil
}

// gate lists Vault's audit devices (sys/audit, read with sudo on the
// rotator's policy) and refuses while one is not declared. It runs right
// before every secret write: the rotation's guarantee that no new secret
// reaches an intruder's device does not rest on containment having
// removed it (docs/security.md says what is left: a device added between
// this look and the write). Writes in flight together share a look that
// began after each of them asked (coalesce.Batch).
func (k *KV) gate(ctx context.Context) error { return k.gates.Do(ctx, struct{}{}) }

// lookAtAudit is one look of the gate.
func (k *KV) lookAtAudit(ctx context.Context) error {
	devices, err := retry(k, func() (map[string]*vault.Audit, error) { return k.c.Sys().ListAuditWithContext(ctx) })
	if err != nil {
		return down(err)
	}
	for path, d := range devices {
		path = strings.TrimSuffix(path, "/")
		if why := vaultdecl.AuditDifference(k.devices, path, d.Type, d.Options); why != "" {
			return stream.Unavailable(unavailable.Vault, fmt.Errorf("%w: %s: %s", ErrUndeclaredAuditDevice, path, why))
		}
	}
	return nil
}

// retry runs op, and once more when Vault refused the token and the token
// file holds a successor: containment replaced the token during an
// incident and revoked the old one, and the file is re-read only every
// second.
func retry[T any](k *KV, op func() (T, error)) (T, error) {
	v, err := op()
	var re *vault.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusForbidden {
		if changed, _ := k.token.Reload(); changed {
			return op()
		}
	}
	return v, err
}

// Latest implements rotation.Vault. It reads the subkeys of the latest
// version (key names, every value null) and never the secret itself: the
// rotator's policy grants no read on secret data.
func (k *KV) Latest(ctx context.Context, path string) (int, string, error) {
	s, err := retry(k, func() (*vault.Secret, error) { return k.c.Logical().ReadWithContext(ctx, k.mount+"/subkeys/"+path) })
	if err != nil && !notFound(err) {
		return 0, "", down(err)
	}
	if err == nil && s != nil && s.Data != nil {
		meta, _ := s.Data["metadata"].(map[string]any)
		sub, _ := s.Data["subkeys"].(map[string]any)
		writeID := ""
		if w, ok := sub[rotation.WriteKey].(map[string]any); ok && len(w) == 1 {
			for id := range w {
				writeID = id
			}
		}
		if v, ok := kinds.ParseNumber(meta["version"]); ok {
			return v, writeID, nil
		}
	}
	// No readable latest version (none, or deleted): the metadata still
	// knows the current version number for check-and-set.
	m, err := retry(k, func() (*vault.Secret, error) { return k.c.Logical().ReadWithContext(ctx, k.mount+"/metadata/"+path) })
	if err != nil || m == nil {
		return 0, "", down(err)
	}
	v, _ := kinds.ParseNumber(m.Data["current_version"])
	return v, "", nil
}

// notFound is Vault's 404, which the subkeys endpoint answers (as an
// error, unlike a data read) for a secret with no live latest version.
func notFound(err error) bool {
	var re *vault.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusNotFound
}

// WriteCAS implements rotation.Vault.
func (k *KV) WriteCAS(ctx context.Context, path string, data map[string]any, cas int) (int, error) {
	if err := k.gate(ctx); err != nil {
		return 0, err
	}
	s, err := retry(k, func() (*vault.Secret, error) {
		return k.c.Logical().WriteWithContext(ctx, k.mount+"/data/"+path, map[string]any{"options": map[string]any{"cas": cas}, "data": data})
	})
	var re *vault.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest && strings.Contains(strings.Join(re.Errors, " "), "check-and-set") {
		return 0, rotation.ErrCASMismatch
	}
	if err != nil {
		return 0, down(err)
	}
	if s == nil {
		return 0, fmt.Errorf("write %s: no response", path)
	}
	v, ok := kinds.ParseNumber(s.Data["version"])
	if !ok {
		return 0, fmt.Errorf("write %s: no version in the response", path)
	}
	return v, nil
}

// List implements rotation.Vault.
func (k *KV) List(ctx context.Context, folder string) ([]string, error) {
	s, err := retry(k, func() (*vault.Secret, error) { return k.c.Logical().ListWithContext(ctx, k.mount+"/metadata/"+folder) })
	if err != nil || s == nil {
		return nil, down(err)
	}
	raw, _ := s.Data["keys"].([]any)
	out := make([]string, 0, len(raw))
	for _, r := range raw {
		if str, ok := r.(string); ok && !strings.HasSuffix(str, "/") {
			out = append(out, str)
		}
	}
	return out, nil
}

// Destroy implements rotation.Vault: DELETE on the metadata removes every
// version and the metadata for good (a KV v2 delete would only hide the
// latest version).
func (k *KV) Destroy(ctx context.Context, path string) error {
	_, err := retry(k, func() (*vault.Secret, error) { return k.c.Logical().DeleteWithContext(ctx, k.mount+"/metadata/"+path) })
	return down(err)
}

// ReadStaged implements rotation.Vault: the latest version of a staged
// DKIM key (the policy grants read on tenants/+/dkim-pending only).
func (k *KV) ReadStaged(ctx context.Context, path string) (map[string]any, error) {
	s, err := retry(k, func() (*vault.Secret, error) { return k.c.Logical().ReadWithContext(ctx, k.mount+"/data/"+path) })
	if err != nil {
		return nil, down(err)
	}
	if s == nil || s.Data == nil {
		return nil, nil
	}
	data, _ := s.Data["data"].(map[string]any)
	return data, nil
}

// down marks Vault being away (sealed, 5xx, unreachable): the job waits
// for it, however long, instead of failing the tenant.
func down(err error) error {
	if unavailable.VaultDown(err) {
		return stream.Unavailable(unavailable.Vault, err)
	}
	return err
}
