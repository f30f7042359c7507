package app

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/services/rotator/internal/kinds"
	"github.com/lockdown/lockdown/services/rotator/internal/kinds/database"
	"github.com/lockdown/lockdown/services/rotator/internal/kinds/kv"
	"github.com/lockdown/lockdown/services/rotator/internal/kinds/pki"
	"github.com/lockdown/lockdown/services/rotator/internal/kinds/smtp"
	"github.com/lockdown/lockdown/services/rotator/internal/kinds/ssh"
	"github.com/lockdown/lockdown/services/rotator/internal/kinds/transit"
)

// Registry is where every platform-wide kind's package is registered (the
// per-tenant secrets are in TenantSecrets):
// the one line a new kind adds here.
func Registry() kinds.Registry {
	r, err := kinds.NewRegistry(transit.Kind{}, database.Kind{}, pki.Kind{}, kv.Kind{})
	if err != nil {
		panic(err) // a programming error: TestRegistry catches it
	}
	return r
}

// TenantSecrets are the per-tenant kinds a job replaces by one new secret,
// in the order it writes them: the one line a new such kind adds here.
func TenantSecrets() []kinds.TenantSecret {
	return []kinds.TenantSecret{ssh.Kind{}, smtp.Kind{}}
}

// loadCatalogue reads and validates the rotation catalogue, and checks
// every entry's kind has a package here.
func loadCatalogue(file string) (*credentials.Catalogue, error) {
	cat, err := credentials.Load(file)
	if err != nil {
		return nil, err
	}
	if err := Registry().Check(cat); err != nil {
		return nil, fmt.Errorf("%w: %w", credentials.ErrInvalidCatalogue, err)
	}
	return cat, nil
}

// PolicyMarker separates the rotator policy's hand-written part (the
// tenants' kinds) from the part generated from the catalogue.
const PolicyMarker = "# ---- generated from the rotation catalogue (rotator policy): do not edit below ----"

// CataloguePolicy renders the policy paths the catalogue's entries need,
// each with what it is for: the part of lockdown-rotator.hcl after
// PolicyMarker. Least privilege stays provable: every path is one a kind
// declared for an entry.
func CataloguePolicy(cat *credentials.Catalogue) string {
	var b strings.Builder
	b.WriteString(PolicyMarker + "\n")
	seen := map[string]bool{}
	registry := Registry()
	for _, e := range cat.Entries {
		k, ok := registry[e.Kind]
		if !ok {
			continue
		}
		fmt.Fprintf(&b, "# %s (%s on %s)\n", e.Name, e.Kind, e.Mount)
		for _, c := range k.Capabilities(e) {
			if seen[c.Path] {
				continue // a path two entries share (a KV mount's folder)
			}
			seen[c.Path] = true
			quoted := make([]string, len(c.Caps))
			for i, cp := range c.Caps {
				quoted[i] = fmt.Sprintf("%q", cp)
			}
			fmt.Fprintf(&b, "# %s\npath %q {\n  capabilities = [%s]\n}\n", c.Why, c.Path, strings.Join(quoted, ", "))
		}
	}
	return b.String()
}

// RenderPolicy writes the rotator's whole policy: the hand-written part of
// current (the policy file as it is) up to the marker, then the part the
// catalogue generates.
func RenderPolicy(current string, cat *credentials.Catalogue) string {
	head, _, _ := strings.Cut(current, PolicyMarker)
	return strings.TrimRight(head, "\n") + "\n" + CataloguePolicy(cat)
}

// PrintPolicy is `rotator policy <policy file> <catalogue>`: it prints the
// policy file with its generated part re-rendered from the catalogue.
func PrintPolicy(args []string, out io.Writer) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: rotator policy deploy/vault/policies/lockdown-rotator.hcl deploy/rotation/catalogue.json")
	}
	current, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	cat, err := loadCatalogue(args[1])
	if err != nil {
		return err
	}
	_, err = io.WriteString(out, RenderPolicy(string(current), cat))
	return err
}
