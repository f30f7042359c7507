// Package webhook is the contract of the notifier's tenant webhooks: the
// JSON body, the headers, and how the signature is made and verified. It
// is public so that a tenant's receiver written in Go can verify with the
// same code that signs; docs/operations.md describes it for other
// languages.
//
// A request carries
//
//	X-Lockdown-Timestamp: <unix seconds>
//	X-Lockdown-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>
//	X-Lockdown-Delivery:  <stable id per incident and tenant>
//
// The receiver recomputes the HMAC over the timestamp header, a dot and the
// raw body, compares in constant time, and refuses timestamps older than
// its tolerance (replay). The delivery id is the same on every retry, so a
// receiver drops duplicates by it.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Header names.
const (
	HeaderTimestamp = "X-Lockdown-Timestamp"
	HeaderSignature = "X-Lockdown-Signature"
	HeaderDelivery  = "X-Lockdown-Delivery"
	// signaturePrefix versions the scheme so it can change without
	// breaking receivers that check the prefix.
	signaturePrefix = "v1="
)

// ErrBadSignature is returned when the signature does not match the body
// and timestamp.
var ErrBadSignature = errors.New("webhook: signature does not verify")

// ErrStale is returned when the timestamp is outside the tolerance.
var ErrStale = errors.New("webhook: timestamp outside tolerance")

// Notification is the JSON body of a webhook. It holds no secret value:
// the DKIM record is the public key.
type Notification struct {
	Type            string    `json:"type"` // always "security_incident"
	IncidentID      string    `json:"incident_id"`
	TenantID        string    `json:"tenant_id"`
	Affected        bool      `json:"affected"` // the assessment found this tenant's secrets read
	Rotated         []string  `json:"rotated"`  // ssh, smtp, dkim
	APIKeysRevoked  int       `json:"api_keys_revoked"`
	DKIMSelector    string    `json:"dkim_selector"`
	DKIMRecordName  string    `json:"dkim_record_name"`
	DKIMRecord      string    `json:"dkim_record"`
	DKIMState       string    `json:"dkim_state,omitempty"`
	RequiredActions []string  `json:"required_actions"`
	EmailSending    string    `json:"email_sending"` // "operating normally", or "may be interrupted" for an incomplete rotation
	SentAt          time.Time `json:"sent_at"`
	// RotationIncomplete: this tenant's rotation failed at FailedStep;
	// some secrets may be new, others old. A second notification follows
	// once it is rotated.
	RotationIncomplete bool   `json:"rotation_incomplete,omitempty"`
	FailedStep         string `json:"failed_step,omitempty"`
}

// TenantSecret derives one tenant's signing secret from the platform's
// master secret, so that no tenant can sign webhooks for another. The
// platform shows each tenant its secret (hex) in the dashboard.
func TenantSecret(master []byte, tenantID string) []byte {
	m := hmac.New(sha256.New, master)
	m.Write([]byte("lockdown-webhook/v1/" + tenantID))
	return m.Sum(nil)
}

// Sign returns the signature header value for body sent at ts.
func Sign(secret []byte, ts time.Time, body []byte) string {
	return signaturePrefix + hex.EncodeToString(mac(secret, strconv.FormatInt(ts.Unix(), 10), body))
}

// Verify checks the timestamp and signature headers of a received body.
// tolerance bounds how old (or how far in the future) the timestamp may be.
func Verify(secret []byte, timestamp, signature string, body []byte, now time.Time, tolerance time.Duration) error {
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return ErrStale
	}
	got, err := hex.DecodeString(strings.TrimPrefix(signature, signaturePrefix))
	if err != nil || !strings.HasPrefix(signature, signaturePrefix) {
		return ErrBadSignature
	}
	if !hmac.Equal(got, mac(secret, timestamp, body)) {
		return ErrBadSignature
	}
	return nil
}

func mac(secret []byte, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte("."))
	m.Write(body)
	return m.Sum(nil)
}
