package drill

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/cmd/lockdown/internal/cli"
	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/pkg/platform/vaultdecl"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// The drill's platform-wide credentials: on its own stack it fills the
// transit, database and PKI engines and a few platform secrets
// (localstack.SeedPlatform) before the services start, so the rotator
// runs deploy/rotation/catalogue.json; it checks with `lockdown plan` that
// the catalogue covers everything it seeded, and afterwards, in Vault and
// PostgreSQL, that every one of them was rotated.

// platformBefore is what the platform's credentials were before the
// breach (names, versions and serials; the static role's password is
// kept to prove it stops working, never printed).
type platformBefore struct {
	estate         *localstack.PlatformEstate
	stack          *localstack.Stack
	staticPassword string
}

// planCovers runs the plan against the seeded Vault with the admin token
// and refuses an estate the catalogue does not cover.
func planCovers(ctx context.Context, tgt *target, estate *localstack.PlatformEstate) (*credentials.Plan, error) {
	c, err := tgt.vault.Client()
	if err != nil {
		return nil, err
	}
	cat, err := credentials.Load(estate.Catalogue)
	if err != nil {
		return nil, err
	}
	baseline, err := vaultdecl.Load(tgt.vault.BaselineFile)
	if err != nil {
		return nil, err
	}
	plan, err := cli.MakePlan(ctx, c, cat, baseline, tgt.mount, []string{"approle", "jwt"})
	if err != nil {
		return nil, err
	}
	plan.Vault = tgt.vault.Addr
	if !plan.Covered() {
		var gaps []string
		for _, g := range plan.Uncovered {
			gaps = append(gaps, g.Mount+"/"+g.Item)
		}
		return &plan, fmt.Errorf("the catalogue does not cover what the drill seeded: %s", strings.Join(gaps, ", "))
	}
	return &plan, nil
}

// recordPlatform notes what the platform's credentials are before the
// breach.
func recordPlatform(ctx context.Context, tgt *target, stack *localstack.Stack, estate *localstack.PlatformEstate) (*platformBefore, error) {
	c, err := tgt.vault.Client()
	if err != nil {
		return nil, err
	}
	pw, err := staticPassword(ctx, c, estate.StaticRole)
	if err != nil {
		return nil, err
	}
	return &platformBefore{estate: estate, stack: stack, staticPassword: pw}, nil
}

func staticPassword(ctx context.Context, c *vault.Client, role string) (string, error) {
	s, err := c.Logical().ReadWithContext(ctx, "database/static-creds/"+role)
	if err != nil || s == nil {
		return "", fmt.Errorf("static role %s: %w", role, err)
	}
	pw, _ := s.Data["password"].(string)
	return pw, nil
}

// verifyPlatform checks every seeded platform credential was rotated, with
// the break-glass token (the admin token was revoked with the rest).
func verifyPlatform(ctx context.Context, tgt *target, b *platformBefore, incidentID string, v *verification) error {
	c, err := tgt.vault.Client()
	if err != nil {
		return err
	}
	c.SetToken(tgt.breakGlass)
	v.PlatformChecked = true
	problem := func(format string, a ...any) {
		v.PlatformProblems = append(v.PlatformProblems, fmt.Sprintf(format, a...))
	}
	for _, k := range b.estate.TransitKeys {
		s, err := c.Logical().ReadWithContext(ctx, "transit/keys/"+k)
		if err != nil {
			return err
		}
		if fmt.Sprint(s.Data["latest_version"]) != "2" {
			problem("transit key %s is at version %v, not rotated once", k, s.Data["latest_version"])
		}
	}
	logsIn := func(user, pw string) bool {
		conn, err := pgx.Connect(ctx, b.stack.DatabaseURL(user, pw))
		if err == nil {
			_ = conn.Close(ctx) // a reader: nothing of ours is pending on it
		}
		return err == nil
	}
	if logsIn(b.estate.RootUser, b.estate.RootPassword()) {
		problem("the database root role %s still logs in with its old password", b.estate.RootUser)
	}
	if logsIn(b.estate.StaticUser, b.staticPassword) {
		problem("the static role's user %s still logs in with its old password", b.estate.StaticUser)
	}
	if now, err := staticPassword(ctx, c, b.estate.StaticRole); err != nil || !logsIn(b.estate.StaticUser, now) {
		problem("the static role's new password does not log in (%v)", err)
	}
	resp, err := c.Logical().ReadRawWithContext(ctx, "pki/crl")
	if err != nil {
		return err
	}
	der, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close() // read to the end or not needed: nothing to lose
	if err != nil {
		return err
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return fmt.Errorf("pki/crl: %w", err)
	}
	var revoked []string
	for _, e := range crl.RevokedCertificateEntries {
		revoked = append(revoked, credentials.NormalSerial(fmt.Sprintf("%x", e.SerialNumber)))
	}
	for _, s := range b.estate.CertSerials {
		if !slices.Contains(revoked, credentials.NormalSerial(s)) {
			problem("certificate %s is not on the CRL", s)
		}
	}
	for _, p := range append(slices.Clone(b.estate.Secrets), b.estate.CertStore) {
		s, err := c.Logical().ReadWithContext(ctx, tgt.mount+"/subkeys/"+p)
		if err != nil {
			return err
		}
		if !writtenBy(s, incidentID) {
			problem("platform secret %s was not written by the incident", p)
		}
	}
	return nil
}
