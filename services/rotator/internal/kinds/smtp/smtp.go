// Package smtp is a tenant's SMTP credentials: its user name and a new
// password of 40 characters from crypto/rand; nothing of it is public (the
// tenant fetches the password from the platform, never by email).
package smtp

import (
	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/services/rotator/internal/keys"
)

// Kind implements kinds.TenantSecret.
type Kind struct{}

// Kind implements kinds.TenantSecret.
func (Kind) Kind() credentials.Kind { return credentials.SMTP }

// New implements kinds.TenantSecret.
func (Kind) New(tenant string, pre *keys.Set) (map[string]any, string, error) {
	pw := ""
	if pre != nil {
		pw = pre.SMTPPassword
	} else {
		var err error
		if pw, err = keys.NewPassword(40); err != nil {
			return nil, "", err
		}
	}
	return map[string]any{"username": tenant, "password": pw}, "", nil
}
