-- every password check looks up the highest bcrypt cost among imported credentials not
-- yet upgraded (to pad its timing, see auth::password::Passwords::verify_padded): this
-- index holds only those rows, so the lookup stays small however many accounts exist.
create index credentials_legacy on credentials (legacy_scheme) where legacy_scheme is not null;
