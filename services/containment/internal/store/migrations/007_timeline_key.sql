-- A timeline entry is keyed by its type and its id, not by its id alone:
-- an event id is chosen by its producer, and every producer may choose
-- one. Keyed by id alone, the operator's credential could publish a review
-- request under the id "<incident>/rotation.completed" and the rotator's
-- real completion would be dropped as its duplicate (the incident then
-- never restored access). The type is bound to the subject the producer
-- owns (the consumer refuses a type on another subject).
ALTER TABLE timeline DROP CONSTRAINT timeline_pkey;
ALTER TABLE timeline ADD PRIMARY KEY (type, event_id);
