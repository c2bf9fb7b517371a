-- tickets, comments and the hash-chained history.

-- one row per year; ticket numbers come from an upsert on this row, which both
-- engines serialise, so concurrent creations never share a number.
create table ticket_counters (
    year integer primary key,
    last_value integer not null
);

create table tickets (
    ticket_id integer primary key autoincrement,
    -- tck-<year>-<6 digits>, assigned by the server, never by the client
    public_id text not null unique,
    title text not null,
    description text not null,
    status text not null check (status in ('open', 'in_progress', 'resolved', 'closed', 'reopened')),
    priority text not null check (priority in ('low', 'medium', 'high', 'critical')),
    department_id integer not null references departments (department_id),
    reporter_id integer not null references employees (employee_id),
    assignee_id integer references employees (employee_id),
    approved_by integer references employees (employee_id),
    approved_at text,
    -- optimistic concurrency: bumped by every change, exposed as the etag
    version integer not null,
    created_at text not null,
    updated_at text not null
);

create index tickets_status on tickets (status, ticket_id);
create index tickets_department on tickets (department_id, ticket_id);
create index tickets_reporter on tickets (reporter_id, ticket_id);
create index tickets_assignee on tickets (assignee_id, ticket_id);

create table ticket_comments (
    comment_id integer primary key autoincrement,
    ticket_id integer not null references tickets (ticket_id),
    author_id integer not null references employees (employee_id),
    body text not null,
    created_at text not null
);

create index ticket_comments_ticket on ticket_comments (ticket_id, comment_id);

create table ticket_history (
    history_id integer primary key autoincrement,
    ticket_id integer not null references tickets (ticket_id),
    -- 1, 2, 3 … per ticket
    sequence integer not null,
    action text not null,
    actor_id integer not null references employees (employee_id),
    -- canonical json of the ticket after the change
    snapshot text not null,
    -- hash of the previous row of the same ticket (64 zeros for the first)
    prev_hash text not null,
    -- hex sha-256 of prev_hash || snapshot
    hash text not null,
    created_at text not null,
    unique (ticket_id, sequence)
);
