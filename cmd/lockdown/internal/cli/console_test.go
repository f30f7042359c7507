package cli

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/testkit/testwait"
)

// chromiumPath finds the headless browser `make tools` installs
// (deploy/tools/ensure-chromium.sh); LOCKDOWN_CHROMIUM names another.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("LOCKDOWN_CHROMIUM"); p != "" {
		return p
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("no chromium: run `make tools` (deploy/tools/ensure-chromium.sh installs Debian's chromium) or set LOCKDOWN_CHROMIUM")
	}
	return p
}

// TestConsole drives the web console in a real headless Chromium while a
// whole incident runs on the local stack: the incident page, opened once
// while Vault is sealed, shows the incident moving through its phases to
// resolved without a reload (server-sent events from the read model), the
// key holders' command with the ceremony's nonce, and the report. It
// saves screenshots (PNG) in LOCKDOWN_CONSOLE_SCREENSHOTS (docs/console
// for docs/console.md), or in a temporary folder.
func TestConsole(t *testing.T) {
	browser := chromiumPath(t)
	shots := os.Getenv("LOCKDOWN_CONSOLE_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	s := newSystem(t, 10*time.Minute, 6)
	s.startAll(nil)

	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	user := events.UserOperator
	rm, err := openReadModel(ctx, natsFlags{url: &s.stack.NATS.URL, user: &user, password: s.stack.NATS.Password(events.UserOperator)})
	if err != nil {
		t.Fatal(err)
	}
	defer rm.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- ServeConsole(ctx, rm, ln, s.stack.Jaeger.QueryURL) }()
	base := "http://" + ln.Addr().String()

	id := s.incidentOf(s.breach("root token used from 203.0.113.7 (console test)"))
	await(s, events.VaultSealed, 5*time.Minute, func(d events.VaultSealedData) bool { return d.IncidentID == id })

	alloc, stopAlloc := chromedp.NewExecAllocator(ctx, chromedp.ExecPath(browser), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-extensions", true), chromedp.Flag("disable-sync", true), chromedp.WindowSize(1280, 1400), chromedp.UserDataDir(t.TempDir()))
	defer stopAlloc()
	tab, closeTab := chromedp.NewContext(alloc)
	defer closeTab()
	eval := func(expr string) string {
		t.Helper()
		v, err := chromedp.Run(tab, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		return v
	}
	shoot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(shots, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const phaseJS = `(document.querySelector("section.incident") || {dataset: {}}).dataset.phase || ""`

	if _, err := chromedp.Run(tab, chromedp.Navigate(base+"/incidents/"+id)); err != nil {
		t.Fatal(err)
	}
	// A mark on the window: a reload would lose it.
	eval(`window.lockdownMark = "first load"; "ok"`)
	testwait.For(t, 30*time.Second, "the page to show the sealed incident, live", func() bool {
		return eval(phaseJS) == "sealed" && strings.HasPrefix(eval(`document.getElementById("live").textContent`), "live")
	})
	shoot("console-sealed.png")

	holders := make(chan struct{})
	go func() {
		defer close(holders)
		if err := s.stack.Vault.Unseal(ctx); err != nil {
			t.Errorf("unseal: %v", err)
			return
		}
		s.holdersUntilResolved(id)
	}()
	phases := []string{"sealed"}
	ceremony := false
	deadline := time.Now().Add(8 * time.Minute)
	for phases[len(phases)-1] != "resolved" {
		if time.Now().After(deadline) {
			t.Fatalf("the page never showed the incident resolved: phases seen %v", phases)
		}
		if p := eval(phaseJS); p != "" && p != phases[len(phases)-1] {
			phases = append(phases, p)
		}
		if cmd := eval(`(document.getElementById("holder-command") || {}).textContent || ""`); !ceremony && strings.HasPrefix(cmd, "vault operator rekey -nonce=") {
			ceremony = true
			shoot("console-ceremony.png")
			nonce, err := s.nonce(id)
			if err != nil || !strings.HasSuffix(cmd, "-nonce="+nonce) {
				t.Fatalf("the page asks the holders for %q; the ceremony's nonce is %q (%v)", cmd, nonce, err)
			}
		}
		time.Sleep(50 * time.Millisecond) // the page's own pace is the server's events; this only samples it
	}
	<-holders
	t.Logf("phases the page showed, without a reload: %v", phases)
	if mark := eval(`window.lockdownMark || "reloaded"`); mark != "first load" {
		t.Fatalf("the page was reloaded (mark %q)", mark)
	}
	if len(phases) < 3 {
		t.Fatalf("the page jumped from sealed to resolved: %v", phases)
	}
	if !ceremony {
		t.Log("the ceremony's step was too short to be sampled on the page (the holders are scripted)")
	}
	testwait.For(t, 30*time.Second, "the closed incident's page to say it is final", func() bool {
		return strings.Contains(eval(`document.getElementById("live").textContent`), "closed")
	})
	shoot("console-resolved.png")

	if _, err := chromedp.Run(tab, chromedp.Navigate(base+"/incidents/"+id+"/report")); err != nil {
		t.Fatal(err)
	}
	if body := eval(`document.body.innerText`); !strings.Contains(body, id) || !strings.Contains(body, "resolved") {
		t.Fatalf("the report page shows: %.300s", body)
	}
	shoot("console-report.png")
	if _, err := chromedp.Run(tab, chromedp.Navigate(base+"/")); err != nil {
		t.Fatal(err)
	}
	if body := eval(`document.body.innerText`); !strings.Contains(body, id) {
		t.Fatalf("the incident list shows: %.300s", body)
	}
	shoot("console-list.png")
	resp, err := http.Get(base + "/incidents/" + id + "/report.json")
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("report.json: %v %v", resp, err)
	}
	_ = resp.Body.Close()
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

// TestConsoleToken checks the console's guard without a browser: beyond
// loopback it needs a token, and every request must carry it.
func TestConsoleToken(t *testing.T) {
	t.Run("an address beyond loopback is refused without a token", func(t *testing.T) {
		if err := checkConsoleAddr("0.0.0.0:8090", ""); err == nil || !strings.Contains(err.Error(), "LOCKDOWN_CONSOLE_TOKEN") {
			t.Fatalf("0.0.0.0 without a token: %v", err)
		}
		if err := checkConsoleAddr("0.0.0.0:8090", "short"); err == nil {
			t.Fatal("a short token was taken")
		}
		if err := checkConsoleAddr("127.0.0.1:8090", ""); err != nil {
			t.Fatalf("loopback: %v", err)
		}
	})
	t.Run("with a token, a request without it is refused and ?token= becomes a cookie", func(t *testing.T) {
		c := &console{token: "a-long-enough-console-token", log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		h := c.guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "in") }))
		get := func(target string, with func(*http.Request)) *httptest.ResponseRecorder {
			r := httptest.NewRequest(http.MethodGet, target, nil)
			if with != nil {
				with(r)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			return w
		}
		if w := get("/", nil); w.Code != http.StatusUnauthorized {
			t.Fatalf("no token: %d", w.Code)
		}
		if w := get("/", func(r *http.Request) { r.Header.Set("Authorization", "Bearer wrong") }); w.Code != http.StatusUnauthorized {
			t.Fatalf("a wrong token: %d", w.Code)
		}
		w := get("/incidents/x?token=a-long-enough-console-token", nil)
		cookies := w.Result().Cookies()
		if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/incidents/x" || len(cookies) != 1 || !cookies[0].HttpOnly {
			t.Fatalf("?token=: %d %q %v", w.Code, w.Header().Get("Location"), cookies)
		}
		if w := get("/", func(r *http.Request) { r.AddCookie(cookies[0]) }); w.Code != http.StatusOK || w.Body.String() != "in" {
			t.Fatalf("with the cookie: %d", w.Code)
		}
		if got := w.Header().Get("Content-Security-Policy"); !strings.Contains(got, "script-src 'self'") {
			t.Fatalf("CSP %q", got)
		}
	})
}
