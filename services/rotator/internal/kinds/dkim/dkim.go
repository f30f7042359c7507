// Package dkim is a tenant's DKIM signing key: a new key (RSA of the
// configured size, or ed25519) under the selector the rollover chose, with
// the DNS TXT record that publishes it (public: recorded and told to the
// tenant). Its way from staged to active through DNS is the rollover of
// package rotation (dkim.go): the kind says what a key is, the rollover
// when it may sign.
package dkim

import (
	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/services/rotator/internal/keys"
)

// Kind makes DKIM keys of one type and size.
type Kind struct {
	// Type is rsa or ed25519; Bits the RSA size.
	Type string
	Bits int
}

// Kind is the credential kind.
func (Kind) Kind() credentials.Kind { return credentials.DKIM }

// New makes the key's KV data under selector, and its public parts: the
// selector and the record. pre is material generated ahead (nil: now); a
// key is not bound to its selector, so one made ahead takes the selector
// chosen now.
func (k Kind) New(selector string, pre *keys.Set) (data map[string]any, record string, err error) {
	var d keys.DKIM
	if pre != nil {
		d = pre.DKIM
	} else if d, err = keys.NewDKIM(k.Type, k.Bits, selector); err != nil {
		return nil, "", err
	}
	d.Selector = selector
	return map[string]any{"selector": d.Selector, "private_key": d.PrivateKey, "dns_record": d.Record, "key_type": d.Type}, d.Record, nil
}
