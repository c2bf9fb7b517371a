-- oidc single sign-on: pending sign-ins, linked provider accounts, and the
-- single-use values (id token nonces, back-channel logout token ids).

-- a sign-in between the redirect to the provider and its callback: single use,
-- valid for 10 minutes
create table oidc_logins (
    -- hex sha-256 of the `state` parameter (the state itself travels in urls)
    state_hash text primary key,
    -- hex sha-256 of the __Host-portcullis-oidc cookie that binds the sign-in to
    -- one browser. the pkce code verifier is derived from that cookie and never stored
    browser_hash text not null,
    -- configured provider name
    provider text not null,
    -- hex sha-256 of the nonce sent to the provider
    nonce_hash text not null,
    -- local path (never a url) the browser returns to after signing in
    return_to text not null,
    created_at text not null,
    expires_at text not null,
    -- set by the callback that consumes it; a second callback is refused
    used_at text
);

create index oidc_logins_expires on oidc_logins (expires_at);

-- the provider account (`iss` via the provider name, `sub`) an employee signs in with
create table oidc_identities (
    provider text not null,
    -- the provider's `sub` claim
    subject text not null,
    employee_id integer not null references employees (employee_id) on delete cascade,
    created_at text not null,
    last_login_at text not null,
    primary key (provider, subject)
);

create index oidc_identities_employee on oidc_identities (employee_id);

-- values a provider token may carry only once, kept until the token would have expired
create table oidc_replay (
    provider text not null,
    -- nonce (id tokens) | jti (back-channel logout tokens)
    kind text not null check (kind in ('nonce', 'jti')),
    -- hex sha-256 of the value
    value_hash text not null,
    expires_at text not null,
    primary key (provider, kind, value_hash)
);

create index oidc_replay_expires on oidc_replay (expires_at);
