package cli

import (
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/extension"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/pkg/events/readmodel"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/pkg/platform/stream"
)

// The console is the room's shared view of an incident: the incident list,
// each incident's page updated live (server-sent events fed by the read
// model's key-value watch), the report. It is served by the CLI binary,
// not by containment: it reads only what the operator may read, so it
// adds nothing to containment's attack surface and can run wherever the
// operator's NATS credential is; a room can run several.
//
// It is read-only (GET only). On a loopback address it needs no token;
// bound anywhere else it refuses to start without LOCKDOWN_CONSOLE_TOKEN,
// and every request must carry it (a bearer header, or the cookie a
// first visit with ?token= sets).

//go:embed console
var consoleFiles embed.FS

var consoleTemplates = template.Must(template.New("").Funcs(template.FuncMap{
	"stamp":  stamp,
	"target": targetOr,
	"ms":     func(d time.Duration) string { return d.Round(time.Millisecond).String() },
	"pct": func(n, of int) int {
		if of == 0 {
			return 0
		}
		return n * 100 / of
	},
	"sub": func(a, b int) int { return max(a-b, 0) },
	// dict passes named values to a sub-template.
	"dict": func(kv ...any) map[string]any {
		m := map[string]any{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[fmt.Sprint(kv[i])] = kv[i+1]
		}
		return m
	},
}).ParseFS(consoleFiles, "console/*.html"))

// consoleTokenCookie carries the token after a first ?token= visit.
const consoleTokenCookie = "lockdown_console"

func runConsole(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := NewFlags("console", errOut)
	nf := addNATSFlags(fs, events.UserOperator)
	addr := fs.String("addr", EnvOr("CONSOLE_ADDR", "127.0.0.1:8090"), "address to serve on (LOCKDOWN_CONSOLE_ADDR); beyond loopback LOCKDOWN_CONSOLE_TOKEN is required")
	jaeger := jaegerFlag(fs)
	if code, ok := Parse(fs, args); !ok {
		return code
	}
	token := EnvOr("CONSOLE_TOKEN", "")
	if err := checkConsoleAddr(*addr, token); err != nil {
		Writef(errOut, "lockdown console: %v\n", err)
		return ExitUsage
	}
	rm, err := openReadModelUntil(ctx, nf)
	if err != nil {
		Writef(errOut, "lockdown console: %v\n", err)
		return ExitFailure
	}
	defer rm.Close()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		Writef(errOut, "lockdown console: %v\n", err)
		return ExitFailure
	}
	Writef(out, "console: http://%s/\n", ln.Addr())
	if err := newConsole(rm, *jaeger, token, slog.New(slog.NewTextHandler(errOut, nil))).serve(ctx, ln); err != nil {
		Writef(errOut, "lockdown console: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}

// loopbackHost says whether a request's Host names this machine's
// loopback: an address of 127.0.0.0/8 or ::1, or localhost.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	return strings.EqualFold(host, "localhost")
}

// checkConsoleAddr refuses an address beyond loopback without a token.
func checkConsoleAddr(addr, token string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--addr %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
		return nil
	}
	if token == "" {
		return fmt.Errorf("--addr %s is reachable beyond this machine: set LOCKDOWN_CONSOLE_TOKEN (every request must then carry it)", addr)
	}
	if len(token) < 16 {
		return errors.New("LOCKDOWN_CONSOLE_TOKEN is shorter than 16 characters")
	}
	return nil
}

// console serves the pages.
type console struct {
	rm        *ReadModel
	js        jetstream.JetStream
	jaegerURL string
	token     string
	log       *slog.Logger

	mu      sync.Mutex
	dlAt    time.Time
	dlCache []deadLetterView
}

// newConsole is the console of rm: token "" serves loopback only.
func newConsole(rm *ReadModel, jaegerURL, token string, log *slog.Logger) *console {
	return &console{rm: rm, js: rm.conn.JS, jaegerURL: jaegerURL, token: token, log: log}
}

