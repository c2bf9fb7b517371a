-- ticket attachments: one row per attachment, one per immutable version of its content.
-- content lives encrypted in the object store; these rows say how to find and open it.

create table attachments (
    -- uuid v7 chosen by the server before the upload (it is bound into the encryption)
    attachment_id text primary key,
    ticket_id bigint not null references tickets (ticket_id) on delete cascade,
    -- sanitised by the server: no path separators, no control characters
    filename text not null,
    created_by bigint not null references employees (employee_id),
    created_at text not null,
    -- soft delete: the row stays for the audit trail; objects are removed by retention
    deleted_at text,
    deleted_by bigint references employees (employee_id)
);

create index attachments_ticket on attachments (ticket_id, created_at);

create table attachment_versions (
    attachment_id text not null references attachments (attachment_id) on delete cascade,
    -- the ticket again, so retention can remove a ticket's objects without a join
    ticket_id bigint not null references tickets (ticket_id) on delete cascade,
    -- 1, 2, 3 … per attachment
    version bigint not null,
    -- hex sha-256 of the plaintext: names the version
    content_sha256 text not null,
    size_bytes bigint not null,
    -- sniffed from the content, never taken from the client
    content_type text not null,
    -- object name in the store (ciphertext only)
    object_key text not null unique,
    -- key-encryption key that wraps this version's data key (keys/kek/<kek_id>.key)
    kek_id text not null,
    -- hex: 12-byte nonce || aes-256-gcm(kek, data key) with the version's identity as aad
    wrapped_key text not null,
    -- hex: the 7-byte stream nonce prefix of the content encryption
    nonce_prefix text not null,
    created_by bigint not null references employees (employee_id),
    created_at text not null,
    primary key (attachment_id, version)
);

create index attachment_versions_kek on attachment_versions (kek_id);
create index attachment_versions_ticket on attachment_versions (ticket_id);
