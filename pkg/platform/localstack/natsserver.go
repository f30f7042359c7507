package localstack

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/lockdown/lockdown/pkg/events"
)

// NATS is a running nats-server with JetStream on file storage.
type NATS struct {
	// URL is the client URL, nats://127.0.0.1:<port>.
	URL         string
	Port        int
	MonitorPort int
	// Passwords maps each NATS user of deploy/nats/auth.conf to the
	// password generated for this stack; nil when the server runs without
	// authorization.
	Passwords map[string]string
}

// Password returns a user's generated password ("" without authorization).
func (n *NATS) Password(user string) string { return n.Passwords[user] }

func (s *Stack) startNATS(ctx context.Context, auth bool) error {
	bin, err := tool("nats-server")
	if err != nil {
		return err
	}
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	dir := filepath.Join(s.Dir, "nats")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var authConfig string
	var env []string
	var passwords map[string]string
	if auth {
		// Lockdown's own least-privilege users, with fresh passwords handed
		// to nats-server through its environment, as in production.
		authConfig = events.NATSAuthConfig()
		passwords = map[string]string{}
		for _, u := range events.NATSUsers() {
			passwords[u] = randomHex(16)
			env = append(env, events.NATSPasswordEnv(u)+"="+passwords[u])
		}
	}
	conf := fmt.Sprintf(`server_name: lockdown_local
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream {
  store_dir: %q
  max_memory_store: 256MB
  max_file_store: 2GB
}
%s
`, ports[0], ports[1], dir, authConfig)
	confPath := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return err
	}
	p, err := startProcess("nats", s.Dir, bin, []string{"-c", confPath}, env, nil)
	if err != nil {
		return err
	}
	s.procs = append(s.procs, p)
	healthz := fmt.Sprintf("http://127.0.0.1:%d/healthz?js-enabled-only=true", ports[1])
	if err := p.waitReady(ctx, func(ctx context.Context) error { return httpOK(ctx, healthz) }); err != nil {
		return err
	}
	s.NATS = &NATS{URL: fmt.Sprintf("nats://127.0.0.1:%d", ports[0]), Port: ports[0], MonitorPort: ports[1], Passwords: passwords}
	return nil
}

// httpOK succeeds when GET url answers 200.
func httpOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
