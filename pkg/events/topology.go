package events

import "time"

// Stream names.
const (
	// StreamEvents keeps the incident's event history (limits retention): it
	// is the timeline a report is built from.
	StreamEvents = "LOCKDOWN_EVENTS"
	// StreamJobs is the rotation work queue: a job is deleted once acked.
	StreamJobs = "LOCKDOWN_JOBS"
	// StreamDeadLetters keeps every dead letter for inspection and replay.
	StreamDeadLetters = "LOCKDOWN_DLQ"
)

// Retention says how a stream forgets messages.
type Retention string

// Retention policies used by Lockdown's streams.
const (
	RetentionLimits    Retention = "limits"
	RetentionWorkQueue Retention = "workqueue"
)

// StreamSpec declares one JetStream stream.
type StreamSpec struct {
	Name     string
	Subjects []string
	// Retention: limits keeps history; workqueue deletes on ack.
	Retention Retention
	// DuplicateWindow is how long a Nats-Msg-Id is remembered for de-duplication.
	DuplicateWindow time.Duration
	// MaxAge bounds how long messages are kept (0: forever).
	MaxAge time.Duration
	// FileStorage is true for every Lockdown stream: an incident must
	// survive a NATS restart.
	FileStorage bool
	// Replicas is the number of copies wanted in a JetStream cluster; a
	// smaller cluster (one server) gets as many as it has nodes.
	Replicas int
}

// ConsumerSpec declares one durable pull consumer.
type ConsumerSpec struct {
	// Durable is the consumer's name; processes bound to it share its messages.
	Durable string
	Stream  string
	// Events are the events it receives (their subjects become its filter).
	Events []Name
	// Service is the service that runs it.
	Service string
	// AckWait is how long a delivery may stay unacknowledged before redelivery.
	AckWait time.Duration
	// MaxDeliver bounds deliveries; -1 (every Lockdown consumer) is no
	// bound: a transient failure is retried until it succeeds, because an
	// outage must delay work, never fail it. Only a permanent failure ends
	// a message on the dead-letter subject.
	MaxDeliver int
	// MaxAckPending bounds messages in flight across all bound processes.
	MaxAckPending int
	// RetryBase and RetryMax shape the NakWithDelay backoff of transient
	// failures: RetryBase·2^(attempt-1), capped at RetryMax.
	RetryBase time.Duration
	RetryMax  time.Duration
	// PoisonAttempts bounds the failures a message may have with an error
	// that is neither an outage (stream.Unavailable) nor classified
	// permanent: after that many it is dead-lettered as poison, with an
	// alarm, instead of being retried forever. Outages are not counted.
	PoisonAttempts int
}

// PoisonWindow is how many messages of the consumer may be failing
// repeatedly (poison suspects, three failures or more) at once: a quarter
// of its in-flight window, at least one. A further suspect is dead-lettered
// at once, so poison can never fill the window and stall the messages
// behind it.
func (c ConsumerSpec) PoisonWindow() int { return max(1, c.MaxAckPending/4) }

// FilterSubjects are the subjects the consumer receives.
func (c ConsumerSpec) FilterSubjects() []string {
	out := make([]string, len(c.Events))
	for i, n := range c.Events {
		out[i] = n.Subject()
	}
	return out
}

// Backoff is the delay before redelivering after the given failed delivery
// (1 for the first).
func (c ConsumerSpec) Backoff(delivery uint64) time.Duration {
	if delivery < 1 {
		delivery = 1
	}
	d := c.RetryBase
	for i := uint64(1); i < delivery && d < c.RetryMax; i++ {
		d *= 2
	}
	if d > c.RetryMax {
		d = c.RetryMax
	}
	return d
}

// Streams declares every stream, derived from the catalog.
func Streams() []StreamSpec {
	return []StreamSpec{
		{Name: StreamEvents, Subjects: subjectsOf(StreamEvents), Retention: RetentionLimits,
			DuplicateWindow: 24 * time.Hour, MaxAge: 90 * 24 * time.Hour, FileStorage: true, Replicas: 3},
		{Name: StreamJobs, Subjects: subjectsOf(StreamJobs), Retention: RetentionWorkQueue,
			DuplicateWindow: 24 * time.Hour, FileStorage: true, Replicas: 3},
		{Name: StreamDeadLetters, Subjects: subjectsOf(StreamDeadLetters), Retention: RetentionLimits,
			DuplicateWindow: 24 * time.Hour, MaxAge: 365 * 24 * time.Hour, FileStorage: true, Replicas: 3},
	}
}

