package localstack

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/lockdown/lockdown/pkg/platform/dkimdns"
	"github.com/lockdown/lockdown/testkit/tenantseed"
)

// DNS is a real authoritative DNS server (Knot DNS, from Debian's knot
// package) serving two zones on loopback: the platform's DKIM zone, into
// which delegated tenants' selectors point by CNAME and which only the
// rotator's TSIG key may update (TXT records only), and TenantZone, which
// stands for the tenants' own DNS (the seeded tenants' domains are below
// it) and which only TenantKey may update: the drill and the tests play
// the tenants' DNS administrators with it.
//
// Knot rather than BIND or CoreDNS: it is a packaged authoritative server
// whose ACLs restrict a TSIG key to record types (update-type), so the
// rotator's key can publish TXT records and nothing else; CoreDNS has no
// RFC 2136 server, and BIND's update-policy says the same at greater
// length.
type DNS struct {
	// Addr is 127.0.0.1:port (UDP and TCP).
	Addr string
	Port int
	// DKIMZone is the platform's DKIM zone (dkim.lockdown.test.).
	DKIMZone string
	// TenantZone holds the seeded tenants' domains (example.com.).
	TenantZone string
	// RotatorKeyFile holds the rotator's TSIG key (dkimdns.LoadKey form).
	RotatorKeyFile string
	// TenantKey updates TenantZone: the tenants' side, for the drill.
	TenantKey dkimdns.Key

	args []string
	proc *process
}

// DNS zone names of the local stack.
const (
	DKIMZone   = "dkim.lockdown.test."
	TenantZone = "example.com."
)

// Delegation is where the local stack delegates a tenant's DKIM selectors:
// <selector>._domainkey.<domain> is a CNAME to <selector>.<Delegation>.
func Delegation(tenantID string) string { return tenantID + "." + DKIMZone }

// EnvKnotd names knotd when it is not at Debian's path.
const EnvKnotd = "LOCKDOWN_KNOTD"

func knotd() (string, error) {
	if p := os.Getenv(EnvKnotd); p != "" {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/knotd", "/usr/bin/knotd"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("knotd"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%w: knotd not found (install Debian's knot package: `make tools` does, or set %s)", ErrBinaryMissing, EnvKnotd)
}

func tsigSecret() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // the kernel's random source failing is not recoverable
	}
	return base64.StdEncoding.EncodeToString(b)
}

