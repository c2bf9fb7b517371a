-- audit events for the administrators' view (/admin/audit/logs): the backend's own
-- events (written by its audit log's database sink) and the proxy's (shipped to
-- post /internal/audit/ingest). the spool and the siem hold the same events; this
-- table is a delivery target, filled at least once, so duplicates are skipped by
-- event id.
create table audit_events (
    -- insertion order: the tie-breaker of the view's cursor
    audit_event_id bigserial primary key,
    -- `event.id` (uuid v7): an event delivered twice is stored once
    event_id text not null unique,
    -- `portcullis.emitter` (proxy | backend | cli): whose hash chain the event is in
    emitter text not null,
    -- `portcullis.chain.seq`: position in the emitter's chain, from 1
    seq bigint not null,
    -- `@timestamp`: fixed-width rfc 3339 utc with microseconds, so text order is time order
    occurred_at text not null,
    -- auth | user | maintenance | system | api | security
    category text not null,
    -- `event.action`: login, ticket.update, policy.deny, …
    action text not null,
    -- success | failure | unknown
    outcome text not null,
    -- info | warning | error | critical
    level text not null,
    -- `user.id`: employee id, or the user name tried on a failed sign-in
    user_id text,
    -- `portcullis.session.id`
    session_id text,
    -- `http.request.id`: joins the proxy's and the backend's events of one request
    request_id text,
    -- the event's ecs json line exactly as chained (its hash covers it): what the
    -- view shows, the export writes and `portcullis audit verify --database` checks
    line text not null,
    received_at text not null
);

create index audit_events_time on audit_events (occurred_at, audit_event_id);
create index audit_events_user on audit_events (user_id, occurred_at);
create index audit_events_category on audit_events (category, occurred_at);
create index audit_events_action on audit_events (action, occurred_at);
create index audit_events_outcome on audit_events (outcome, occurred_at);
create index audit_events_level on audit_events (level, occurred_at);
create index audit_events_request on audit_events (request_id);
create index audit_events_session on audit_events (session_id);
create index audit_events_emitter on audit_events (emitter, occurred_at);
-- `portcullis audit verify --database` reads each chain in seq order
create index audit_events_chain on audit_events (emitter, seq);
