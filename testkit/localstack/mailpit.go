package localstack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"time"
)

// Mailpit is an SMTP server that keeps what it receives, with an HTTP API
// (GET /api/v1/messages) for tests to read it.
type Mailpit struct {
	// SMTPAddr is host:port of the SMTP listener (no TLS, no auth).
	SMTPAddr string
	// APIURL is the base of the HTTP API.
	APIURL   string
	SMTPPort int
	HTTPPort int
	// WebhookSecret is the notifier's master webhook signing secret for
	// this stack (Mailpit stands for the platform's mail relay; the
	// notifier's other setting lives beside it).
	WebhookSecret string

	args []string
	proc *process
}

func (s *Stack) startMailpit(ctx context.Context) error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	m := &Mailpit{
		SMTPAddr: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		APIURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		SMTPPort: ports[0], HTTPPort: ports[1], WebhookSecret: randomHex(32),
		args: []string{
			"--smtp", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--listen", fmt.Sprintf("127.0.0.1:%d", ports[1]),
			"--database", filepath.Join(s.Dir, "mailpit.db"), "--disable-version-check",
			// Keep every message: Mailpit prunes to its newest 500 by default,
			// and a drill or a test of more tenants counts them all.
			"--max", "0",
			// Tests make it refuse as a loaded relay does (Chaos); off
			// until a trigger is set.
			"--enable-chaos",
		},
	}
	s.Mailpit = m
	return s.StartMailpit(ctx)
}

// StopMailpit stops the SMTP server (tests of a relay that is away); its
// messages stay in its database.
func (s *Stack) StopMailpit() error {
	return s.Mailpit.proc.stop(5 * time.Second)
}

// StartMailpit starts the SMTP server again on the same ports after
// StopMailpit, and waits until its API answers.
func (s *Stack) StartMailpit(ctx context.Context) error {
	bin, err := tool("mailpit")
	if err != nil {
		return err
	}
	p, err := startProcess("mailpit", s.Dir, bin, s.Mailpit.args, nil, nil)
	if err != nil {
		return err
	}
	s.procs = append(s.procs, p)
	s.Mailpit.proc = p
	return p.waitReady(ctx, func(ctx context.Context) error { return httpOK(ctx, s.Mailpit.APIURL+"/api/v1/messages") })
}

// Message is one message Mailpit holds, with its bodies and headers.
type Message struct {
	ID        string
	MessageID string
	Subject   string
	To        []struct{ Address string }
	Text      string
	HTML      string
	Headers   map[string][]string
}

// Messages reads every message Mailpit holds, with bodies and headers,
// a page of 1,000 at a time (a drill of 10,000 tenants holds 10,000).
func (m *Mailpit) Messages(ctx context.Context) ([]Message, error) {
	const page = 1000
	var all []Message
	// A message being stored can be in the total before it is in the list:
	// read again for a moment before calling a difference a problem.
	for attempt := 0; ; attempt++ {
		all = all[:0]
		total := 0
		for start := 0; ; start += page {
			var list struct {
				Total    int
				Messages []Message
			}
			if err := m.get(ctx, fmt.Sprintf("/api/v1/messages?start=%d&limit=%d", start, page), &list); err != nil {
				return nil, err
			}
			total = list.Total
			all = append(all, list.Messages...)
			if len(list.Messages) < page {
				break
			}
		}
		if total == len(all) {
			break
		}
		if attempt == 20 {
			return nil, fmt.Errorf("mailpit: holds %d messages, listed %d", total, len(all))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	for i := range all {
		msg := &all[i]
		var full Message
		if err := m.get(ctx, "/api/v1/message/"+msg.ID, &full); err != nil {
			return nil, err
		}
		msg.Text, msg.HTML = full.Text, full.HTML
		if err := m.get(ctx, "/api/v1/message/"+msg.ID+"/headers", &msg.Headers); err != nil {
			return nil, err
		}
	}
	return all, nil
}

// ChaosTrigger makes Mailpit answer a step with ErrorCode, with
// Probability percent.
type ChaosTrigger struct {
	ErrorCode   int
	Probability int
}

// Chaos sets the SMTP errors Mailpit answers with, by step ("Sender": MAIL,
// "Recipient": RCPT, "Authentication": AUTH); an empty map clears them.
func (m *Mailpit) Chaos(ctx context.Context, triggers map[string]ChaosTrigger) error {
	if triggers == nil {
		triggers = map[string]ChaosTrigger{} // the steps left out are reset
	}
	body, err := json.Marshal(triggers)
	if err != nil {
		return err
	}
	return m.do(ctx, http.MethodPut, "/api/v1/chaos", body, nil)
}

func (m *Mailpit) get(ctx context.Context, path string, into any) error {
	return m.do(ctx, http.MethodGet, path, nil, into)
}

// do calls Mailpit's API with a JSON body (nil: none) and decodes its
// answer into into (nil: none).
func (m *Mailpit) do(ctx context.Context, method, path string, body []byte, into any) error {
	req, err := http.NewRequestWithContext(ctx, method, m.APIURL+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("mailpit: %w", err)
	}
	defer func() { _ = resp.Body.Close() }() // a response body: nothing to lose
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("mailpit: %s %s: %s", method, path, resp.Status)
	}
	if into == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(into)
}