func (s *Stack) startDNS(ctx context.Context) error {
	bin, err := knotd()
	if err != nil {
		return err
	}
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	dir := filepath.Join(s.Dir, "dns")
	for _, d := range []string{dir, filepath.Join(dir, "zones"), filepath.Join(dir, "db")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	rotator := dkimdns.Key{Algorithm: "hmac-sha256", Name: "lockdown-rotator", Secret: tsigSecret()}
	tenant := dkimdns.Key{Algorithm: "hmac-sha256", Name: "tenant-dns", Secret: tsigSecret()}
	d := &DNS{Addr: fmt.Sprintf("127.0.0.1:%d", ports[0]), Port: ports[0], DKIMZone: DKIMZone, TenantZone: TenantZone,
		RotatorKeyFile: filepath.Join(dir, "rotator.tsig"), TenantKey: tenant}
	if err := os.WriteFile(d.RotatorKeyFile, []byte(rotator.Algorithm+":"+rotator.Name+":"+rotator.Secret+"\n"), 0o600); err != nil {
		return err
	}
	for _, zone := range []string{DKIMZone, TenantZone} {
		z := fmt.Sprintf("$ORIGIN %s\n$TTL 60\n@ SOA ns.%s hostmaster.%s 1 60 60 3600 60\n@ NS ns.%s\nns.%s A 127.0.0.1\n", zone, zone, zone, zone, zone)
		if err := os.WriteFile(filepath.Join(dir, "zones", strings.TrimSuffix(zone, ".")+".zone"), []byte(z), 0o600); err != nil {
			return err
		}
	}
	conf := fmt.Sprintf(`server:
    rundir: "%[1]s"
    listen: 127.0.0.1@%[2]d
database:
    storage: "%[1]s/db"
key:
  - id: %[3]s
    algorithm: %[4]s
    secret: %[5]s
  - id: %[6]s
    algorithm: %[7]s
    secret: %[8]s
acl:
  # The rotator's key publishes DKIM records in the platform's zone and
  # can change nothing else there.
  - id: rotator
    key: %[3]s
    action: update
    update-type: [TXT]
  - id: tenants
    key: %[6]s
    action: update
template:
  - id: default
    storage: "%[1]s/zones"
    file: "%%s.zone"
    zonefile-sync: -1
log:
  - target: stderr
    any: info
zone:
  - domain: %[9]s
    acl: rotator
  - domain: %[10]s
    acl: tenants
`, dir, d.Port, rotator.Name, rotator.Algorithm, rotator.Secret, tenant.Name, tenant.Algorithm, tenant.Secret,
		strings.TrimSuffix(DKIMZone, "."), strings.TrimSuffix(TenantZone, "."))
	confPath := filepath.Join(dir, "knot.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return err
	}
	d.args = []string{"-c", confPath}
	s.DNS = d
	p, err := startProcess("knotd", s.Dir, bin, d.args, nil, nil)
	if err != nil {
		return err
	}
	s.procs = append(s.procs, p)
	d.proc = p
	c := &dkimdns.Client{Server: d.Addr, Timeout: time.Second}
	return p.waitReady(ctx, func(ctx context.Context) error {
		for _, z := range []string{DKIMZone, TenantZone} {
			if _, err := c.Serial(ctx, z); err != nil {
				return err
			}
		}
		return nil
	})
}

// TenantClient updates the tenants' zone, as a tenant's DNS administrator.
func (d *DNS) TenantClient() *dkimdns.Client {
	return &dkimdns.Client{Server: d.Addr, Key: d.TenantKey}
}

// SeedDKIM is the tenant seed's DKIM on this server: a tenant for which
// delegated is true points both selectors by CNAME from its own zone into
// the platform's, where its key is published under the first (with the
// rotator's TSIG key); any other publishes its key in its own zone.
func (d *DNS) SeedDKIM(selectors [2]string, delegated func(int) bool) (*tenantseed.DKIMDNS, error) {
	platform, err := d.RotatorClient()
	if err != nil {
		return nil, err
	}
	return &tenantseed.DKIMDNS{Platform: platform, Tenants: d.TenantClient(),
		PlatformZone: d.DKIMZone, TenantZone: d.TenantZone, Selectors: selectors, Delegated: delegated}, nil
}

// RotatorClient updates the platform's DKIM zone with the rotator's TSIG
// key (TXT records only, as the rotator may).
func (d *DNS) RotatorClient() (*dkimdns.Client, error) {
	key, err := dkimdns.LoadKey(d.RotatorKeyFile)
	if err != nil {
		return nil, err
	}
	return &dkimdns.Client{Server: d.Addr, Key: key}, nil
}

// Resolver queries the server without a key.
func (d *DNS) Resolver() *dkimdns.Client { return &dkimdns.Client{Server: d.Addr} }

// StopDNS stops the DNS server (tests of a DNS outage); its zones stay.
func (s *Stack) StopDNS() error { return s.DNS.proc.stop(5 * time.Second) }

// StartDNS starts the DNS server again after StopDNS, on the same port.
func (s *Stack) StartDNS(ctx context.Context) error {
	bin, err := knotd()
	if err != nil {
		return err
	}
	p, err := startProcess("knotd", s.Dir, bin, s.DNS.args, nil, nil)
	if err != nil {
		return err
	}
	s.procs = append(s.procs, p)
	s.DNS.proc = p
	c := s.DNS.Resolver()
	return p.waitReady(ctx, func(ctx context.Context) error { _, err := c.Serial(ctx, DKIMZone); return err })
}
