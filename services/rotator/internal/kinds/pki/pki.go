// Package pki replaces the certificates of a PKI secrets engine mount: each
// certificate the catalogue entry lists is issued anew under its role and
// kept, with its private key, in the KV v2 secret the platform reads it
// from; then every other certificate the mount issued — the old ones, and
// any the intruder had issued for itself — is revoked, so the CRL names
// them all. The issuing CA is kept: rotating a CA is a migration, not an
// incident step (docs/operations.md).
package pki

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"

	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/services/rotator/internal/kinds"
)

// Kind implements kinds.Kind.
type Kind struct{}

// Kind implements kinds.Kind.
func (Kind) Kind() credentials.Kind { return credentials.PKI }

// Capabilities implements kinds.Kind.
func (Kind) Capabilities(e credentials.Entry) []kinds.Capability {
	out := []kinds.Capability{
		{Path: e.Mount + "/certs", Caps: []string{"list"}, Why: "every certificate the mount issued"},
		{Path: e.Mount + "/cert/+", Caps: []string{"read"}, Why: "a certificate (public) and whether it is revoked"},
		{Path: e.Mount + "/revoke", Caps: []string{"update"}, Why: "revoke every certificate but the new ones"},
	}
	var roles []string
	for _, c := range e.Certificates {
		if !slices.Contains(roles, c.Role) {
			roles = append(roles, c.Role)
			out = append(out, kinds.Capability{Path: e.Mount + "/issue/" + c.Role, Caps: []string{"update"}, Why: "issue the new certificate"})
		}
		out = append(out,
			kinds.Capability{Path: c.StoreMount + "/data/" + c.StorePath, Caps: []string{"create", "update"}, Why: "keep the new certificate and its key"},
			kinds.Capability{Path: c.StoreMount + "/subkeys/" + c.StorePath, Caps: []string{"read"}, Why: "which write the kept certificate came from (never its value)"})
	}
	return out
}

// Rotate implements kinds.Kind. A certificate's write id and serial are
// recorded after it is issued and before it is stored; the store's latest
// version carrying that write id proves it was kept. A certificate issued
// by an attempt that died before it was kept is revoked with the rest.
func (Kind) Rotate(ctx context.Context, v kinds.Vault, job kinds.Job) (credentials.Result, []string, error) {
	e := job.Entry
	var keep, items []string
	for _, c := range e.Certificates {
		name := c.StoreMount + "/" + c.StorePath
		it := job.Rec.Items[name]
		if !it.Done && it.WriteID != "" {
			_, ids, _, err := kinds.Subkeys(ctx, v, c.StoreMount, c.StorePath)
			if err != nil {
				return credentials.Result{}, nil, err
			}
			it.Done = slices.Equal(ids, []string{it.WriteID})
		}
		if !it.Done {
			var err error
			if it, err = issue(ctx, v, job, c, name); err != nil {
				return credentials.Result{}, nil, fmt.Errorf("%s: %w", c.CommonName, err)
			}
		}
		job.Rec.Items[name] = it
		if err := job.Save(); err != nil {
			return credentials.Result{}, nil, err
		}
		keep = append(keep, it.Public)
		items = append(items, name)
	}
	revoked, err := revokeAllBut(ctx, v, e.Mount, keep, job.Wrote)
	if err != nil {
		return credentials.Result{}, nil, err
	}
	job.Rec.Revoked += revoked
	if err := job.Save(); err != nil {
		return credentials.Result{}, nil, err
	}
	return credentials.Result{Kind: credentials.PKI, State: credentials.Rotated, Count: len(items),
		Public: fmt.Sprintf("new serials %s; %d certificates revoked", strings.Join(keep, ", "), job.Rec.Revoked)}, items, nil
}

// issue issues one certificate and keeps it in its store.
func issue(ctx context.Context, v kinds.Vault, job kinds.Job, c credentials.Certificate, name string) (kinds.Item, error) {
	// The response carries the new private key: no undeclared audit
	// device may see it.
	if err := v.Gate(ctx); err != nil {
		return kinds.Item{}, err
	}
	req := map[string]any{"common_name": c.CommonName}
	if c.TTL != "" {
		req["ttl"] = c.TTL
	}
	d, err := v.Write(ctx, job.Entry.Mount+"/issue/"+c.Role, req)
	if err != nil {
		return kinds.Item{}, fmt.Errorf("issue under role %s: %w", c.Role, err)
	}
	job.Wrote()
	serial, _ := d["serial_number"].(string)
	if serial == "" {
		return kinds.Item{}, fmt.Errorf("issue under role %s: no serial in the response", c.Role)
	}
	id, err := kinds.NewWriteID(job.IncidentID)
	if err != nil {
		return kinds.Item{}, err
	}
	it := kinds.Item{WriteID: id, Public: serial}
	job.Rec.Items[name] = it
	if err := job.Save(); err != nil {
		return it, err
	}
	data := kinds.Stamp(job.IncidentID, id)
	for _, f := range []string{"certificate", "private_key", "private_key_type", "issuing_ca", "serial_number", "expiration"} {
		if val, ok := d[f]; ok {
			data[f] = val
		}
	}
	if err := v.Gate(ctx); err != nil {
		return it, err
	}
	if _, err := v.Write(ctx, c.StoreMount+"/data/"+c.StorePath, map[string]any{"data": data}); err != nil {
		return it, fmt.Errorf("keep in %s: %w", name, err)
	}
	job.Wrote()
	it.Done = true
	return it, nil
}

// revokeAllBut revokes every unrevoked, non-CA certificate of the mount
// whose serial is not in keep, and returns how many it revoked.
func revokeAllBut(ctx context.Context, v kinds.Vault, mount string, keep []string, wrote func()) (int, error) {
	serials, err := v.ListAt(ctx, mount+"/certs")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range serials {
		if slices.ContainsFunc(keep, func(k string) bool { return credentials.NormalSerial(k) == credentials.NormalSerial(s) }) {
			continue
		}
		d, err := v.Read(ctx, mount+"/cert/"+s)
		if err != nil {
			return n, err
		}
		if d == nil || kinds.Number(d["revocation_time"]) != 0 {
			continue
		}
		if isCA(d) {
			continue
		}
		if _, err := v.Write(ctx, mount+"/revoke", map[string]any{"serial_number": s}); err != nil {
			return n, fmt.Errorf("revoke %s: %w", s, err)
		}
		wrote()
		n++
	}
	return n, nil
}

// isCA says whether a cert/<serial> response is a CA certificate (the
// issuer, kept).
func isCA(d map[string]any) bool {
	pemText, _ := d["certificate"].(string)
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		return false
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	return err == nil && cert.IsCA
}
