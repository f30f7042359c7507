// Package apikeys is a tenant's API keys: every key in the tenant's folder
// is destroyed — metadata and every version, since a KV v2 delete would
// only hide the latest — and none is replaced: the tenant creates new ones
// (the contract's action for the kind).
package apikeys

import (
	"context"
	"strings"

	"github.com/lockdown/lockdown/pkg/events/credentials"
)

// Vault lists a folder's keys and destroys a secret for good.
type Vault interface {
	List(ctx context.Context, folder string) ([]string, error)
	Destroy(ctx context.Context, path string) error
}

// Kind destroys a tenant's API keys.
type Kind struct{}

// Kind is the credential kind.
func (Kind) Kind() credentials.Kind { return credentials.APIKeys }

// Folder is the tenant's folder of keys in the KV v2 mount.
func (Kind) Folder(tenant string) string {
	return strings.TrimSuffix(credentials.APIKeys.Path(tenant, 0), "*")
}

// Keys lists the tenant's keys (counted before any is destroyed, so a
// retry after a crash mid-way still reports them all).
func (k Kind) Keys(ctx context.Context, v Vault, tenant string) ([]string, error) {
	return v.List(ctx, k.Folder(tenant))
}

// Destroy destroys the listed keys; destroying one already gone succeeds.
func (k Kind) Destroy(ctx context.Context, v Vault, tenant string, keys []string) error {
	for _, key := range keys {
		if err := v.Destroy(ctx, k.Folder(tenant)+key); err != nil {
			return err
		}
	}
	return nil
}
