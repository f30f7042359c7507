package webhookpost_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/lockdown/lockdown/services/notifier/internal/notify"
	"github.com/lockdown/lockdown/services/notifier/internal/webhookpost"
)

func TestPost(t *testing.T) {
	status := http.StatusNoContent
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "http://169.254.169.254/", http.StatusFound)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	ctx := context.Background()
	open := webhookpost.New(webhookpost.Options{Secret: []byte("s"), Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	guarded := webhookpost.New(webhookpost.Options{Secret: []byte("s")})

	t.Run("an allowed receiver answering 2xx is delivered", func(t *testing.T) {
		if err := open.Post(ctx, srv.URL+"/hook", "t", "d", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("4xx is permanent, 429 and 5xx are transient", func(t *testing.T) {
		for code, permanent := range map[int]bool{400: true, 404: true, 410: true, 429: false, 500: false, 503: false} {
			status = code
			err := open.Post(ctx, srv.URL+"/hook", "t", "d", []byte(`{}`))
			if err == nil || errors.Is(err, notify.ErrPermanent) != permanent {
				t.Errorf("%d: %v (permanent %v wanted)", code, err, permanent)
			}
		}
		status = http.StatusNoContent
	})
	t.Run("a redirect is not followed and is permanent", func(t *testing.T) {
		if err := open.Post(ctx, srv.URL+"/redirect", "t", "d", []byte(`{}`)); !errors.Is(err, notify.ErrPermanent) {
			t.Fatal(err)
		}
	})
	t.Run("without the allow-list, plain http and loopback are refused", func(t *testing.T) {
		if err := guarded.Post(ctx, srv.URL+"/hook", "t", "d", []byte(`{}`)); !errors.Is(err, webhookpost.ErrBlockedAddress) || !errors.Is(err, notify.ErrPermanent) {
			t.Fatal(err)
		}
	})
	t.Run("https to a private or loopback address is refused before connecting", func(t *testing.T) {
		for _, u := range []string{"https://127.0.0.1:1/", "https://10.1.2.3/", "https://[::1]:1/", "https://169.254.169.254/", "https://100.64.0.1/", "https://localhost:1/"} {
			if err := guarded.Post(ctx, u, "t", "d", []byte(`{}`)); !errors.Is(err, webhookpost.ErrBlockedAddress) {
				t.Errorf("%s: %v", u, err)
			}
		}
	})
	t.Run("URLs with credentials or without a host are refused", func(t *testing.T) {
		for _, u := range []string{"https://user:pw@example.com/", "https:///path", "ftp://example.com/", "::"} {
			if _, err := guarded.CheckURL(u); err == nil {
				t.Errorf("%s accepted", u)
			}
		}
	})
	t.Run("errors name the destination's host, never the token in its path or query", func(t *testing.T) {
		status = http.StatusInternalServerError
		defer func() { status = http.StatusNoContent }()
		for _, u := range []string{"https://10.1.2.3/hooks/SECRET-TOKEN?key=SECRET-KEY", srv.URL + "/hooks/SECRET-TOKEN?key=SECRET-KEY", "http://example.com/hooks/SECRET-TOKEN"} {
			err := open.Post(ctx, u, "t", "d", []byte(`{}`))
			if err == nil || strings.Contains(err.Error(), "SECRET") {
				t.Errorf("%v", err)
			}
		}
	})
}
