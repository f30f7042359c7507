package smtpmail_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockdown/lockdown/services/notifier/internal/notify"
	"github.com/lockdown/lockdown/services/notifier/internal/smtpmail"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// counter forwards TCP connections to a real relay and counts them: how
// many connections the mailer opened.
type counter struct {
	ln       net.Listener
	accepted atomic.Int64
}

func countConnections(t *testing.T, to string) *counter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &counter{ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			c.accepted.Add(1)
			wg.Go(func() {
				defer func() { _ = in.Close() }()
				out, err := net.Dial("tcp", to)
				if err != nil {
					return
				}
				defer func() { _ = out.Close() }()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(out, in); done <- struct{}{} }()
				go func() { _, _ = io.Copy(in, out); done <- struct{}{} }()
				<-done
			})
		}
	})
	return c
}

func email(i int) notify.Email {
	return notify.Email{From: "security@platform.example", To: fmt.Sprintf("ops@tenant-%d.example", i), Subject: "incident",
		MessageID: fmt.Sprintf("<conn-test.%d.%d@platform.example>", time.Now().UnixNano(), i), Text: "text", HTML: "<p>html</p>", IncidentID: "inc-conn"}
}

// TestConnections sends through a real Mailpit and counts the connections
// the mailer opens for them.
func TestConnections(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.Options{Mailpit: true})
	send := func(t *testing.T, m *smtpmail.Mailer, n int) {
		t.Helper()
		for i := range n {
			if err := m.Send(ctx, email(i)); err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
		}
	}

	for _, c := range []struct {
		name           string
		opts           smtpmail.Options
		messages, want int64
	}{
		{"messages one after another share one connection", smtpmail.Options{}, 20, 1},
		{"a connection carries at most MaxMessagesPerConn messages", smtpmail.Options{MaxMessagesPerConn: 5}, 20, 4},
		{"with MaxIdle negative every message has its own connection", smtpmail.Options{MaxIdle: -1}, 5, 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			relay := countConnections(t, s.Mailpit.SMTPAddr)
			c.opts.Addr, c.opts.TLS = relay.ln.Addr().String(), smtpmail.TLSNone
			m := smtpmail.New(c.opts)
			defer m.Close()
			send(t, m, int(c.messages))
			if n := relay.accepted.Load(); n != c.want {
				t.Fatalf("%d messages over %d connections, want %d", c.messages, n, c.want)
			}
		})
	}
	t.Run("after a relay restart the kept connection is replaced and the message goes", func(t *testing.T) {
		m := smtpmail.New(smtpmail.Options{Addr: s.Mailpit.SMTPAddr, TLS: smtpmail.TLSNone})
		defer m.Close()
		send(t, m, 1)
		if err := s.StopMailpit(); err != nil {
			t.Fatal(err)
		}
		if err := s.StartMailpit(ctx); err != nil {
			t.Fatal(err)
		}
		last := email(99)
		if err := m.Send(ctx, last); err != nil {
			t.Fatalf("the first message after the restart: %v", err)
		}
		msgs, err := s.Mailpit.Messages(ctx)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, msg := range msgs {
			found = found || "<"+msg.MessageID+">" == last.MessageID || msg.MessageID == last.MessageID
		}
		if !found {
			t.Fatalf("the message sent after the restart is not in Mailpit (%d messages)", len(msgs))
		}
	})
}

// TestRefusals: a real relay's answers sorted — a 4xx is a refusal for now
// (the pace slows, the message is retried), a 5xx to the recipient is
// permanent, a 5xx to the sender (the platform's own address) an outage.
func TestRefusals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.Options{Mailpit: true})
	m := smtpmail.New(smtpmail.Options{Addr: s.Mailpit.SMTPAddr, TLS: smtpmail.TLSNone})
	defer m.Close()
	for _, c := range []struct {
		name          string
		step          string
		code          int
		throttled     bool
		permanent     bool
		stillSendable bool
	}{
		{"a 451 to RCPT is a refusal for now, not permanent", "Recipient", 451, true, false, true},
		{"a 421 to MAIL is a refusal for now", "Sender", 421, true, false, true},
		{"a 550 to RCPT is permanent", "Recipient", 550, false, true, true},
		{"a 550 to MAIL is the platform's sender: neither permanent nor a refusal for load", "Sender", 550, false, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := s.Mailpit.Chaos(ctx, map[string]localstack.ChaosTrigger{c.step: {ErrorCode: c.code, Probability: 100}}); err != nil {
				t.Fatal(err)
			}
			err := m.Send(ctx, email(1))
			if err == nil || errors.Is(err, notify.ErrThrottled) != c.throttled || errors.Is(err, notify.ErrPermanent) != c.permanent {
				t.Fatalf("%v: throttled %v, permanent %v; want %v, %v", err, errors.Is(err, notify.ErrThrottled), errors.Is(err, notify.ErrPermanent), c.throttled, c.permanent)
			}
			if err := s.Mailpit.Chaos(ctx, nil); err != nil {
				t.Fatal(err)
			}
			if err := m.Send(ctx, email(2)); err != nil {
				t.Fatalf("once the relay accepts again: %v", err)
			}
		})
	}
}
