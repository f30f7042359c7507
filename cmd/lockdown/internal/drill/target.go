package drill

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/lockdown/lockdown/cmd/lockdown/internal/cli"
	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/vaulttoken"
	"github.com/lockdown/lockdown/testkit/localstack"
	"github.com/lockdown/lockdown/testkit/tenantseed"
)

// target is what a drill runs against: the disposable local stack it
// started, or servers that already run Lockdown (a staging environment),
// with their addresses and credentials.
type target struct {
	natsURL                        string
	siemPassword, operatorPassword string
	dbURL                          string
	// vault holds the address, the drill's admin token (as RootToken:
	// seeding, the intruder's policy and token) and, only when the drill
	// plays the key holders, the current unseal shares.
	vault *localstack.Vault
	// tapDir, on the drill's own stack, is where the intruder's audit
	// device writes (a file on this machine); tapFile is that file once
	// the intruder planted it, tapControl a pre-breach secret value the
	// intruder read through it (which the file must show).
	tapDir, tapFile, tapControl string
	// verifyToken reads Vault after the lockdown: a token Lockdown keeps
	// (read when needed: containment replaces its tokens in the incident).
	verifyToken func() (string, error)
	playHolders bool
	// holderDelay is how long after the seal the drill's key holders
	// arrive (--holder-delay).
	holderDelay time.Duration
	// sharesFile, when set, receives the new shares after the rekey the
	// drill played (mode 600): the staging Vault stays usable.
	sharesFile string
	mount      string
	// prefix starts the drill's tenant ids. exact says the directory
	// holds only the drill's tenants (its own stack), so the report's
	// counts must equal them; on a staging platform they include others.
	prefix string
	exact  bool
	// mailpit, when set, is the mailbox the notifications are checked in.
	mailpit *localstack.Mailpit
	// jaegerQuery and otlp, when set, make the drill trace its breach and
	// check that the trace spans every service.
	jaegerQuery, otlp string
	// dns, when set, is the authoritative DNS server of the platform's
	// DKIM zone and of the tenants' zone: the drill's tenants delegate
	// their DKIM selectors to the platform, and their rollover is checked
	// there.
	dns *localstack.DNS
	// breakGlass is a token containment keeps (LOCKDOWN_BREAK_GLASS): the
	// local drill reads the tenants' active DKIM keys with it.
	breakGlass string
}

// rotatorToken reads the rotator's current token from its file: the
// install-time one is revoked by the incident, which hands its successor
// over through the file.
func rotatorToken(v *localstack.Vault) func() (string, error) {
	return func() (string, error) {
		src, err := vaulttoken.Open("", v.RotatorFile)
		if err != nil {
			return "", err
		}
		return src.Token(), nil
	}
}

// localTarget is the stack the drill started: it plays the key holders of
// its own disposable Vault, the one case where Lockdown holds shares.
func localTarget(s *localstack.Stack) *target {
	return &target{
		natsURL: s.NATS.URL, siemPassword: s.NATS.Password(events.UserSIEM), operatorPassword: s.NATS.Password(events.UserOperator),
		dbURL: s.Postgres.URL, vault: s.Vault, verifyToken: rotatorToken(s.Vault), playHolders: true, mount: localstack.VaultKVMount,
		prefix: tenantseed.DefaultPrefix, exact: true,
		mailpit: s.Mailpit, jaegerQuery: s.Jaeger.QueryURL, otlp: s.Jaeger.OTLPHTTPEndpoint, dns: s.DNS,
		tapDir: s.Dir,
	}
}

// existingOptions are the flags of `drill --existing`.
type existingOptions struct {
	natsURL, dbURL, vaultAddr, mount   string
	unsealKeysFile, mailpit, jaeger    string
	otlp, prefix                       string
	playHolders                        bool
	vaultToken, siemPass, operatorPass string
}

// ErrExistingConfig is returned when `drill --existing` lacks an address
// or a credential.
var ErrExistingConfig = errors.New("drill --existing")

// existingTarget checks the options (all problems at once) and builds the
// target. The admin token must survive the lockdown (list it in
// containment's LOCKDOWN_BREAK_GLASS or LOCKDOWN_KEEP_ACCESSORS): the drill
// checks Vault with it afterwards.
func existingTarget(o existingOptions) (*target, error) {
	var problems []string
	need := func(v, what string) {
		if v == "" {
			problems = append(problems, what+" is required")
		}
	}
	need(o.natsURL, "--nats-url (LOCKDOWN_NATS_URL)")
	need(o.dbURL, "--database-url (LOCKDOWN_DATABASE_URL)")
	need(o.vaultAddr, "--vault-addr (LOCKDOWN_VAULT_ADDR)")
	need(o.vaultToken, "LOCKDOWN_DRILL_VAULT_TOKEN (an admin token that survives the lockdown)")
	need(o.siemPass, events.NATSPasswordEnv(events.UserSIEM))
	need(o.operatorPass, events.NATSPasswordEnv(events.UserOperator))
	if o.prefix == "" || o.prefix == tenantseed.DefaultPrefix {
		problems = append(problems, "--tenant-prefix must set the drill's tenants apart from the platform's (not "+tenantseed.DefaultPrefix+")")
	}
	if o.playHolders && o.unsealKeysFile == "" {
		problems = append(problems, "--play-key-holders needs --unseal-keys-file")
	}
	var keys []string
	if o.playHolders && o.unsealKeysFile != "" {
		var err error
		if keys, err = readKeys(o.unsealKeysFile); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrExistingConfig, strings.Join(problems, "; "))
	}
	return &target{
		natsURL: o.natsURL, siemPassword: o.siemPass, operatorPassword: o.operatorPass, dbURL: o.dbURL,
		vault: &localstack.Vault{Addr: o.vaultAddr, RootToken: o.vaultToken, UnsealKeys: keys}, verifyToken: func() (string, error) { return o.vaultToken, nil },
		playHolders: o.playHolders, sharesFile: o.unsealKeysFile, mount: o.mount, jaegerQuery: o.jaeger, otlp: o.otlp, prefix: o.prefix,
		mailpit: mailpitAt(o.mailpit),
	}, nil
}

func mailpitAt(url string) *localstack.Mailpit {
	if url == "" {
		return nil
	}
	return &localstack.Mailpit{APIURL: strings.TrimSuffix(url, "/")}
}

// writeKeys replaces the shares file with the new shares (mode 600,
// written beside it and renamed, so a crash leaves the old or the new).
func writeKeys(path string, keys []string) error {
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(strings.Join(keys, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// readKeys reads unseal shares, one per line, from a file only its owner
// may read: shares are the most sensitive thing a drill can touch.
func readKeys(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by others (mode %v): chmod 600 it", path, st.Mode().Perm())
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }() // read only
	var keys []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k := strings.TrimSpace(sc.Text()); k != "" {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s holds no unseal share", path)
	}
	return keys, sc.Err()
}

// operator is the target's operator identity (the read model's reader).
func (t *target) operator() cli.NATS {
	return cli.NATS{URL: t.natsURL, User: events.UserOperator, Password: t.operatorPassword}
}
