// Package health serves a service's liveness and readiness over HTTP:
// /healthz answers 200 while the process runs; /readyz runs every
// registered check (NATS and the service's consumers, PostgreSQL, Vault
// where the service needs it) and answers 200 only when all pass, 503
// with the failures otherwise. Orchestrators probe them (deploy/k8s,
// docker-compose.yml).
package health

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/lockdown/lockdown/pkg/platform/httpserve"
)

// Check reports one dependency's state: nil when usable.
type Check func(ctx context.Context) error

// Info reports one fact of the service's state for operators (whether
// this process leads, how many events wait to be published): shown in
// /readyz under "info", never a reason to be unready.
type Info func(ctx context.Context) (string, error)

// Server holds the checks and serves them.
type Server struct {
	mu      sync.Mutex
	checks  map[string]Check
	alarms  map[string]Check
	info    map[string]Info
	timeout time.Duration
}

// New returns a server whose checks get timeout each.
func New(timeout time.Duration) *Server {
	return &Server{checks: map[string]Check{}, alarms: map[string]Check{}, info: map[string]Info{}, timeout: timeout}
}

// AddInfo registers a fact shown in /readyz under "info".
func (s *Server) AddInfo(name string, f Info) { register(&s.mu, s.info, name, f) }

// Info reads every registered fact at once; one that could not be read
// shows its error.
func (s *Server) Info(ctx context.Context) map[string]string {
	return each(ctx, s.timeout, snapshot(&s.mu, s.info), func(ctx context.Context, f Info) string {
		v, err := f(ctx)
		if err != nil {
			return "unknown: " + err.Error()
		}
		return v
	})
}

// AddAlarm registers a check whose failure is shown in /readyz under
// "alarms" without making the service unready: something an operator must
// see (an event parked by the outbox relay) that does not stop the service
// from doing its work — taking it out of rotation would make it worse.
func (s *Server) AddAlarm(name string, c Check) { register(&s.mu, s.alarms, name, c) }

// Add registers a readiness check under a name (replacing one of the same
// name).
func (s *Server) Add(name string, c Check) { register(&s.mu, s.checks, name, c) }

// Ready runs every check at once and returns each one's error message
// ("" when it passed).
func (s *Server) Ready(ctx context.Context) map[string]string {
	return s.run(ctx, snapshot(&s.mu, s.checks))
}

// Alarms runs every alarm and returns the raised ones' messages.
func (s *Server) Alarms(ctx context.Context) map[string]string {
	out := s.run(ctx, snapshot(&s.mu, s.alarms))
	maps.DeleteFunc(out, func(_, msg string) bool { return msg == "" })
	return out
}

// register sets m[name] under mu: checks, alarms and facts are registered
// while the server may already serve.
func register[V any](mu *sync.Mutex, m map[string]V, name string, v V) {
	mu.Lock()
	defer mu.Unlock()
	m[name] = v
}

// snapshot copies m under mu: the checks then run outside the lock, which
// a slow one would otherwise hold for its whole timeout.
func snapshot[V any](mu *sync.Mutex, m map[string]V) map[string]V {
	mu.Lock()
	defer mu.Unlock()
	return maps.Clone(m)
}

// run runs every check at once and returns each one's error message ("" when
// it passed).
func (s *Server) run(ctx context.Context, checks map[string]Check) map[string]string {
	return each(ctx, s.timeout, checks, func(ctx context.Context, c Check) string {
		if err := c(ctx); err != nil {
			return err.Error()
		}
		return ""
	})
}

// each calls every function of fns at once, each bounded by timeout, and
// returns what call made of each, by name.
func each[F any](ctx context.Context, timeout time.Duration, fns map[string]F, call func(context.Context, F) string) map[string]string {
	out := make(map[string]string, len(fns))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, f := range fns {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			v := call(cctx, f)
			mu.Lock()
			out[name] = v
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// Handler serves /healthz and /readyz.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		results := s.Ready(r.Context())
		status, code := "ready", http.StatusOK
		names := make([]string, 0, len(results))
		for n, msg := range results {
			names = append(names, n)
			if msg != "" {
				status, code = "not ready", http.StatusServiceUnavailable
			}
		}
		sort.Strings(names)
		body := struct {
			Status string            `json:"status"`
			Checks map[string]string `json:"checks"`           // name → "ok" or the failure
			Alarms map[string]string `json:"alarms,omitempty"` // raised alarms only
			Info   map[string]string `json:"info,omitempty"`
		}{Status: status, Checks: map[string]string{}, Alarms: s.Alarms(r.Context()), Info: s.Info(r.Context())}
		for _, n := range names {
			body.Checks[n] = "ok"
			if results[n] != "" {
				body.Checks[n] = results[n]
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	})
	return mux
}

// Serve listens on addr until ctx ends, then shuts down.
func (s *Server) Serve(ctx context.Context, addr string, logger *slog.Logger) error {
	return httpserve.Serve(ctx, "health endpoints", addr, s.Handler(), 2*time.Second, logger)
}

// Reachable returns a check that passes when url answers HTTP at all —
// any status. For Vault, GET /v1/sys/seal-status answers sealed or not:
// containment must keep watching a sealed Vault, so sealed is not unready.
func Reachable(url string) Check { return ReachableWith(&http.Client{}, url) }

// ReachableWith is Reachable through a given client: a Vault behind a
// private CA needs the client the service's Vault adapter uses
// (VAULT_CACERT and friends), or readiness would fail on the certificate.
func ReachableWith(client *http.Client, url string) Check {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("unreachable: %w", err)
		}
		_ = resp.Body.Close() // only that it answered matters: nothing was read
		return nil
	}
}
