// Package intake is containment's HTTP breach intake: POST /v1/breaches
// takes a CloudEvent (HTTP binding, structured or binary mode),
// authenticates the caller — a bearer token, or an HMAC-SHA256 signature
// over the method, the path, a timestamp, every ce-* header and the body,
// each signature accepted once — before it reads the body, validates the
// breach, publishes it to JetStream exactly as a SIEM would, and answers
// 202 with the incident id once the event is durably stored.
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
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/lockdown/lockdown/pkg/events"
)

// Header names of the signature scheme. The signature is
// "v2=" + hex(HMAC-SHA256(key, Canonical(request, timestamp, body))), the
// timestamp Unix seconds: it covers the method, the path, the timestamp,
// every ce-* header (binary mode carries the event's id, type and source
// there) and the body, so no part of a captured request can be changed.
const (
	HeaderTimestamp = "X-Lockdown-Timestamp"
	HeaderSignature = "X-Lockdown-Signature"
	signaturePrefix = "v2="
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

// Incidents finds the incident a breach event was recorded in, and keeps
// the signatures seen, so that a captured request cannot be replayed.
type Incidents interface {
	IncidentForEvent(ctx context.Context, eventID string) (string, error)
	// FirstSeen records a signature until expires and reports whether it
	// was new.
	FirstSeen(ctx context.Context, signature string, expires time.Time) (bool, error)
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
	// seen holds the signatures accepted in the last window, in memory:
	// replays are refused even while PostgreSQL is away.
	seenMu sync.Mutex
	seen   map[string]time.Time
}

// New builds the handler. Tokens are kept as SHA-256 digests so that the
// constant-time comparison does not leak their length.
func New(cfg Config, pub Publisher, incidents Incidents, log *slog.Logger) *Handler {
	h := &Handler{cfg: cfg, pub: pub, incidents: incidents, log: log, now: time.Now, seen: map[string]time.Time{}}
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
	errReplayed        = errors.New("this signed request was seen before: a replay")
)

func (h *Handler) breach(w http.ResponseWriter, r *http.Request) {
	// Who is calling is settled from the headers before a byte of the body
	// is read: an anonymous caller cannot make the intake buffer anything.
	bearer, err := h.preAuthenticate(r)
	if err != nil {
		h.refuse(w, r, http.StatusUnauthorized, err)
		return
	}
	if r.ContentLength > h.cfg.MaxBody {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", h.cfg.MaxBody))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", h.cfg.MaxBody))
		return
	}
	if !bearer {
		if err := h.verify(r, body); err != nil {
			status := http.StatusUnauthorized
			if errors.Is(err, errReplayed) {
				status = http.StatusConflict
			}
			h.refuse(w, r, status, err)
			return
		}
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
	_ = json.NewEncoder(w).Encode(resp) // the breach is stored and the status sent: a client gone meanwhile changes nothing
}

func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, status int, err error) {
	h.log.WarnContext(r.Context(), "breach intake refused", slog.String("reason", err.Error()), slog.String("remote", r.RemoteAddr))
	writeError(w, status, err.Error())
}

// preAuthenticate settles a bearer token, or checks that a signed
// request's headers are there and its timestamp fresh; the signature
// itself needs the body (verify). bearer says the caller is authenticated.
func (h *Handler) preAuthenticate(r *http.Request) (bearer bool, err error) {
	if auth := r.Header.Get("Authorization"); auth != "" {
		token, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok || len(h.tokens) == 0 {
			return false, errBadToken
		}
		sum := sha256.Sum256([]byte(token))
		match := 0
		for _, t := range h.tokens {
			match |= subtle.ConstantTimeCompare(sum[:], t[:])
		}
		if match != 1 {
			return false, errBadToken
		}
		return true, nil
	}
	sig, ts := r.Header.Get(HeaderSignature), r.Header.Get(HeaderTimestamp)
	if sig == "" && ts == "" {
		return false, errUnauthenticated
	}
	if h.cfg.HMACKey == "" || !strings.HasPrefix(sig, signaturePrefix) {
		return false, errBadSignature
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return false, errStale
	}
	if skew := h.now().Sub(time.Unix(secs, 0)); skew > h.cfg.MaxSkew || skew < -h.cfg.MaxSkew {
		return false, errStale
	}
	return false, nil
}

// verify checks a signed request's signature over the whole request, then
// that it was not accepted before (within the window its timestamp allows).
func (h *Handler) verify(r *http.Request, body []byte) error {
	sig, ts := r.Header.Get(HeaderSignature), r.Header.Get(HeaderTimestamp)
	got, err := hex.DecodeString(strings.TrimPrefix(sig, signaturePrefix))
	if err != nil {
		return errBadSignature
	}
	if !hmac.Equal(got, Sign(h.cfg.HMACKey, Canonical(r.Method, r.URL.Path, ts, r.Header, body))) {
		return errBadSignature
	}
	return h.firstSeen(r.Context(), sig, ts)
}

// firstSeen accepts a signature once while its timestamp is in the window:
// in memory (always) and in PostgreSQL (shared by containment processes,
// and surviving a restart). PostgreSQL away, the memory still refuses a
// replay to this process: an intake that answers beats one that waits.
func (h *Handler) firstSeen(ctx context.Context, sig, ts string) error {
	secs, _ := strconv.ParseInt(ts, 10, 64)
	expires := time.Unix(secs, 0).Add(h.cfg.MaxSkew)
	now := h.now()
	h.seenMu.Lock()
	for k, exp := range h.seen {
		if now.After(exp) {
			delete(h.seen, k)
		}
	}
	_, dup := h.seen[sig]
	h.seen[sig] = expires
	h.seenMu.Unlock()
	if dup {
		return errReplayed
	}
	first, err := h.incidents.FirstSeen(ctx, sig, expires)
	if err != nil {
		h.log.WarnContext(ctx, "signature not recorded in PostgreSQL (away?); this process refuses its replays", slog.Any("error", err))
		return nil
	}
	if !first {
		return errReplayed
	}
	return nil
}

// Canonical is what a request's signature covers: the method, the path,
// the timestamp, every ce-* header (lower-cased name ":" value, sorted),
// each on its line, then the body.
func Canonical(method, path, timestamp string, header http.Header, body []byte) []byte {
	var ce []string
	for name, values := range header {
		if lower := strings.ToLower(name); strings.HasPrefix(lower, "ce-") {
			ce = append(ce, lower+":"+strings.Join(values, ","))
		}
	}
	sort.Strings(ce)
	var b bytes.Buffer
	for _, line := range append([]string{method, path, timestamp}, ce...) {
		b.WriteString(line)
		b.WriteByte('\n')
	}
	b.Write(body)
	return b.Bytes()
}

// Sign computes the HMAC-SHA256 of a canonical request.
func Sign(key string, canonical []byte) []byte {
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write(canonical)
	return mac.Sum(nil)
}

// SignRequest signs a request for the intake (clients, tests, lockdown
// trigger): it sets X-Lockdown-Timestamp and X-Lockdown-Signature over the
// request as it is, with its body. Set every ce-* header first.
func SignRequest(key string, req *http.Request, body []byte, now time.Time) {
	ts := strconv.FormatInt(now.Unix(), 10)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, signaturePrefix+hex.EncodeToString(Sign(key, Canonical(req.Method, req.URL.Path, ts, req.Header, body))))
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
	_ = json.NewEncoder(w).Encode(ErrorResponse{Error: msg}) // the status is sent: the body only explains it
}
