package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
)

// ErrMalformed is returned when a payload is not a CloudEvent: not JSON, not
// structured or binary mode, or missing a required attribute.
var ErrMalformed = errors.New("events: malformed CloudEvent")

// ErrUnknownType is returned when a CloudEvent's type is not in the catalog.
var ErrUnknownType = errors.New("events: unknown event type")

// ErrInvalidData is returned when an event's data does not decode into its
// struct or fails the struct's validation.
var ErrInvalidData = errors.New("events: invalid event data")

// ErrWrongType is returned when data is decoded into the struct of another
// event type.
var ErrWrongType = errors.New("events: data requested as the wrong type")

// Content types of the two CloudEvents modes.
const (
	ContentTypeStructured = "application/cloudevents+json"
	ContentTypeJSON       = "application/json"
	// binaryHeaderPrefix marks CloudEvents attributes in binary mode.
	binaryHeaderPrefix = "ce-"
)

// envelopeAllowance is what New counts for an event's envelope besides its
// data when it checks MaxEventBytes.
const envelopeAllowance = 4096

// Tracing extension attribute names (CloudEvents distributed tracing).
const (
	ExtTraceParent = "traceparent"
	ExtTraceState  = "tracestate"
)

// New builds a CloudEvent of the given name with a fresh id, the current
// time and data encoded as JSON. The data must be the name's data struct
// (or a pointer to it) and must validate.
func New(name Name, source string, data any) (event.Event, error) {
	spec := SpecOf(name)
	if err := checkDataType(spec, data); err != nil {
		return event.Event{}, err
	}
	data = bounded(data)
	if err := Validate(data); err != nil {
		return event.Event{}, fmt.Errorf("%w: %s: %v", ErrInvalidData, name, err)
	}
	ev := event.New()
	ev.SetID(uuid.NewString())
	ev.SetType(spec.Type())
	ev.SetSource(source)
	ev.SetTime(time.Now().UTC())
	if err := ev.SetData(ContentTypeJSON, data); err != nil {
		return event.Event{}, fmt.Errorf("%w: %s: %v", ErrInvalidData, name, err)
	}
	// The envelope around the data: attributes, tracing extensions and
	// an id the producer may set later (short, but counted generously).
	if size := len(ev.Data()) + envelopeAllowance; size > MaxEventBytes {
		return event.Event{}, fmt.Errorf("%w: %s of about %d bytes, limit %d", ErrTooLarge, name, size, MaxEventBytes)
	}
	return ev, nil
}

func checkDataType(spec Spec, data any) error {
	t := fmt.Sprintf("%T", data)
	want := spec.DataType().String()
	if t != want && t != "*"+want {
		return fmt.Errorf("%w: %s carries %s, not %s", ErrWrongType, spec.Name, want, t)
	}
	return nil
}

// Marshal encodes an event in CloudEvents structured JSON mode, the mode
// Lockdown always publishes in.
func Marshal(ev event.Event) ([]byte, error) {
	if err := ev.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return json.Marshal(ev)
}

