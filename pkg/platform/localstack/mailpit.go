package localstack

import (
	"context"
	"fmt"
	"path/filepath"
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
}

func (s *Stack) startMailpit(ctx context.Context) error {
	bin, err := tool("mailpit")
	if err != nil {
		return err
	}
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	m := &Mailpit{
		SMTPAddr: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		APIURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		SMTPPort: ports[0], HTTPPort: ports[1],
	}
	p, err := startProcess("mailpit", s.Dir, bin, []string{
		"--smtp", m.SMTPAddr, "--listen", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--database", filepath.Join(s.Dir, "mailpit.db"), "--disable-version-check",
	}, nil, nil)
	if err != nil {
		return err
	}
	s.procs = append(s.procs, p)
	if err := p.waitReady(ctx, func(ctx context.Context) error { return httpOK(ctx, m.APIURL+"/api/v1/messages") }); err != nil {
		return err
	}
	s.Mailpit = m
	return nil
}
