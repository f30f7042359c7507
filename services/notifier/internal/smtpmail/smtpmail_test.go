package smtpmail_test

import (
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/lockdown/lockdown/services/notifier/internal/notify"
	"github.com/lockdown/lockdown/services/notifier/internal/smtpmail"
)

func TestCompose(t *testing.T) {
	from, _ := mail.ParseAddress("Security <security@platform.example>")
	to, _ := mail.ParseAddress("ops@tenant.example")
	e := notify.Email{Subject: "URGENT: Security Incident – ünïcode", MessageID: "<lockdown.abc@platform.example>",
		Text: "plain body = incident inc-1\n" + strings.Repeat("long line ", 20), HTML: "<p>html body</p>", IncidentID: "inc-1"}
	raw, err := smtpmail.Compose(e, from, to, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := mail.ReadMessage(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("the headers carry the stable Message-ID, the incident and an encoded subject", func(t *testing.T) {
		if got := msg.Header.Get("Message-ID"); got != e.MessageID {
			t.Errorf("Message-ID %q", got)
		}
		if got := msg.Header.Get("X-Lockdown-Incident"); got != "inc-1" {
			t.Errorf("incident header %q", got)
		}
		subject, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
		if err != nil || subject != e.Subject {
			t.Errorf("subject %q (%v)", subject, err)
		}
	})
	t.Run("the body has a plain text and an HTML part that decode to the rendered content", func(t *testing.T) {
		mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
		if err != nil || mt != "multipart/alternative" {
			t.Fatalf("content type %q (%v)", mt, err)
		}
		r := multipart.NewReader(msg.Body, params["boundary"])
		for _, want := range []struct{ ctype, body string }{{"text/plain", e.Text}, {"text/html", e.HTML}} {
			p, err := r.NextPart() // decodes quoted-printable
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(p)
			if !strings.HasPrefix(p.Header.Get("Content-Type"), want.ctype) || strings.ReplaceAll(string(b), "\r\n", "\n") != want.body { // text lines end in CRLF on the wire
				t.Errorf("%s part: %q", want.ctype, b)
			}
		}
	})
}