// Decode reads a CloudEvent from a message's headers and body. Binary mode
// (ce- headers) and structured JSON mode are both accepted. The event must
// be valid CloudEvents 1.0 and its type must be in the catalog; the errors
// wrap ErrMalformed or ErrUnknownType.
func Decode(headers map[string][]string, body []byte) (event.Event, Spec, error) {
	var ev event.Event
	var err error
	if headerValue(headers, binaryHeaderPrefix+"specversion") != "" {
		ev, err = decodeBinary(headers, body)
	} else {
		ev, err = decodeStructured(body)
	}
	if err != nil {
		return event.Event{}, Spec{}, err
	}
	if err := ev.Validate(); err != nil {
		return event.Event{}, Spec{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	spec, ok := Lookup(ev.Type())
	if !ok {
		return event.Event{}, Spec{}, fmt.Errorf("%w: %q", ErrUnknownType, ev.Type())
	}
	return ev, spec, nil
}

func decodeStructured(body []byte) (event.Event, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return event.Event{}, fmt.Errorf("%w: body is not a JSON object", ErrMalformed)
	}
	var ev event.Event
	if err := json.Unmarshal(body, &ev); err != nil {
		return event.Event{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return ev, nil
}

func decodeBinary(headers map[string][]string, body []byte) (event.Event, error) {
	ev := event.New(headerValue(headers, binaryHeaderPrefix+"specversion"))
	if ev.SpecVersion() != event.CloudEventsVersionV1 {
		return event.Event{}, fmt.Errorf("%w: unsupported specversion %q", ErrMalformed, headerValue(headers, binaryHeaderPrefix+"specversion"))
	}
	for key, values := range headers {
		if len(values) == 0 {
			continue
		}
		lower := strings.ToLower(key)
		if !strings.HasPrefix(lower, binaryHeaderPrefix) {
			continue
		}
		attr, value := strings.TrimPrefix(lower, binaryHeaderPrefix), values[0]
		switch attr {
		case "specversion":
		case "id":
			ev.SetID(value)
		case "type":
			ev.SetType(value)
		case "source":
			ev.SetSource(value)
		case "subject":
			ev.SetSubject(value)
		case "dataschema":
			ev.SetDataSchema(value)
		case "time":
			t, err := time.Parse(time.RFC3339Nano, value)
			if err != nil {
				return event.Event{}, fmt.Errorf("%w: ce-time %q is not RFC 3339", ErrMalformed, value)
			}
			ev.SetTime(t)
		default:
			ev.SetExtension(attr, value)
		}
	}
	ct := headerValue(headers, "content-type")
	if ct == "" {
		ct = ContentTypeJSON
	}
	ev.SetDataContentType(ct)
	// A JSON body must be JSON: an event that cannot be re-encoded would
	// otherwise travel on and fail later, far from its cause.
	if len(body) > 0 && (ev.DataMediaType() == ContentTypeJSON || strings.HasSuffix(ev.DataMediaType(), "+json")) && !json.Valid(body) {
		return event.Event{}, fmt.Errorf("%w: content-type %s but the body is not JSON", ErrMalformed, ct)
	}
	if len(body) > 0 {
		ev.DataEncoded = append([]byte(nil), body...)
	}
	return ev, nil
}

// headerValue finds a header case-insensitively: binary-mode producers write
// ce-id, Ce-Id or CE-ID.
func headerValue(headers map[string][]string, key string) string {
	for k, v := range headers {
		if strings.EqualFold(k, key) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

// defaulter is implemented by data whose optional fields default from the
// envelope (a breach's detected_at defaults to the event time).
type defaulter interface {
	applyDefaults(ev event.Event)
}

func (d *BreachDetectedData) applyDefaults(ev event.Event) {
	if d.DetectedAt.IsZero() {
		d.DetectedAt = ev.Time()
	}
}

// DataAs decodes an event's data into T, applies envelope defaults and
// validates it. T must be the data struct of the event's type. Errors wrap
// ErrWrongType or ErrInvalidData.
func DataAs[T any](ev event.Event) (T, error) {
	var out T
	spec, ok := Lookup(ev.Type())
	if !ok {
		return out, fmt.Errorf("%w: %q", ErrUnknownType, ev.Type())
	}
	if err := checkDataType(spec, out); err != nil {
		return out, err
	}
	if ct := ev.DataMediaType(); ct != "" && ct != ContentTypeJSON && !strings.HasSuffix(ct, "+json") {
		return out, fmt.Errorf("%w: datacontenttype %q is not JSON", ErrInvalidData, ct)
	}
	if len(ev.Data()) == 0 {
		return out, fmt.Errorf("%w: %s has no data", ErrInvalidData, spec.Name)
	}
	if err := json.Unmarshal(ev.Data(), &out); err != nil {
		return out, fmt.Errorf("%w: %s: %v", ErrInvalidData, spec.Name, err)
	}
	if d, ok := any(&out).(defaulter); ok {
		d.applyDefaults(ev)
	}
	// Whatever a producer sent, a consumer holds no more than the
	// contract allows (a forged 200 KB summary is cut, not refused: a
	// breach must still seal).
	Bound(&out)
	if err := Validate(out); err != nil {
		return out, fmt.Errorf("%w: %s: %v", ErrInvalidData, spec.Name, err)
	}
	return out, nil
}
