-- The trace the breach event started (W3C traceparent, no secret): every
-- later step of the incident continues it, so one incident is one trace.
ALTER TABLE incidents ADD COLUMN trace_parent text NOT NULL DEFAULT '';
