package notify

import (
	"bytes"
	"fmt"
	htmltemplate "html/template"
	"io/fs"
	"os"
	"slices"
	"text/template"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/pkg/events/webhook"
	"github.com/lockdown/lockdown/pkg/platform/directory"
)

// DefaultSubject is the runbook's subject line.
const DefaultSubject = "URGENT: Security Incident - API Keys Revoked"

// Content is what one tenant is told; the templates and the webhook body
// are built from it. It holds no secret value: the DKIM record is public.
type Content struct {
	Tenant          directory.Tenant
	IncidentID      string
	Affected        bool     // secrets read, per the assessment
	Rotated         []string // what was rotated, for people
	SSHFingerprint  string
	DKIMSelector    string
	DKIMRecordName  string // where to publish the TXT record
	DKIMRecord      string
	DKIMState       string // rotation.tenant.completed's dkim_state
	APIKeysRevoked  int
	RequiredActions []string
	// Incomplete marks the notice to a tenant whose rotation failed at
	// FailedStep: what happened, what to do meanwhile, what comes next.
	Incomplete bool
	FailedStep string
	// Replaced and NotReplaced say, in the tenant's words, which
	// credentials an incomplete rotation had already replaced and which
	// are still the old ones.
	Replaced, NotReplaced []string
	// secretsReplaced are the failure's replaced secrets (ssh, smtp,
	// dkim), for the webhook.
	secretsReplaced []string
	// rotatedKinds are the completion's rotated kinds, for the webhook.
	rotatedKinds []string
}

// NewIncompleteContent is the notice to a tenant whose rotation failed:
// some of its secrets may be new, some API keys gone, others still old.
func NewIncompleteContent(t directory.Tenant, d events.RotationTenantFailedData) Content {
	results := d.Results
	if len(results) == 0 {
		results = failedResults(d) // an event of a rotator before per-kind results
	}
	replaced, notReplaced := credentialNames(results)
	secrets := []string{}
	for _, r := range results {
		if replacedNow(r) && r.Kind != credentials.APIKeys {
			secrets = append(secrets, string(r.Kind))
		}
	}
	return Content{Tenant: t, IncidentID: d.IncidentID, Incomplete: true, FailedStep: d.Step, Replaced: replaced, NotReplaced: notReplaced,
		secretsReplaced: secrets, APIKeysRevoked: d.APIKeysDestroyed, RequiredActions: []string{
			"Treat every API key, SMTP credential and SSH key of your account as compromised until our second message.",
			"If a request fails with an invalid API key, create a new key in the dashboard: revoked keys do not come back.",
			"Do not publish a new DKIM record yet: the second message gives it.",
		}}
}

// replacedNow says whether a kind's old credential is gone (a DKIM key
// waiting for the tenant's DNS is not: the old one still signs).
func replacedNow(r credentials.Result) bool {
	return r.State.Done() && r.State != credentials.AwaitingDNS
}

// credentialNames turns a failure's per-kind results into the tenant's
// words: what is new, what is still old.
func credentialNames(results []credentials.Result) (replaced, notReplaced []string) {
	for _, r := range results {
		info, _ := credentials.Of(r.Kind)
		switch {
		case info.Destroys && replacedNow(r):
			replaced = append(replaced, fmt.Sprintf("%s: all %d revoked and destroyed", info.Title, r.Count))
		case replacedNow(r):
			replaced = append(replaced, info.Title+": replaced")
		case info.Destroys:
			notReplaced = append(notReplaced, info.Title+": some may already be revoked, others still work")
		default:
			notReplaced = append(notReplaced, r.Kind.Title()+": not replaced yet")
		}
	}
	return replaced, notReplaced
}

// failedResults reads a failure event without per-kind results (sent by
// a rotator of an earlier version, still in the stream).
func failedResults(d events.RotationTenantFailedData) []credentials.Result {
	var out []credentials.Result
	for _, k := range credentials.OfScope(credentials.PerTenant) {
		r := credentials.Result{Kind: k, State: credentials.Pending}
		if slices.Contains(d.Replaced, string(k)) {
			r.State, r.Count = credentials.Rotated, 1
			if k == credentials.APIKeys {
				r.State, r.Count = credentials.Destroyed, d.APIKeysDestroyed
			}
		}
		out = append(out, r)
	}
	return out
}

// completedResults reads a completion event without per-kind results.
func completedResults(d events.RotationTenantCompletedData) []credentials.Result {
	dkim := credentials.Unverified
	switch d.DKIMState {
	case "active":
		dkim = credentials.Rotated
	case "awaiting_dns":
		dkim = credentials.AwaitingDNS
	}
	out := []credentials.Result{{Kind: credentials.SSH, State: credentials.Rotated, Count: 1, Public: d.SSHFingerprint}}
	if d.SMTPPasswordRotate {
		out = append(out, credentials.Result{Kind: credentials.SMTP, State: credentials.Rotated, Count: 1})
	}
	return append(out, credentials.Result{Kind: credentials.APIKeys, State: credentials.Destroyed, Count: d.APIKeysDestroyed},
		credentials.Result{Kind: credentials.DKIM, State: dkim, Count: 1, Public: d.DKIMSelector})
}

// deliveryKey tells one notice's deliveries apart (Message-ID, webhook
// delivery id): the tenant, marked for the incomplete-rotation notice.
func (c Content) deliveryKey() string {
	if c.Incomplete {
		return c.Tenant.ID + incompleteSuffix
	}
	return c.Tenant.ID
}

// variant names the template a content is rendered with.
func (c Content) variant() string {
	switch {
	case c.Incomplete:
		return "incomplete"
	case c.Affected:
		return "affected"
	}
	return "precautionary"
}

