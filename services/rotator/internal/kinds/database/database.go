// Package database rotates what a database secrets engine mount holds: the
// root credential of each selected connection (database/rotate-root: Vault
// sets a new password on the database that only Vault knows) and the
// password of each selected static role (database/rotate-role). Dynamic
// credentials are leases: containment's revocation ends them. No password
// passes through the rotator.
package database

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/services/rotator/internal/kinds"
)

// Kind implements kinds.Kind.
type Kind struct{}

// Kind implements kinds.Kind.
func (Kind) Kind() credentials.Kind { return credentials.Database }

// Capabilities implements kinds.Kind.
func (Kind) Capabilities(e credentials.Entry) []kinds.Capability {
	var out []kinds.Capability
	if len(e.Connections) > 0 {
		conns := e.Connections
		if credentials.Selects(conns, "*") {
			out = append(out, kinds.Capability{Path: e.Mount + "/config", Caps: []string{"list"}, Why: "list the connections (\"*\")"})
			conns = []string{"+"}
		}
		for _, c := range conns {
			out = append(out, kinds.Capability{Path: e.Mount + "/rotate-root/" + c, Caps: []string{"update"}, Why: "a new root password only Vault knows"})
		}
	}
	if len(e.StaticRoles) > 0 {
		roles := e.StaticRoles
		if credentials.Selects(roles, "*") {
			out = append(out, kinds.Capability{Path: e.Mount + "/static-roles", Caps: []string{"list"}, Why: "list the static roles (\"*\")"})
			roles = []string{"+"}
		}
		for _, r := range roles {
			out = append(out,
				kinds.Capability{Path: e.Mount + "/static-roles/" + r, Caps: []string{"read"}, Why: "the role's last rotation time (never its password)"},
				kinds.Capability{Path: e.Mount + "/rotate-role/" + r, Caps: []string{"update"}, Why: "a new password for the role's database user"})
		}
	}
	return out
}

// Rotate implements kinds.Kind: root credentials first (the bigger hole),
// then static roles. A root rotation is recorded after it is made (a
// second one after a crash only changes a password nobody but Vault
// knows); a static role's last_vault_rotation is recorded before it is
// rotated, and a different one later means the rotation was made (no
// clock is compared).
func (Kind) Rotate(ctx context.Context, v kinds.Vault, job kinds.Job) (credentials.Result, []string, error) {
	e := job.Entry
	conns, err := selected(ctx, v, e.Connections, e.Mount+"/config", "connections")
	if err != nil {
		return credentials.Result{}, nil, err
	}
	roles, err := selected(ctx, v, e.StaticRoles, e.Mount+"/static-roles", "static roles")
	if err != nil {
		return credentials.Result{}, nil, err
	}
	var items []string
	for _, c := range conns {
		name := "config/" + c
		if !job.Rec.Items[name].Done {
			if _, err := v.Write(ctx, e.Mount+"/rotate-root/"+c, nil); err != nil {
				return credentials.Result{}, nil, fmt.Errorf("rotate root of %s: %w", c, err)
			}
			job.Wrote()
			job.Rec.Items[name] = kinds.Item{Done: true, Public: "root of " + c}
			if err := job.Save(); err != nil {
				return credentials.Result{}, nil, err
			}
		}
		items = append(items, name)
	}
	for _, r := range roles {
		name := "static-roles/" + r
		if !job.Rec.Items[name].Done {
			last, err := lastRotation(ctx, v, e.Mount, r)
			if err != nil {
				return credentials.Result{}, nil, err
			}
			it, marked := job.Rec.Items[name]
			if !marked {
				it = kinds.Item{Mark: "before " + last}
				job.Rec.Items[name] = it
				if err := job.Save(); err != nil {
					return credentials.Result{}, nil, err
				}
			}
			if it.Mark == "before "+last {
				if _, err := v.Write(ctx, e.Mount+"/rotate-role/"+r, nil); err != nil {
					return credentials.Result{}, nil, fmt.Errorf("rotate static role %s: %w", r, err)
				}
				job.Wrote()
			}
			job.Rec.Items[name] = kinds.Item{Done: true, Public: "static role " + r}
			if err := job.Save(); err != nil {
				return credentials.Result{}, nil, err
			}
		}
		items = append(items, name)
	}
	return credentials.Result{Kind: credentials.Database, State: credentials.Rotated, Count: len(items),
		Public: fmt.Sprintf("%d root credentials, %d static roles: %s", len(conns), len(roles), strings.Join(append(conns, roles...), ", "))}, items, nil
}

// selected lists the names a list selects ("*" lists them at path).
func selected(ctx context.Context, v kinds.Vault, list []string, path, what string) ([]string, error) {
	if len(list) == 0 {
		return nil, nil
	}
	have := list
	if credentials.Selects(list, "*") {
		var err error
		if have, err = v.ListAt(ctx, path); err != nil {
			return nil, err
		}
	}
	out, err := kinds.Select(list, have, what)
	sort.Strings(out)
	return out, err
}

// lastRotation reads a static role's last_vault_rotation (as Vault
// writes it: compared, never parsed).
func lastRotation(ctx context.Context, v kinds.Vault, mount, role string) (string, error) {
	d, err := v.Read(ctx, mount+"/static-roles/"+role)
	if err != nil {
		return "", err
	}
	if d == nil {
		return "", fmt.Errorf("%w: static role %s/%s does not exist", kinds.ErrPermanent, mount, role)
	}
	s, _ := d["last_vault_rotation"].(string)
	return s, nil
}