// serve serves until ctx ends; open event streams end with it.
func (c *console) serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: c.routes(), ReadHeaderTimeout: 5 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	errs := make(chan error, 1)
	go func() { errs <- srv.Serve(ln) }()
	select {
	case err := <-errs:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

func (c *console) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", c.list)
	mux.HandleFunc("GET /incidents/{id}", c.page)
	mux.HandleFunc("GET /incidents/{id}/events", c.events)
	mux.HandleFunc("GET /incidents/{id}/report", c.reportHTML)
	mux.HandleFunc("GET /incidents/{id}/report.json", c.reportJSON)
	static, _ := fs.Sub(consoleFiles, "console/static") // a directory embedded above: cannot fail
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	return c.guard(mux)
}

// guard applies the token and the security headers to every request.
func (c *console) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		if c.token == "" && !loopbackHost(r.Host) {
			// Without a token the console listens on loopback only; a page
			// of another site whose name resolves to 127.0.0.1 (DNS
			// rebinding) reaches it under its own name, and is refused.
			http.Error(w, "this console answers to a loopback name only (127.0.0.1, [::1], localhost)", http.StatusMisdirectedRequest)
			return
		}
		if c.token != "" {
			switch c.authorize(w, r) {
			case denied:
				http.Error(w, "this console needs its token (LOCKDOWN_CONSOLE_TOKEN): Authorization: Bearer, or open it once with ?token=", http.StatusUnauthorized)
				return
			case redirected:
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

type authResult int

const (
	allowed authResult = iota
	denied
	redirected
)

func (c *console) authorize(w http.ResponseWriter, r *http.Request) authResult {
	same := func(s string) bool { return subtle.ConstantTimeCompare([]byte(s), []byte(c.token)) == 1 }
	if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && same(b) {
		return allowed
	}
	if ck, err := r.Cookie(consoleTokenCookie); err == nil && same(ck.Value) {
		return allowed
	}
	if q := r.URL.Query().Get("token"); q != "" && same(q) {
		// Swap the token in the address for a cookie the browser keeps
		// (and sends with the event stream), and drop it from the URL.
		http.SetCookie(w, &http.Cookie{Name: consoleTokenCookie, Value: c.token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
		u := *r.URL
		qs := u.Query()
		qs.Del("token")
		u.RawQuery = qs.Encode()
		http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
		return redirected
	}
	return denied
}

// incidentView is what the incident page shows: the document, the key
// holders' commands, the incident's dead letters.
type incidentView struct {
	readmodel.Incident
	Commands    []string
	DeadLetters []deadLetterView
	Now         time.Time
}

func (c *console) view(ctx context.Context, doc readmodel.Incident) incidentView {
	doc.TraceURL = report.TraceLink(c.jaegerURL, doc.TraceID)
	doc.Settle(time.Now())
	v := incidentView{Incident: doc, Now: time.Now()}
	if doc.Recovery != nil {
		v.Commands = doc.Recovery.Ceremony.Commands()
	}
	for _, d := range c.deadLetters(ctx) {
		if d.IncidentID == doc.ID {
			v.DeadLetters = append(v.DeadLetters, d)
		}
	}
	return v
}

// deadLetters reads the dead-letter stream at most every 5 s (it holds
// failures, not traffic; the page is redrawn on every change).
func (c *console) deadLetters(ctx context.Context) []deadLetterView {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.dlAt) < 5*time.Second {
		return c.dlCache
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	list, err := deadLetters(dctx, c.js, "")
	if err != nil {
		c.log.Warn("dead letters not read", slog.Any("error", err))
		return c.dlCache
	}
	c.dlCache, c.dlAt = list, time.Now()
	return list
}

func (c *console) render(w http.ResponseWriter, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := consoleTemplates.ExecuteTemplate(w, name, data); err != nil {
		c.log.Warn("page not rendered", slog.String("page", name), slog.Any("error", err))
	}
}

// fail answers an error the operator can act on; a missing incident is
// 404, a bad id 400, the read model unreachable 503.
func (c *console) fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, events.ErrBadIncidentKey):
		http.Error(w, err.Error(), http.StatusBadRequest)
	case errors.Is(err, stream.ErrNoIncident):
		http.Error(w, err.Error(), http.StatusNotFound)
	default:
		c.log.Warn("read model not read", slog.Any("error", err))
		http.Error(w, "the read model cannot be read now (NATS): "+err.Error(), http.StatusServiceUnavailable)
	}
}

func (c *console) list(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	list, err := c.rm.Incidents(ctx)
	if err != nil {
		c.fail(w, err)
		return
	}
	// The last `lockdown plan`, when one is kept: what an incident would
	// rotate now and what nothing covers.
	plan, err := stream.LastPlan(ctx, c.js)
	if err != nil {
		c.log.Warn("last plan not read", slog.Any("error", err))
	}
	c.render(w, "list.html", struct {
		Incidents []readmodel.Incident
		Now       time.Time
		Plan      *credentials.Plan
	}{list, time.Now(), plan})
}

func (c *console) page(w http.ResponseWriter, r *http.Request) {
	doc, err := c.rm.Incident(r.Context(), r.PathValue("id"))
	if err != nil {
		c.fail(w, err)
		return
	}
	c.render(w, "incident.html", c.view(r.Context(), doc))
}

// events streams the incident's page body as server-sent events: one
// "incident" event per change of the document (the read model's watch),
// and the same body again every 5 s (rates, ETAs, dead letters). The
// stream ends with a "closed" event once the incident is closed.
func (c *console) events(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := events.IncidentKey(id); err != nil {
		c.fail(w, err)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	docs, errs, err := c.rm.Watch(r.Context(), id)
	if err != nil {
		c.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	send := func(event string, body string) error {
		if _, err := io.WriteString(w, sseFrame(event, body)); err != nil {
			return err
		}
		flusher.Flush()
		return nil
	}
	refresh := time.NewTicker(5 * time.Second)
	defer refresh.Stop()
	var last *readmodel.Incident
	for {
		select {
		case <-r.Context().Done():
			return
		case err := <-errs:
			_ = send("problem", template.HTMLEscapeString(err.Error())) // the stream ends either way
			return
		case doc, ok := <-docs:
			if !ok {
				return
			}
			last = &doc
		case <-refresh.C:
			if last == nil {
				continue
			}
		}
		var body strings.Builder
		if err := consoleTemplates.ExecuteTemplate(&body, "body", c.view(r.Context(), *last)); err != nil {
			c.log.Warn("page not rendered", slog.Any("error", err))
			return
		}
		if send("incident", body.String()) != nil {
			return
		}
		if last.Closed() {
			_ = send("closed", last.Phase) // the stream ends either way
			return
		}
	}
}

// sseFrame is one server-sent event. The stream's lines end at a CR, an
// LF or both (the EventSource parser's rule), and the body carries text
// from outside (a breach summary): every line break of it, of any kind,
// starts a new data line, so none can start a line of its own (an
// injected "event: closed").
func sseFrame(event, body string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "event: %s\n", event)
	body = strings.ReplaceAll(strings.ReplaceAll(body, "\r\n", "\n"), "\r", "\n")
	for line := range strings.SplitSeq(body, "\n") {
		fmt.Fprintf(&b, "data: %s\n", line)
	}
	b.WriteString("\n")
	return b.String()
}

func (c *console) report(r *http.Request) (report.Report, error) {
	rep, err := c.rm.Report(r.Context(), r.PathValue("id"))
	if err == nil && rep.TraceURL == "" {
		rep.TraceURL = report.TraceLink(c.jaegerURL, rep.TraceID)
	}
	if err == nil {
		withLastPlan(r.Context(), c.js, &rep)
	}
	return rep, err
}

// reportHTML renders the report's Markdown (the same text `lockdown report`
// prints) as HTML. The Markdown renderer escapes raw HTML: a tenant id or
// a reason in the report cannot inject markup.
func (c *console) reportHTML(w http.ResponseWriter, r *http.Request) {
	rep, err := c.report(r)
	if err != nil {
		c.fail(w, err)
		return
	}
	var md strings.Builder
	if err := rep.Markdown(&md); err != nil {
		c.fail(w, err)
		return
	}
	var html strings.Builder
	if err := goldmark.New(goldmark.WithExtensions(extension.Table)).Convert([]byte(md.String()), &html); err != nil {
		c.fail(w, err)
		return
	}
	c.render(w, "report.html", struct {
		ID, Outcome string
		Body        template.HTML
	}{rep.IncidentID, rep.Outcome, template.HTML(html.String())}) // goldmark escapes raw HTML by default (no WithUnsafe)
}

func (c *console) reportJSON(w http.ResponseWriter, r *http.Request) {
	rep, err := c.report(r)
	if err != nil {
		c.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=\"lockdown-report-%s.json\"", rep.IncidentID))
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(rep) // the status is sent: a browser that went away is not told
}
