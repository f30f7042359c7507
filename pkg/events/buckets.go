package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// The read model: what containment projects from its records for every
// reader (the CLI, the console). Readers meet containment only here: they
// need no database access and no knowledge of its tables, and a migration
// of containment's schema cannot break them (the document's schema is
// versioned, pkg/events/readmodel).
const (
	// BucketIncidents is the key-value bucket with one incident document
	// per incident (readmodel.Incident, key: the incident id). Containment
	// writes it after every change of the incident; readers watch it.
	BucketIncidents = "LOCKDOWN_INCIDENTS"
	// BucketReports is the object store with each incident's report
	// (report.Report as JSON, object name: the incident id): the final one
	// once the incident is closed, a draft while it is open. A report of
	// ten thousand tenants is megabytes, too large for a key-value entry.
	BucketReports = "LOCKDOWN_REPORTS"
	// BucketPlans is the key-value bucket where `lockdown plan` keeps its
	// answers (credentials.Plan, key PlanKey; the last ten): the console
	// shows the last one and `lockdown report` fills the per-kind table's
	// not-covered column from it. The operator writes it: a plan is the
	// operator's own reading of Vault, not a service's record.
	BucketPlans = "LOCKDOWN_PLANS"
	// PlanKey is the key of the last plan.
	PlanKey = "latest"
)

// BucketKind says what a bucket is.
type BucketKind string

// Bucket kinds.
const (
	BucketKeyValue BucketKind = "key-value"
	BucketObject   BucketKind = "object store"
)

// BucketSpec declares one JetStream key-value bucket or object store.
type BucketSpec struct {
	Name string
	Kind BucketKind
	// Owner is the only service (or user) that writes it; the operator
	// reads it.
	Owner       string
	Description string
	// Key describes the keys (object names).
	Key string
	// Schema is the JSON Schema file of a value, under docs/schemas.
	Schema string
	// History is how many values per key a key-value bucket keeps.
	History int
	// MaxAge bounds how long values are kept (0: forever).
	MaxAge time.Duration
	// Replicas as for streams: bounded by the cluster's size.
	Replicas int
}

// Buckets declares every key-value bucket and object store.
func Buckets() []BucketSpec {
	return []BucketSpec{
		{Name: BucketIncidents, Kind: BucketKeyValue, Owner: ServiceContainment, Key: "the incident id",
			Schema: "readmodel.incident.v1.json", History: 1, MaxAge: 90 * 24 * time.Hour, Replicas: 3,
			Description: "one document per incident: phases against targets, seals and the unseal gate per node, the rekey ceremony, revocation, rotation and notification progress, failures, stuck reason, trace id; rewritten after every change"},
		{Name: BucketReports, Kind: BucketObject, Owner: ServiceContainment, Key: "the incident id",
			Schema: "report.v1.json", MaxAge: 365 * 24 * time.Hour, Replicas: 3,
			Description: "the post-incident report (JSON): final once the incident is closed, a draft (outcome open) while it runs"},
		{Name: BucketPlans, Kind: BucketKeyValue, Owner: UserOperator, Key: "latest",
			Schema: "plan.v1.json", History: 10, MaxAge: 365 * 24 * time.Hour, Replicas: 3,
			Description: "`lockdown plan`'s answers: what an incident would rotate, destroy and revoke, and every credential no catalogue entry covers (names and counts only); the last ten"},
	}
}

// BucketStream is the JetStream stream behind a bucket (what permissions
// and stream information name).
func (b BucketSpec) BucketStream() string {
	if b.Kind == BucketObject {
		return "OBJ_" + b.Name
	}
	return "KV_" + b.Name
}

// BucketSubjects are the subjects a bucket's writer publishes on.
func (b BucketSpec) BucketSubjects() string {
	if b.Kind == BucketObject {
		return "$O." + b.Name + ".>"
	}
	return "$KV." + b.Name + ".>"
}

// ErrBadIncidentKey is returned by IncidentKey for a string that is not an
// incident id (a key is a subject token: a reader must not be able to name
// a wildcard or another bucket's subject).
var ErrBadIncidentKey = errors.New("not an incident id")

var incidentIDPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// IncidentKey is the key (and object name) of an incident in the buckets.
func IncidentKey(incidentID string) (string, error) {
	if !incidentIDPattern.MatchString(incidentID) {
		return "", fmt.Errorf("%w: %q", ErrBadIncidentKey, incidentID)
	}
	return incidentID, nil
}

// IncidentOf reads the incident id of an event's data ("" for none): every
// event of an incident names it in incident_id.
func IncidentOf(data []byte) string {
	var ref struct {
		IncidentID string `json:"incident_id"`
	}
	if err := json.Unmarshal(data, &ref); err != nil {
		return ""
	}
	return ref.IncidentID
}
