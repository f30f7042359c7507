// Package intake is containment's HTTP breach intake: POST /v1/breaches
// takes a CloudEvent (HTTP binding, structured or binary mode),
// authenticates the caller by bearer token or by an HMAC-SHA256 signature
// of the body with a timestamp, validates the breach, publishes it to
// JetStream exactly as a SIEM would, and answers 202 with the incident id
// once the event is durably stored.
package intake

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/lockdown/lockdown/pkg/events"
)

// Header names of the signature scheme. The signature is
// "sha256=" + hex(HMAC-SHA256(key, timestamp + "." + body)), the timestamp
// Unix seconds.
const (
	HeaderTimestamp = "X-Lockdown-Timestamp"
	HeaderSignature = "X-Lockdown-Signature"
	signaturePrefix = "sha256="
)

// Config of the intake.
type Config struct {
	// BearerTokens accepted in Authorization: Bearer …
	BearerTokens []string
	// HMACKey verifies X-Lockdown-Signature.
	HMACKey string
	// MaxSkew is how far a signed timestamp may be from now: replay
	// protection.
	MaxSkew time.Duration
	// MaxBody bounds the request body.
	MaxBody int64
	// WaitIncident bounds the wait for the incident id after publishing.
	WaitIncident time.Duration
}

// Publisher stores a breach event durably (JetStream).
type Publisher interface {
	PublishBreach(ctx context.Context, ev event.Event) (duplicate bool, err error)
}

// Incidents finds the incident a breach event was recorded in.
type Incidents interface {
	IncidentForEvent(ctx context.Context, eventID string) (string, error)
}

// Response is the 202 body.
type Response struct {
	EventID    string `json:"event_id"`
	IncidentID string `json:"incident_id,omitempty"`
	Duplicate  bool   `json:"duplicate"`
	// Status says whether containment has recorded the event yet.
	Status string `json:"status"`
}

// ErrorResponse is every 4xx/5xx body.
type ErrorResponse struct {
	Error string `json:"error"`
}

// Handler serves the intake.
type Handler struct {
	cfg       Config
	pub       Publisher
	incidents Incidents
	log       *slog.Logger
	now       func() time.Time
	tokens    [][32]byte
}

// New builds the handler. Tokens are kept as SHA-256 digests so that the
// constant-time comparison does not leak their length.
func New(cfg Config, pub Publisher, incidents Incidents, log *slog.Logger) *Handler {
	h := &Handler{cfg: cfg, pub: pub, incidents: incidents, log: log, now: time.Now}
	for _, t := range cfg.BearerTokens {
		h.tokens = append(h.tokens, sha256.Sum256([]byte(t)))
	}
	return h
}

// Routes returns the intake's mux.
func (h *Handler) Routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/breaches", h.breach)
	return mux
}

// errUnauthenticated and friends are the intake's refusals.
var (
	errUnauthenticated = errors.New("missing credentials: send Authorization: Bearer <token>, or " + HeaderTimestamp + " and " + HeaderSignature)
	errBadToken        = errors.New("invalid bearer token")
	errBadSignature    = errors.New("invalid signature")
	errStale           = errors.New("stale or invalid timestamp")
)

func (h *Handler) breach(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", h.cfg.MaxBody))
		return
	}
	if err := h.authenticate(r, body); err != nil {
		h.log.WarnContext(r.Context(), "breach intake refused", slog.String("reason", err.Error()), slog.String("remote", r.RemoteAddr))
		writeError(w, http.StatusUnauthorized, err.Error())
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	ev, err := cehttp.NewEventFromHTTPRequest(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "not a CloudEvent (structured or binary HTTP mode): "+err.Error())
		return
	}
	if ev.Type() != events.BreachDetected.Type() {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("type %q is not %s", ev.Type(), events.BreachDetected.Type()))
		return
	}
	if err := ev.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := events.ValidExternalID(ev.ID()); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if _, err := events.DataAs[events.BreachDetectedData](*ev); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	duplicate, err := h.pub.PublishBreach(r.Context(), *ev)
	if err != nil {
		h.log.ErrorContext(r.Context(), "breach not stored", slog.Any("error", err))
		writeError(w, http.StatusServiceUnavailable, "the breach could not be stored durably; retry")
		return
	}
	resp := Response{EventID: ev.ID(), Duplicate: duplicate, Status: "accepted"}
	resp.IncidentID = h.waitIncident(r.Context(), ev.ID())
	if resp.IncidentID != "" {
		resp.Status = "recorded"
	}
	h.log.InfoContext(r.Context(), "breach accepted over HTTP", slog.String("event_id", ev.ID()), slog.String("incident_id", resp.IncidentID))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	json.NewEncoder(w).Encode(resp)
}

// authenticate accepts a valid bearer token or a valid, fresh signature.
func (h *Handler) authenticate(r *http.Request, body []byte) error {
	if auth := r.Header.Get("Authorization"); auth != "" {
		token, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok || len(h.tokens) == 0 {
			return errBadToken
		}
		sum := sha256.Sum256([]byte(token))
		match := 0
		for _, t := range h.tokens {
			match |= subtle.ConstantTimeCompare(sum[:], t[:])
		}
		if match != 1 {
			return errBadToken
		}
		return nil
	}
	sig, ts := r.Header.Get(HeaderSignature), r.Header.Get(HeaderTimestamp)
	if sig == "" && ts == "" {
		return errUnauthenticated
	}
	if h.cfg.HMACKey == "" {
		return errBadSignature
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errStale
	}
	if skew := h.now().Sub(time.Unix(secs, 0)); skew > h.cfg.MaxSkew || skew < -h.cfg.MaxSkew {
		return errStale
	}
	got, err := hex.DecodeString(strings.TrimPrefix(sig, signaturePrefix))
	if err != nil || !strings.HasPrefix(sig, signaturePrefix) {
		return errBadSignature
	}
	if !hmac.Equal(got, Sign(h.cfg.HMACKey, ts, body)) {
		return errBadSignature
	}
	return nil
}

// Sign computes the signature of a body at a timestamp, for clients and tests.
func Sign(key, timestamp string, body []byte) []byte {
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte(timestamp))
	mac.Write([]byte("."))
	mac.Write(body)
	return mac.Sum(nil)
}

// SignatureHeader formats Sign for the X-Lockdown-Signature header.
func SignatureHeader(key, timestamp string, body []byte) string {
	return signaturePrefix + hex.EncodeToString(Sign(key, timestamp, body))
}

// waitIncident polls containment's store until the consumer has recorded
// the event, up to WaitIncident; "" when it has not yet.
func (h *Handler) waitIncident(ctx context.Context, eventID string) string {
	deadline := time.Now().Add(h.cfg.WaitIncident)
	for {
		if id, err := h.incidents.IncidentForEvent(ctx, eventID); err == nil {
			return id
		}
		if time.Now().After(deadline) {
			return ""
		}
		select {
		case <-ctx.Done():
			return ""
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(ErrorResponse{Error: msg})
}
