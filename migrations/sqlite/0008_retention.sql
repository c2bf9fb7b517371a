-- data retention: legal holds, resumable retention runs with their archived batches,
-- and the signed anchors where retention cut an emitter's audit hash chain.

-- a hold keeps a ticket (with its comments and history) or everything about a subject
-- (their audit events, sessions and the tickets they reported or are assigned) from
-- retention, until it is released.
create table legal_holds (
    legal_hold_id integer primary key autoincrement,
    -- ticket | subject
    kind text not null check (kind in ('ticket', 'subject')),
    -- the ticket's public id (tck-…), or the subject as audit events name it in
    -- `user.id` (an employee id)
    target text not null,
    reason text not null,
    -- who placed it (os user of the cli)
    created_by text not null,
    created_at text not null,
    -- null while the hold is in force
    released_at text,
    released_by text
);

-- one hold in force per target
create unique index legal_holds_active on legal_holds (kind, target) where released_at is null;

-- one row per `portcullis retention run`; a run that did not finish (crash, ctrl-c) is
-- resumed by the next one with the same clock and archive folder.
create table retention_runs (
    retention_run_id integer primary key autoincrement,
    -- running | done
    status text not null check (status in ('running', 'done')),
    -- the clock the run judges expiry by (fixed for a resumed run)
    as_of text not null,
    -- the folder its archive files and manifest go to
    archive_dir text not null,
    started_at text not null,
    finished_at text,
    -- json object: rows archived and deleted per category, once done
    counts text
);

-- one row per archived and deleted batch, written in the transaction that deletes the
-- batch's rows: a batch is either archived and deleted and listed here, or not at all.
create table retention_batches (
    retention_run_id integer not null references retention_runs (retention_run_id),
    -- 1, 2, 3 … per run
    batch_no integer not null,
    -- audit_events | tickets | sessions
    category text not null,
    -- file name inside the run's archive folder (gzip json lines)
    file_name text not null,
    -- hex sha-256 of the file
    sha256 text not null,
    -- rows archived (tickets count with their comments and history as one line)
    row_count integer not null,
    created_at text not null,
    primary key (retention_run_id, batch_no)
);

-- where retention cut an emitter's audit hash chain: the seq and hash of the last
-- deleted event, signed with the checkpoint key of the emitter that ran retention.
-- `portcullis audit verify --database` starts the chain here.
create table audit_chain_cuts (
    emitter text primary key,
    seq integer not null,
    -- `portcullis.chain.hash` of event `seq`
    hash text not null,
    -- hex ed25519 over "portcullis-audit-cut-v1\n{emitter}\n{seq}\n{hash}"
    signature text not null,
    -- the emitter whose checkpoint key signed the cut (cli, backend)
    signed_by text not null,
    retention_run_id integer not null references retention_runs (retention_run_id),
    cut_at text not null
);
