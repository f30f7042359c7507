// Package smtpmail sends the notifier's email over SMTP (net/smtp), with
// STARTTLS and authentication when configured, and sorts SMTP failures
// into transient (retry later) and permanent (this address or message will
// never be accepted).
package smtpmail

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"time"

	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/pkg/platform/unavailable"
	"github.com/lockdown/lockdown/services/notifier/internal/notify"
)

// TLS modes.
const (
	TLSNone     = "none"     // plain SMTP (a local relay, tests)
	TLSStartTLS = "starttls" // STARTTLS required; refuses a server without it
)

// Options configure the mailer.
type Options struct {
	Addr     string // host:port
	TLS      string // none or starttls
	Username string // empty: no AUTH
	Password string
	HelloAs  string        // EHLO name; default localhost
	Timeout  time.Duration // one whole message; default 30s
	// TLSConfig overrides the STARTTLS configuration (tests with a
	// private CA); default verifies the server's name.
	TLSConfig *tls.Config
	// MaxIdle is how many connections are kept open between messages;
	// default 8 (the notifier's concurrency), negative keeps none (a
	// connection per message).
	MaxIdle int
	// MaxMessagesPerConn ends a connection after that many messages;
	// default 100.
	MaxMessagesPerConn int
}

// Mailer implements notify.Mailer. It keeps the connections of messages
// it sent open for the next ones (up to Options.MaxIdle of them), as a
// relay expects of a client sending many: the greeting, EHLO, STARTTLS and
// AUTH of a connection are most of a message's cost (docs/benchmarks.md,
// "Notification"). A kept connection is checked with RSET before it
// carries a message; one the relay closed meanwhile (a restart, its idle
// timeout) is replaced by a fresh one, so a relay restart still costs
// nothing but a reconnect.
type Mailer struct {
	opts Options
	idle chan *conn
}

// conn is a connection that has been through EHLO, STARTTLS and AUTH.
type conn struct {
	c    *smtp.Client
	raw  net.Conn
	sent int
}

// New returns a mailer.
func New(opts Options) *Mailer {
	if opts.HelloAs == "" {
		opts.HelloAs = "localhost"
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.MaxIdle == 0 {
		opts.MaxIdle = 8
	}
	if opts.MaxMessagesPerConn <= 0 {
		opts.MaxMessagesPerConn = 100
	}
	return &Mailer{opts: opts, idle: make(chan *conn, max(opts.MaxIdle, 0))}
}

// Close ends the kept connections (QUIT, in the background: a dead one
// must not hold the caller). Sends may go on: they open new connections.
func (m *Mailer) Close() {
	for {
		select {
		case c := <-m.idle:
			go c.quit()
		default:
			return
		}
	}
}

// Send implements notify.Mailer. A failure that is not the recipient's or
// the message's own (the relay unreachable, refusing for a while, or
// misconfigured) says the relay is unavailable: the notifier waits for it,
// however long, and pauses meanwhile.
func (m *Mailer) Send(ctx context.Context, e notify.Email) error {
	err := m.send(ctx, e)
	if err != nil && !errors.Is(err, notify.ErrPermanent) {
		return stream.Unavailable(unavailable.SMTP, err)
	}
	return err
}

func (m *Mailer) send(ctx context.Context, e notify.Email) error {
	to, err := mail.ParseAddress(e.To)
	if err != nil {
		return notify.Permanent(fmt.Errorf("recipient %q: %w", e.To, err))
	}
	from, err := mail.ParseAddress(e.From)
	if err != nil {
		return notify.Permanent(fmt.Errorf("sender %q: %w", e.From, err))
	}
	body, err := Compose(e, from, to, time.Now())
	if err != nil {
		return notify.Permanent(err)
	}
	ctx, cancel := context.WithTimeout(ctx, m.opts.Timeout)
	defer cancel()
	c, err := m.get(ctx)
	if err != nil {
		return err
	}
	if err := transaction(c.c, from.Address, to.Address, body); err != nil {
		// The session's state is unknown after a failure: the connection
		// is not kept, and the transaction's error is the one that counts.
		go c.quit()
		return err
	}
	// The relay has accepted the message: say so at once, so the notifier
	// records it sent before anything else can happen (a crash between
	// acceptance and the record is the one window where a message is sent
	// twice). The connection is kept for the next message, or QUIT in the
	// background: a failed QUIT must not make the message look unsent.
	c.sent++
	m.put(c)
	return nil
}

// get returns a connection ready for a transaction, its deadline ctx's: a
// kept one that answers RSET, or a new one.
func (m *Mailer) get(ctx context.Context) (*conn, error) {
	var c *conn
	select {
	case c = <-m.idle:
	default:
		return m.dial(ctx)
	}
	// A relay that vanished without closing would hold RSET until the
	// message's deadline: a few seconds tell.
	deadline, _ := ctx.Deadline()
	probe := time.Now().Add(5 * time.Second)
	if deadline.Before(probe) {
		probe = deadline
	}
	_ = c.raw.SetDeadline(probe)
	if err := c.c.Reset(); err == nil {
		_ = c.raw.SetDeadline(deadline)
		return c, nil
	}
	// Closed by the relay while it was idle (a restart, its idle timeout):
	// not a failure of this message. The others were kept from the same
	// relay before the same event: drop them all rather than probe each
	// for seconds, and dial.
	_ = c.c.Close()
	m.Close()
	return m.dial(ctx)
}

// put keeps c for the next message, or ends it when enough are kept or it
// has carried MaxMessagesPerConn messages (relays limit a connection's
// messages; a fresh one also spreads load behind a balancer).
func (m *Mailer) put(c *conn) {
	if c.sent < m.opts.MaxMessagesPerConn {
		select {
		case m.idle <- c:
			return
		default:
		}
	}
	go c.quit()
}

// quit ends a connection; its errors are of no interest (the message's
// fate is already decided).
func (c *conn) quit() {
	_ = c.raw.SetDeadline(time.Now().Add(5 * time.Second))
	_ = c.c.Quit()
	_ = c.c.Close()
}

// dial opens a connection and runs EHLO, STARTTLS and AUTH on it.
func (m *Mailer) dial(ctx context.Context) (*conn, error) {
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", m.opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("smtp: %w", err)
	}
	deadline, _ := ctx.Deadline()
	_ = raw.SetDeadline(deadline)
	host, _, _ := net.SplitHostPort(m.opts.Addr)
	c, err := smtp.NewClient(raw, host)
	if err != nil {
		_ = raw.Close()                       // the relay's greeting failed: that is the error
		return nil, classify("greeting", err) // 421: too many connections, for now
	}
	if err := m.hello(c, host); err != nil {
		_ = c.Close() // the session's error is the one that counts
		return nil, err
	}
	return &conn{c: c, raw: raw}, nil
}