// NewContent builds a tenant's content from its rotation's per-kind
// results: what was rotated, and each kind's action (the contract's
// words, pkg/events/credentials). credentialsURL is where the tenant
// finds its new SMTP credentials (empty: its dashboard); the notice never
// carries them.
func NewContent(t directory.Tenant, d events.RotationTenantCompletedData, credentialsURL string) Content {
	results := d.Results
	if len(results) == 0 {
		results = completedResults(d) // an event of a rotator before per-kind results
	}
	c := Content{
		Tenant: t, IncidentID: d.IncidentID, Affected: d.Affected,
		SSHFingerprint: d.SSHFingerprint, DKIMSelector: d.DKIMSelector, DKIMRecord: d.DKIMRecord,
		DKIMRecordName: d.DKIMSelector + "._domainkey." + t.Domain, APIKeysRevoked: d.APIKeysDestroyed, DKIMState: d.DKIMState,
	}
	where := "in your dashboard"
	if credentialsURL != "" {
		where = "at " + credentialsURL
	}
	fill := map[string]string{"credentials": where, "dkim_name": c.DKIMRecordName}
	for _, r := range results {
		if info, _ := credentials.Of(r.Kind); r.State.Done() && !info.Destroys {
			c.Rotated = append(c.Rotated, info.Title)
			c.rotatedKinds = append(c.rotatedKinds, string(r.Kind))
		}
		if a := r.Kind.Action(r.State, fill); a != "" {
			c.RequiredActions = append(c.RequiredActions, a)
		}
	}
	return c
}

// Webhook is the content as the webhook's JSON body.
func (c Content) Webhook(now time.Time) webhook.Notification {
	if c.Incomplete {
		return webhook.Notification{
			Type: "security_incident", IncidentID: c.IncidentID, TenantID: c.Tenant.ID, Rotated: c.secretsReplaced, APIKeysRevoked: c.APIKeysRevoked, RotationIncomplete: true,
			FailedStep: c.FailedStep, RequiredActions: c.RequiredActions, EmailSending: "may be interrupted", SentAt: now.UTC(),
		}
	}
	return webhook.Notification{
		Type: "security_incident", IncidentID: c.IncidentID, TenantID: c.Tenant.ID, Affected: c.Affected,
		Rotated: c.rotatedKinds, APIKeysRevoked: c.APIKeysRevoked, DKIMSelector: c.DKIMSelector,
		DKIMRecordName: c.DKIMRecordName, DKIMRecord: c.DKIMRecord, DKIMState: c.DKIMState, RequiredActions: c.RequiredActions,
		EmailSending: "operating normally", SentAt: now.UTC(),
	}
}

// Templates renders the three variants (affected, precautionary, and
// incomplete for a tenant whose rotation failed) as plain text and HTML,
// and the subject.
type Templates struct {
	subject *template.Template
	text    map[string]*template.Template
	html    map[string]*htmltemplate.Template
}

// templateVariants name the files of a template folder: <variant>.txt.tmpl
// and <variant>.html.tmpl. A folder made before the incomplete variant
// existed may lack it: the built-in one is used.
var templateVariants = []string{"affected", "precautionary", "incomplete"}

// LoadTemplates parses the subject and the four template files from dir,
// or from the built-in defaults when dir is empty. Every file is parsed
// and tried once at start, so a broken template stops the service there
// rather than at the first incident.
func LoadTemplates(dir, subject string) (*Templates, error) {
	var fsys fs.FS = defaults
	root := "templates"
	if dir != "" {
		fsys, root = os.DirFS(dir), "."
	}
	t := &Templates{text: map[string]*template.Template{}, html: map[string]*htmltemplate.Template{}}
	var err error
	if t.subject, err = template.New("subject").Parse(subject); err != nil {
		return nil, fmt.Errorf("notify: subject: %w", err)
	}
	for _, v := range templateVariants {
		from, at := fsys, root
		if _, err := fs.Stat(fsys, root+"/"+v+".txt.tmpl"); err != nil && v == "incomplete" {
			from, at = defaults, "templates"
		}
		if t.text[v], err = template.ParseFS(from, at+"/"+v+".txt.tmpl"); err != nil {
			return nil, fmt.Errorf("notify: template: %w", err)
		}
		if t.html[v], err = htmltemplate.ParseFS(from, at+"/"+v+".html.tmpl"); err != nil {
			return nil, fmt.Errorf("notify: template: %w", err)
		}
	}
	sample := Content{Tenant: directory.Tenant{ID: "t", Name: "T", Domain: "t.example", ContactEmail: "a@t.example"},
		IncidentID: "inc", Rotated: []string{"SSH keys"}, RequiredActions: []string{"act"}, FailedStep: string(credentials.DKIM)}
	for _, c := range []Content{{Affected: true}, {}, {Incomplete: true}} {
		sample.Affected, sample.Incomplete = c.Affected, c.Incomplete
		if _, _, _, err := t.Render(sample); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// Render returns subject, text and HTML of a tenant's message.
func (t *Templates) Render(c Content) (subject, text, html string, err error) {
	var s, tx, h bytes.Buffer
	if err := t.subject.Execute(&s, c); err != nil {
		return "", "", "", fmt.Errorf("notify: subject: %w", err)
	}
	if err := t.text[c.variant()].Execute(&tx, c); err != nil {
		return "", "", "", fmt.Errorf("notify: text: %w", err)
	}
	if err := t.html[c.variant()].Execute(&h, c); err != nil {
		return "", "", "", fmt.Errorf("notify: html: %w", err)
	}
	return s.String(), tx.String(), h.String(), nil
}
