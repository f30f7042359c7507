// Package transit rotates the keys of a transit secrets engine mount: a new
// key version for each key the catalogue entry selects, and, when the entry
// says so, min_decryption_version raised to it so that ciphertext made with
// a version the intruder could use no longer decrypts. A key's material
// never leaves Vault: nothing here sees it.
package transit

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
func (Kind) Kind() credentials.Kind { return credentials.Transit }

// Capabilities implements kinds.Kind.
func (Kind) Capabilities(e credentials.Entry) []kinds.Capability {
	var out []kinds.Capability
	names := e.Keys
	if credentials.Selects(e.Keys, "*") {
		out = append(out, kinds.Capability{Path: e.Mount + "/keys", Caps: []string{"list"}, Why: "list the keys (\"*\")"})
		names = []string{"+"}
	}
	for _, k := range names {
		out = append(out,
			kinds.Capability{Path: e.Mount + "/keys/" + k, Caps: []string{"read"}, Why: "read the key's versions (never its material)"},
			kinds.Capability{Path: e.Mount + "/keys/" + k + "/rotate", Caps: []string{"update"}, Why: "a new key version"})
		if e.RaiseMinDecryption {
			out = append(out, kinds.Capability{Path: e.Mount + "/keys/" + k + "/config", Caps: []string{"update"}, Why: "raise min_decryption_version"})
		}
	}
	return out
}

// Rotate implements kinds.Kind. Each key's version before the rotation is
// recorded first: a key found past it was rotated by an earlier attempt,
// and is not rotated twice.
func (Kind) Rotate(ctx context.Context, v kinds.Vault, job kinds.Job) (credentials.Result, []string, error) {
	e := job.Entry
	have, err := v.ListAt(ctx, e.Mount+"/keys")
	if err != nil && !credentials.Selects(e.Keys, "*") {
		have, err = e.Keys, nil // listing is granted only for "*"; named keys are read below
	}
	if err != nil {
		return credentials.Result{}, nil, err
	}
	keys, err := kinds.Select(e.Keys, have, "transit keys")
	if err != nil {
		return credentials.Result{}, nil, err
	}
	sort.Strings(keys)
	var public []string
	for _, name := range keys {
		it := job.Rec.Items[name]
		if !it.Done {
			latest, minDec, err := versions(ctx, v, e.Mount, name)
			if err != nil {
				return credentials.Result{}, nil, err
			}
			if it.From == 0 {
				it.From = latest
				job.Rec.Items[name] = it
				if err := job.Save(); err != nil {
					return credentials.Result{}, nil, err
				}
			}
			if latest <= it.From {
				if _, err := v.Write(ctx, e.Mount+"/keys/"+name+"/rotate", nil); err != nil {
					return credentials.Result{}, nil, fmt.Errorf("rotate %s: %w", name, err)
				}
				job.Wrote()
				if latest, _, err = versions(ctx, v, e.Mount, name); err != nil {
					return credentials.Result{}, nil, err
				}
			}
			if e.RaiseMinDecryption && minDec < latest {
				if _, err := v.Write(ctx, e.Mount+"/keys/"+name+"/config", map[string]any{"min_decryption_version": latest}); err != nil {
					return credentials.Result{}, nil, fmt.Errorf("raise min_decryption_version of %s: %w", name, err)
				}
			}
			it.Done, it.Public = true, fmt.Sprintf("%s v%d", name, latest)
			job.Rec.Items[name] = it
			if err := job.Save(); err != nil {
				return credentials.Result{}, nil, err
			}
		}
		public = append(public, it.Public)
	}
	return credentials.Result{Kind: credentials.Transit, State: credentials.Rotated, Count: len(keys), Public: strings.Join(public, ", ")}, keys, nil
}

// versions reads a key's latest and minimum decryption versions.
func versions(ctx context.Context, v kinds.Vault, mount, name string) (latest, minDecryption int, err error) {
	d, err := v.Read(ctx, mount+"/keys/"+name)
	if err != nil {
		return 0, 0, err
	}
	if d == nil {
		return 0, 0, fmt.Errorf("%w: transit key %s/%s does not exist", kinds.ErrPermanent, mount, name)
	}
	return kinds.Number(d["latest_version"]), kinds.Number(d["min_decryption_version"]), nil
}