// hello greets the relay, and starts TLS and authenticates when
// configured. A 5xx here is the platform's own configuration, wrong for
// every tenant alike: retried (and logged) until someone mends it, never
// permanent.
func (m *Mailer) hello(c *smtp.Client, host string) error {
	if err := c.Hello(m.opts.HelloAs); err != nil {
		return fmt.Errorf("smtp EHLO: %w", err)
	}
	if m.opts.TLS == TLSStartTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return fmt.Errorf("smtp: %s does not offer STARTTLS", host)
		}
		cfg := m.opts.TLSConfig
		if cfg == nil {
			cfg = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
		}
		if err := c.StartTLS(cfg); err != nil {
			return fmt.Errorf("smtp STARTTLS: %w", err)
		}
	}
	if m.opts.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", m.opts.Username, m.opts.Password, host)); err != nil {
			return fmt.Errorf("smtp AUTH: %w", err)
		}
	}
	return nil
}

// transaction sends one message. Only the recipient's and the message's
// refusal (5xx to RCPT or DATA) are permanent: a 5xx to MAIL is the
// platform's sender, wrong for every tenant alike, and is retried.
func transaction(c *smtp.Client, from, to string, body []byte) error {
	if err := c.Mail(from); err != nil {
		return classify("MAIL", err)
	}
	if err := c.Rcpt(to); err != nil {
		return classify("RCPT", err)
	}
	w, err := c.Data()
	if err != nil {
		return classify("DATA", err)
	}
	if _, err := w.Write(body); err != nil {
		return fmt.Errorf("smtp DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return classify("DATA", err)
	}
	return nil
}

// classify sorts the relay's answer to a step: a 5xx to the recipient or
// the message is permanent, a 4xx a refusal for now (ErrThrottled: the
// pace slows down), anything else (the connection) an outage.
func classify(step string, err error) error {
	var te *textproto.Error
	switch {
	case errors.As(err, &te) && te.Code >= 500 && (step == "RCPT" || step == "DATA"):
		return notify.Permanent(fmt.Errorf("smtp %s: %w", step, err))
	case errors.As(err, &te) && te.Code >= 400 && te.Code < 500:
		return fmt.Errorf("smtp %s: %w: %w", step, notify.ErrThrottled, err)
	}
	return fmt.Errorf("smtp %s: %w", step, err)
}

// Compose builds the RFC 5322 message: headers, then a multipart/
// alternative body with the plain text and the HTML part, both
// quoted-printable.
func Compose(e notify.Email, from, to *mail.Address, date time.Time) ([]byte, error) {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for _, part := range []struct{ ctype, content string }{{"text/plain", e.Text}, {"text/html", e.HTML}} {
		w, err := mw.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {part.ctype + "; charset=utf-8"},
			"Content-Transfer-Encoding": {"quoted-printable"},
		})
		if err != nil {
			return nil, err
		}
		qp := quotedprintable.NewWriter(w)
		if _, err := qp.Write([]byte(part.content)); err != nil {
			return nil, err
		}
		if err := qp.Close(); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	var msg bytes.Buffer
	for _, h := range [][2]string{
		{"From", from.String()},
		{"To", to.String()},
		{"Subject", mime.QEncoding.Encode("utf-8", e.Subject)},
		{"Date", date.UTC().Format(time.RFC1123Z)},
		{"Message-ID", e.MessageID},
		{"X-Lockdown-Incident", e.IncidentID},
		{"Auto-Submitted", "auto-generated"},
		{"MIME-Version", "1.0"},
		{"Content-Type", "multipart/alternative; boundary=" + mw.Boundary()},
	} {
		fmt.Fprintf(&msg, "%s: %s\r\n", h[0], h[1])
	}
	msg.WriteString("\r\n")
	msg.Write(body.Bytes())
	return msg.Bytes(), nil
}
