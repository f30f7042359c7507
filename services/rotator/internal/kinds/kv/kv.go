// Package kv rotates platform-wide KV v2 secrets chosen by path pattern:
// each field the catalogue entry gives a generator gets a new value; the
// secret's other fields keep theirs (a JSON merge patch: the rotator never
// reads a value, only the field names of Vault's subkeys endpoint).
package kv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/services/rotator/internal/keys"
	"github.com/lockdown/lockdown/services/rotator/internal/kinds"
)

// Kind implements kinds.Kind.
type Kind struct{}

// Kind implements kinds.Kind.
func (Kind) Kind() credentials.Kind { return credentials.KV }

// Capabilities implements kinds.Kind: list the folders a pattern walks,
// read subkeys and patch data of what it matches.
func (Kind) Capabilities(e credentials.Entry) []kinds.Capability {
	var out []kinds.Capability
	for _, p := range e.Paths {
		prefix, deep := strings.CutSuffix(p, "/**")
		segs := strings.Split(prefix, "/")
		for i := range segs {
			if segs[i] == "*" {
				segs[i] = "+"
			}
		}
		if deep {
			glob := strings.Join(segs, "/") + "/*"
			out = append(out,
				kinds.Capability{Path: e.Mount + "/metadata/" + glob, Caps: []string{"list"}, Why: "walk " + p},
				kinds.Capability{Path: e.Mount + "/subkeys/" + glob, Caps: []string{"read"}, Why: "field names and write ids of " + p + " (never a value)"},
				kinds.Capability{Path: e.Mount + "/data/" + glob, Caps: []string{"patch"}, Why: "new values of the listed fields of " + p})
			continue
		}
		for i := 1; i < len(segs); i++ {
			out = append(out, kinds.Capability{Path: e.Mount + "/metadata/" + strings.Join(segs[:i], "/") + "/", Caps: []string{"list"}, Why: "walk " + p})
		}
		leaf := strings.Join(segs, "/")
		out = append(out,
			kinds.Capability{Path: e.Mount + "/subkeys/" + leaf, Caps: []string{"read"}, Why: "field names and write ids of " + p + " (never a value)"},
			kinds.Capability{Path: e.Mount + "/data/" + leaf, Caps: []string{"patch"}, Why: "new values of the listed fields of " + p})
	}
	return out
}

// maxSecrets bounds one entry's walk: a pattern that matches more is a
// catalogue to narrow, not a loop to run for hours.
const maxSecrets = 100_000

// Rotate implements kinds.Kind. Each secret's write id is recorded before
// its patch; a secret whose latest version carries it was patched by an
// earlier attempt and is not patched twice.
func (Kind) Rotate(ctx context.Context, v kinds.Vault, job kinds.Job) (credentials.Result, []string, error) {
	e := job.Entry
	paths, err := Walk(ctx, v, e.Mount, e.Paths)
	if err != nil {
		return credentials.Result{}, nil, err
	}
	var rotated []string
	for _, p := range paths {
		it := job.Rec.Items[p]
		if !it.Done {
			if it, err = rotate(ctx, v, job, p, it); err != nil {
				return credentials.Result{}, nil, fmt.Errorf("%s: %w", p, err)
			}
			job.Rec.Items[p] = it
			if err := job.Save(); err != nil {
				return credentials.Result{}, nil, err
			}
		}
		if it.Public != "" {
			rotated = append(rotated, p)
		}
	}
	return credentials.Result{Kind: credentials.KV, State: credentials.Rotated, Count: len(rotated),
		Public: fmt.Sprintf("%d secrets under %s", len(rotated), strings.Join(e.Paths, ", "))}, rotated, nil
}

