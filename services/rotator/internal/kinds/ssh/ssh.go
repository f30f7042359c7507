// Package ssh is a tenant's SSH key: a new ed25519 key pair in OpenSSH
// formats; its fingerprint is public (recorded and told to the tenant).
package ssh

import (
	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/services/rotator/internal/keys"
)

// Kind implements kinds.TenantSecret.
type Kind struct{}

// Kind implements kinds.TenantSecret.
func (Kind) Kind() credentials.Kind { return credentials.SSH }

// New implements kinds.TenantSecret.
func (Kind) New(tenant string, pre *keys.Set) (map[string]any, string, error) {
	var k keys.SSH
	var err error
	if pre != nil {
		k = pre.SSH
	} else if k, err = keys.NewSSH("lockdown-" + tenant); err != nil {
		return nil, "", err
	}
	return map[string]any{"private_key": k.PrivateKey, "public_key": k.PublicKey, "fingerprint": k.Fingerprint}, k.Fingerprint, nil
}
