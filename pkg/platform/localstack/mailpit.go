package localstack

import (
	"context"
	"fmt"
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
