-- credentials, sessions, refresh tokens, revocations, mfa and login throttling.

-- per-user session timeout; null means the configured default
alter table employees add column session_timeout_seconds bigint;

create table credentials (
    employee_id bigint primary key references employees (employee_id) on delete cascade,
    -- argon2id phc string. for imported legacy hashes this is argon2id over the
    -- legacy hash ("wrapped"), see legacy_scheme; upgraded at the next login.
    password_hash text not null,
    -- null for a plain argon2id hash; otherwise the legacy scheme (bcrypt, sha256)
    legacy_scheme text,
    -- the legacy scheme's public parameters (e.g. bcrypt cost and salt), never a hash
    legacy_params text,
    -- 1 when the password is a one-time password that must be replaced at sign-in
    must_change bigint not null default 0 check (must_change in (0, 1)),
    changed_at text not null
);

create table sessions (
    -- random 128-bit id, base64url; the jwt `sid`
    session_id text primary key,
    employee_id bigint not null references employees (employee_id) on delete cascade,
    -- password | oidc | backup_code
    auth_method text not null,
    -- 1 when a second factor was used
    mfa bigint not null default 0 check (mfa in (0, 1)),
    -- oidc provider name and its session id (for back-channel logout)
    oidc_provider text,
    oidc_sid text,
    created_at text not null,
    -- sliding expiry, pushed forward by refresh; never beyond absolute_expires_at
    expires_at text not null,
    absolute_expires_at text not null,
    revoked_at text,
    revoked_reason text,
    source_ip text,
    user_agent text
);

create index sessions_employee on sessions (employee_id, created_at);
create index sessions_oidc on sessions (oidc_provider, oidc_sid);

-- every revocation gets a sequence number: the proxy polls "revoked since n"
create table session_revocations (
    revocation_id bigserial primary key,
    session_id text not null,
    revoked_at text not null
);

create table refresh_tokens (
    -- hex sha-256 of the opaque token; the token itself is never stored
    token_hash text primary key,
    session_id text not null references sessions (session_id) on delete cascade,
    created_at text not null,
    -- set when the token is exchanged; a second use ends the session family
    used_at text
);

create index refresh_tokens_session on refresh_tokens (session_id);

create table mfa_totp (
    employee_id bigint primary key references employees (employee_id) on delete cascade,
    -- base32 secret; only readable by the backend
    secret text not null,
    -- null until the enrolment is confirmed with a valid code
    confirmed_at text,
    -- last accepted time step: a code of this step or older is a replay
    last_step bigint not null default 0
);

create table mfa_backup_codes (
    backup_code_id bigserial primary key,
    employee_id bigint not null references employees (employee_id) on delete cascade,
    -- argon2id of the code
    code_hash text not null,
    used_at text
);

create index mfa_backup_codes_employee on mfa_backup_codes (employee_id);

-- failed sign-ins per key ("account:<name>" or "ip:<addr>") within a window
create table login_failures (
    throttle_key text primary key,
    failures bigint not null,
    window_started_at text not null,
    locked_until text
);