// Durable consumer names.
const (
	ConsumerContainmentBreach   = "containment-breach"
	ConsumerContainmentRecovery = "containment-recovery"
	ConsumerAssessorBreach      = "assessor-breach"
	ConsumerRotatorPlanner      = "rotator-planner"
	ConsumerRotatorJobs         = "rotator-jobs"
	ConsumerNotifier            = "notifier"
	ConsumerContainmentTimeline = "containment-timeline"
)

// timelineEvents are the events an incident's timeline records: every
// event of the events stream except the breach itself (it precedes the
// incident; containment keeps it as a detection).
func timelineEvents() []Name {
	var out []Name
	for _, s := range catalog {
		// The breach precedes the incident (containment keeps it as a
		// detection); audit records are derived from the timeline.
		if s.Stream == StreamEvents && s.Name != BreachDetected && s.Name != Audit {
			out = append(out, s.Name)
		}
	}
	return out
}

// Consumers declares every durable consumer.
func Consumers() []ConsumerSpec {
	base := func(c ConsumerSpec) ConsumerSpec {
		c.AckWait = 30 * time.Second
		c.MaxDeliver = -1
		c.MaxAckPending = 64
		c.RetryBase = time.Second
		c.RetryMax = time.Minute
		// 16 failures at this backoff span about ten minutes (1+2+…+32 s,
		// then a minute each): long enough for a slow fault that nobody
		// classified as an outage, short enough that poison cannot stall
		// an incident.
		c.PoisonAttempts = 16
		return c
	}
	jobs := base(ConsumerSpec{Durable: ConsumerRotatorJobs, Stream: StreamJobs, Service: ServiceRotator,
		Events: []Name{RotationJob, RotationPlatformJob}})
	// Rotation jobs divide among processes; in-flight work is bounded so a
	// slow Vault is not flooded, and long jobs send InProgress. One process
	// at its default ROTATION_CONCURRENCY (128) fills it; more processes
	// divide it.
	jobs.MaxAckPending = 128
	notifier := base(ConsumerSpec{Durable: ConsumerNotifier, Stream: StreamEvents, Service: ServiceNotifier,
		Events: []Name{RotationPlanned, RotationTenantCompleted, RotationTenantFailed}})
	// A tenant's notice is retried past its deadline (15 minutes by
	// default, then the tenant is recorded late and the plan completes):
	// about 35 minutes of retries before it is given up as poison.
	notifier.PoisonAttempts = 40
	return []ConsumerSpec{
		base(ConsumerSpec{Durable: ConsumerContainmentBreach, Stream: StreamEvents, Service: ServiceContainment,
			Events: []Name{BreachDetected}}),
		base(ConsumerSpec{Durable: ConsumerContainmentRecovery, Stream: StreamEvents, Service: ServiceContainment,
			Events: []Name{VaultUnsealed, RotationCompleted, NotificationsCompleted, IncidentResumeRequested, IncidentAbortRequested, IncidentConfirmRequested,
				IncidentReviewRequested}}),
		base(ConsumerSpec{Durable: ConsumerAssessorBreach, Stream: StreamEvents, Service: ServiceAssessor,
			Events: []Name{IncidentOpened}}),
		base(ConsumerSpec{Durable: ConsumerRotatorPlanner, Stream: StreamEvents, Service: ServiceRotator,
			Events: []Name{AssessmentCompleted, AccessRevoked, UnsealKeysRotated, RotationRetryRequested}}),
		jobs,
		notifier,
		// Containment records every incident event, in stream order, for
		// the post-incident report; the incident engine resolves the
		// incident from what is recorded.
		base(ConsumerSpec{Durable: ConsumerContainmentTimeline, Stream: StreamEvents, Service: ServiceContainment,
			Events: timelineEvents()}),
	}
}

// ConsumerOf returns the declared consumer with the given durable name.
func ConsumerOf(durable string) (ConsumerSpec, bool) {
	for _, c := range Consumers() {
		if c.Durable == durable {
			return c, true
		}
	}
	return ConsumerSpec{}, false
}