// rotate patches one secret's listed fields, once.
func rotate(ctx context.Context, v kinds.Vault, job kinds.Job, path string, it kinds.Item) (kinds.Item, error) {
	e := job.Entry
	fields, ids, exists, err := kinds.Subkeys(ctx, v, e.Mount, path)
	if err != nil {
		return it, err
	}
	if it.WriteID != "" && slices.Equal(ids, []string{it.WriteID}) {
		return kinds.Item{Done: true, Public: it.Public}, nil // patched by an earlier attempt
	}
	var todo []string
	for _, f := range fields {
		if _, ok := e.Fields[f]; ok {
			todo = append(todo, f)
		}
	}
	if !exists || len(todo) == 0 {
		return kinds.Item{Done: true}, nil // nothing of it is the catalogue's to rotate
	}
	id, err := kinds.NewWriteID(job.IncidentID)
	if err != nil {
		return it, err
	}
	it = kinds.Item{WriteID: id, Public: "fields " + strings.Join(todo, ", ")}
	job.Rec.Items[path] = it
	if err := job.Save(); err != nil {
		return it, err
	}
	data := kinds.Stamp(job.IncidentID, id)
	marks := data[kinds.WriteKey].(map[string]any)
	for _, old := range ids {
		marks[old] = nil // merge patch: the previous write ids go
	}
	for _, f := range todo {
		if data[f], err = generate(e.Fields[f], path); err != nil {
			return it, err
		}
	}
	if err := v.Gate(ctx); err != nil {
		return it, err
	}
	if _, err := v.Patch(ctx, e.Mount+"/data/"+path, map[string]any{"data": data}); err != nil {
		return it, err
	}
	job.Wrote()
	it.Done = true
	return it, nil
}

// generate makes one field's new value.
func generate(g credentials.Generator, path string) (string, error) {
	switch g {
	case credentials.GenPassword:
		return keys.NewPassword(40)
	case credentials.GenEd25519:
		k, err := keys.NewSSH("lockdown-" + path)
		return k.PrivateKey, err
	case credentials.GenHex32:
		b := make([]byte, 32)
		_, err := rand.Read(b)
		return hex.EncodeToString(b), err
	}
	return "", fmt.Errorf("%w: unknown generator %q", kinds.ErrPermanent, g)
}

// Walk lists the secrets of a mount that match the patterns, in order,
// listing only the folders a pattern can reach.
func Walk(ctx context.Context, v kinds.Vault, mount string, patterns []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, pat := range patterns {
		prefix, deep := strings.CutSuffix(pat, "/**")
		segs := strings.Split(prefix, "/")
		fixed := 0
		for fixed < len(segs) && segs[fixed] != "*" {
			fixed++
		}
		maxDepth := len(segs)
		if deep {
			maxDepth = 1 << 10
		}
		// The folder below which the pattern's wildcards start (the
		// rotator may list nothing above it).
		start := strings.Join(segs[:min(fixed, len(segs)-1)], "/")
		if deep {
			start = strings.Join(segs[:fixed], "/")
		}
		if err := walk(ctx, v, mount, start, maxDepth, func(p string) error {
			if credentials.MatchPath([]string{pat}, p) && !seen[p] {
				seen[p] = true
				out = append(out, p)
				if len(out) > maxSecrets {
					return fmt.Errorf("%w: the patterns match more than %d secrets: narrow the entry", kinds.ErrPermanent, maxSecrets)
				}
			}
			return nil
		}); err != nil {
			return nil, err
		}
	}
	slices.Sort(out)
	return out, nil
}

// walk visits every secret below folder, at most maxDepth segments deep.
func walk(ctx context.Context, v kinds.Vault, mount, folder string, maxDepth int, visit func(string) error) error {
	if folder != "" && strings.Count(folder, "/")+1 >= maxDepth {
		return nil
	}
	keys, err := v.ListAt(ctx, mount+"/metadata/"+folder)
	if err != nil {
		return err
	}
	for _, k := range keys {
		p := strings.TrimPrefix(folder+"/"+k, "/")
		if sub, ok := strings.CutSuffix(p, "/"); ok {
			if err := walk(ctx, v, mount, sub, maxDepth, visit); err != nil {
				return err
			}
			continue
		}
		if err := visit(p); err != nil {
			return err
		}
	}
	return nil
}
