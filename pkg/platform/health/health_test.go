package health_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/platform/health"
)

func TestHealth(t *testing.T) {
	s := health.New(time.Second)
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	get := func(path string) (int, map[string]any) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	t.Run("info is shown beside the checks and never makes the service unready", func(t *testing.T) {
		s.AddInfo("engine", func(context.Context) (string, error) { return "leader containment-a", nil })
		s.AddInfo("outbox_pending", func(context.Context) (string, error) { return "", errors.New("database away") })
		code, body := get("/readyz")
		info, _ := body["info"].(map[string]any)
		if code != http.StatusOK || info["engine"] != "leader containment-a" || info["outbox_pending"] != "unknown: database away" {
			t.Fatalf("%d %v", code, body)
		}
	})
	t.Run("healthz answers while the process runs", func(t *testing.T) {
		if code, _ := get("/healthz"); code != http.StatusOK {
			t.Fatal(code)
		}
	})
	t.Run("readyz is 200 when every check passes and 503 naming the one that fails", func(t *testing.T) {
		s.Add("nats", func(context.Context) error { return nil })
		if code, _ := get("/readyz"); code != http.StatusOK {
			t.Fatal(code)
		}
		s.Add("postgres", func(context.Context) error { return errors.New("connection refused") })
		code, body := get("/readyz")
		checks, _ := body["checks"].(map[string]any)
		if code != http.StatusServiceUnavailable || checks["postgres"] != "connection refused" || checks["nats"] != "ok" {
			t.Fatalf("%d %v", code, body)
		}
	})
	t.Run("a check that hangs fails after its timeout", func(t *testing.T) {
		s.Add("postgres", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
		start := time.Now()
		if code, _ := get("/readyz"); code != http.StatusServiceUnavailable || time.Since(start) > 5*time.Second {
			t.Fatalf("%d after %v", code, time.Since(start))
		}
	})
	t.Run("Reachable passes on any HTTP answer, a sealed Vault's 503 included", func(t *testing.T) {
		sealed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
		defer sealed.Close()
		if err := health.Reachable(sealed.URL)(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := health.Reachable("http://127.0.0.1:1/")(context.Background()); err == nil {
			t.Fatal("a closed port was reachable")
		}
	})
}
