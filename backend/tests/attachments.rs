//! Ticket attachments end to end against a running backend, on SQLite and on the
//! PostgreSQL at 127.0.0.1:5432: upload, list, download, versions, delete, who may do
//! what, limits, encryption at rest (no plaintext in the store, tampering detected),
//! KEK rotation and retirement, and the S3 store against a real moto server (SQLite
//! only: the database plays no part in where objects go).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::path::{Path, PathBuf};

use portcullis_backend::attachments::rotation;
use portcullis_backend::directory::repo;
use portcullis_backend::model::{NewEmployee, Role};
use portcullis_backend::settings::{AttachmentsSettings, StorageSettings};
use portcullis_backend::{AppState, BackendSettings, IdentityKey};
use portcullis_contract::identity::{IDENTITY_HEADER, Identity, SIGNATURE_HEADER};
use portcullis_testkit::pg::TestDatabase;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[macro_use]
mod support;

use support::Engine;
use support::moto::Moto;

/// A marker that must never appear in clear text in storage.
const MARKER: &str = "PLAINTEXT-MARKER-7f3a9c";

struct Users {
    admin: i64,
    alice: i64,
    bob: i64,
    tom: i64,
    hank: i64,
    hilda: i64,
}

struct App {
    base: String,
    key: IdentityKey,
    client: reqwest::Client,
    state: AppState,
    users: Users,
    sessions: std::collections::HashMap<i64, String>,
    settings: BackendSettings,
    _dir: tempfile::TempDir,
    pg_db: Option<TestDatabase>,
}

impl App {
    async fn start(engine: Engine, tune: impl FnOnce(&Path, &mut AttachmentsSettings)) -> App {
        let dir = tempfile::tempdir().unwrap();
        let (url, pg_db) = support::database(engine, dir.path(), "portcullis_att").await;
        let mut settings = support::settings(dir.path(), url, Default::default());
        tune(dir.path(), &mut settings.attachments);
        let state = portcullis_backend::open(&settings, None, &prometheus::Registry::new())
            .await
            .unwrap();
        let key = IdentityKey::load_or_create(&settings.identity_key_file).unwrap();
        let users = seed(&state).await;
        let mut sessions = std::collections::HashMap::new();
        for id in [
            users.admin,
            users.alice,
            users.bob,
            users.tom,
            users.hank,
            users.hilda,
        ] {
            let sid = format!("test-session-{id}");
            support::live_session(&state, id, &sid).await;
            sessions.insert(id, sid);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let serving = state.clone();
        tokio::spawn(async move {
            portcullis_backend::serve(listener, serving, std::future::pending())
                .await
                .unwrap();
        });
        App {
            base,
            key,
            // No idle connections kept: the tampering test breaks a download off on
            // purpose, and a request must never race the server closing that connection.
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            state,
            users,
            sessions,
            settings,
            _dir: dir,
            pg_db,
        }
    }

    fn req(&self, method: Method, path: &str, as_user: i64) -> reqwest::RequestBuilder {
        let identity = Identity {
            sub: as_user.to_string(),
            session_id: self.sessions.get(&as_user).cloned(),
            auth_method: Some("password".into()),
            decision_id: None,
            iat: time::OffsetDateTime::now_utc().unix_timestamp(),
            issuer: None,
        };
        let (id, sig) = self.key.sign(method.as_str(), path, &identity);
        self.client
            .request(method, format!("{}{path}", self.base))
            .header(IDENTITY_HEADER, id)
            .header(SIGNATURE_HEADER, sig)
    }

    async fn ticket(&self, as_user: i64) -> String {
        let r = self
            .req(Method::POST, "/api/tickets", as_user)
            .json(&json!({"title": "Broken window"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn upload(
        &self,
        as_user: i64,
        ticket: &str,
        name: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let path = format!(
            "/api/tickets/{ticket}/attachments?filename={}",
            utf8_query(name)
        );
        self.req(Method::POST, &path, as_user)
            // Claimed type, ignored by the server.
            .header("content-type", "image/png")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn upload_ok(&self, as_user: i64, ticket: &str, name: &str, body: Vec<u8>) -> Value {
        let r = self.upload(as_user, ticket, name, body).await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
        r.json().await.unwrap()
    }

    async fn download(
        &self,
        as_user: i64,
        ticket: &str,
        aid: &str,
        query: &str,
    ) -> reqwest::Response {
        self.req(
            Method::GET,
            &format!("/api/tickets/{ticket}/attachments/{aid}{query}"),
            as_user,
        )
        .send()
        .await
        .unwrap()
    }

    fn storage_dir(&self) -> PathBuf {
        match &self.settings.attachments.storage {
            StorageSettings::Filesystem { dir } => dir.clone(),
            StorageSettings::S3 { .. } => panic!("not a filesystem store"),
        }
    }

    async fn finish(self) {
        let pg_db = self.pg_db.clone();
        drop(self);
        if let Some(db) = pg_db {
            db.drop().await;
        }
    }
}

fn utf8_query(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn seed(state: &AppState) -> Users {
    let db = &state.db;
    let a = repo::create_department(db, "Facilities").await.unwrap().id;
    let b = repo::create_department(db, "Laboratories")
        .await
        .unwrap()
        .id;
    let mk = |name: &str, dept: Option<i64>, roles: Vec<Role>| NewEmployee {
        username: name.to_owned(),
        email: format!("{name}@example.org"),
        display_name: name.to_owned(),
        department_id: dept,
        roles,
    };
    let mut ids = Vec::new();
    for e in [
        mk("ada", None, vec![Role::Administrator]),
        mk("alice", Some(a), vec![Role::Employee]),
        mk("bob", Some(a), vec![Role::Employee]),
        mk("tom", Some(a), vec![Role::Technician]),
        mk("hank", Some(a), vec![Role::DepartmentHead]),
        mk("hilda", Some(b), vec![Role::DepartmentHead]),
    ] {
        ids.push(repo::create_employee(db, &e, false).await.unwrap().id);
    }
    Users {
        admin: ids[0],
        alice: ids[1],
        bob: ids[2],
        tom: ids[3],
        hank: ids[4],
        hilda: ids[5],
    }
}

/// `n` bytes of text that contain the marker many times.
fn text(n: usize, salt: &str) -> Vec<u8> {
    let line = format!("{MARKER} {salt} line of a maintenance report\n");
    line.as_bytes().iter().copied().cycle().take(n).collect()
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

// ------------------------------------------------------------------ tests

async fn upload_list_download_versions_delete(engine: Engine) {
    let app = App::start(engine, |_, _| {}).await;
    let u = &app.users;
    let t = app.ticket(u.alice).await;
    // Three chunks and a bit: the stream crosses chunk edges.
    let v1 = text(200_000, "v1");
    let r = app
        .upload(u.alice, &t, "../../etc/Report ü.txt", v1.clone())
        .await;
    assert_eq!(
        r.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "a path is refused"
    );
    let a = app
        .upload_ok(u.alice, &t, ".Report ü.txt", v1.clone())
        .await;
    let aid = a["id"].as_str().unwrap().to_owned();
    assert_eq!(a["filename"], "Report ü.txt", "leading dot dropped");
    assert_eq!(a["latest"]["version"], 1);
    assert_eq!(
        a["latest"]["content_type"], "text/plain",
        "sniffed, not the claimed image/png"
    );
    assert_eq!(a["latest"]["size_bytes"], 200_000);
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&v1));
    assert_eq!(a["latest"]["sha256"], sha);

    let r = app.download(u.alice, &t, &aid, "").await;
    assert_eq!(r.status(), StatusCode::OK);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/plain");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(
        h["content-disposition"],
        "attachment; filename=\"Report _.txt\"; filename*=UTF-8''Report%20%C3%BC.txt"
    );
    assert_eq!(h["etag"], format!("\"{sha}\"").as_str());
    assert_eq!(r.bytes().await.unwrap().as_ref(), v1.as_slice());

    // A new version: same attachment, new immutable version named by its hash.
    let v2 = text(70_000, "v2");
    let r = app
        .req(
            Method::POST,
            &format!("/api/tickets/{t}/attachments/{aid}/versions"),
            u.alice,
        )
        .body(v2.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let a2: Value = r.json().await.unwrap();
    assert_eq!(a2["latest"]["version"], 2);
    assert_eq!(a2["versions"].as_array().unwrap().len(), 2);
    // The same content again adds nothing.
    let r = app
        .req(
            Method::POST,
            &format!("/api/tickets/{t}/attachments/{aid}/versions"),
            u.alice,
        )
        .body(v2.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap()["versions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let latest = app
        .download(u.alice, &t, &aid, "")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(latest.as_ref(), v2.as_slice());
    let old = app
        .download(u.alice, &t, &aid, "?version=1")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(old.as_ref(), v1.as_slice());
    assert_eq!(
        app.download(u.alice, &t, &aid, "?version=3").await.status(),
        StatusCode::NOT_FOUND
    );

    // Listing.
    let list: Value = app
        .req(
            Method::GET,
            &format!("/api/tickets/{t}/attachments"),
            u.alice,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], aid.as_str());

    // Nothing in the storage folder is plaintext: no marker, no first bytes of a file.
    let stored = files(&app.storage_dir());
    assert_eq!(stored.len(), 2, "{stored:?}");
    for f in &stored {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !contains(&bytes, MARKER.as_bytes()),
            "{} holds plaintext",
            f.display()
        );
        assert!(!contains(&bytes, &v1[..32]) && !contains(&bytes, &v2[..32]));
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with(&sha) || name.starts_with("v2-"), "{name}");
    }

    // Delete: the objects go, the attachment is gone for everyone.
    let r = app
        .req(
            Method::DELETE,
            &format!("/api/tickets/{t}/attachments/{aid}"),
            u.alice,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(files(&app.storage_dir()).is_empty());
    assert_eq!(
        app.download(u.admin, &t, &aid, "").await.status(),
        StatusCode::NOT_FOUND
    );
    let list: Value = app
        .req(
            Method::GET,
            &format!("/api/tickets/{t}/attachments"),
            u.admin,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list, json!([]));

    // Each change is an audit event (the database sink takes them shortly after).
    let wanted = [
        "attachment.upload",
        "attachment.download",
        "attachment.delete",
    ];
    let mut actions: Vec<String> = Vec::new();
    for _ in 0..100 {
        actions = sqlx::query_scalar("select action from audit_events")
            .fetch_all(app.state.db.pool())
            .await
            .unwrap();
        if wanted.iter().all(|w| actions.iter().any(|a| a == w)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for w in wanted {
        assert!(
            actions.iter().any(|a| a == w),
            "{w} missing from {actions:?}"
        );
    }
    app.finish().await;
}

async fn who_may_do_what(engine: Engine) {
    let app = App::start(engine, |_, _| {}).await;
    let u = &app.users;
    let t = app.ticket(u.alice).await;
    let a = app.upload_ok(u.alice, &t, "a.txt", text(100, "x")).await;
    let aid = a["id"].as_str().unwrap().to_owned();
    let list = |who| {
        app.req(Method::GET, &format!("/api/tickets/{t}/attachments"), who)
            .send()
    };
    // Unrelated employee, a technician not assigned, another department's head: the
    // ticket is not visible, so neither are its attachments.
    for who in [u.bob, u.tom, u.hilda] {
        assert_eq!(list(who).await.unwrap().status(), StatusCode::NOT_FOUND);
        assert_eq!(
            app.download(who, &t, &aid, "").await.status(),
            StatusCode::NOT_FOUND
        );
        let r = app.upload(who, &t, "b.txt", text(10, "y")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = app
            .req(
                Method::DELETE,
                &format!("/api/tickets/{t}/attachments/{aid}"),
                who,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    // The department's head reads and uploads; the reporter may not delete the head's
    // upload, the head may delete the reporter's.
    assert_eq!(list(u.hank).await.unwrap().status(), StatusCode::OK);
    let h = app.upload_ok(u.hank, &t, "h.txt", text(10, "h")).await;
    let hid = h["id"].as_str().unwrap().to_owned();
    let del = |who, id: &str| {
        app.req(
            Method::DELETE,
            &format!("/api/tickets/{t}/attachments/{id}"),
            who,
        )
        .send()
    };
    assert_eq!(
        del(u.alice, &hid).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        del(u.hank, &aid).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        del(u.admin, &hid).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );

    // Bad input: no name, a name of dots, an executable, an empty file, a strange id.
    let r = app
        .req(
            Method::POST,
            &format!("/api/tickets/{t}/attachments"),
            u.alice,
        )
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "no filename");
    assert_eq!(
        app.upload(u.alice, &t, "..", text(5, "z")).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let exe = [b"MZ\x90\x00\x03\x00\x00\x00".as_slice(), &[0u8; 100]].concat();
    let r = app.upload(u.alice, &t, "invoice.pdf", exe).await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["type"], "urn:portcullis:problem:attachment-type");
    assert_eq!(
        app.upload(u.alice, &t, "e.txt", Vec::new()).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        app.download(u.alice, &t, "not-a-uuid", "").await.status(),
        StatusCode::NOT_FOUND
    );
    // A PNG by its bytes is accepted whatever its name.
    let png = [b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".as_slice(), &[7u8; 64]].concat();
    let p = app.upload_ok(u.alice, &t, "photo.bin", png).await;
    assert_eq!(p["latest"]["content_type"], "image/png");
    // Nothing was left behind by the refused uploads.
    assert_eq!(files(&app.storage_dir()).len(), 1);
    app.finish().await;
}

async fn size_limit_is_enforced_while_streaming(engine: Engine) {
    let app = App::start(engine, |_, a| a.max_bytes = 100_000).await;
    let u = &app.users;
    let t = app.ticket(u.alice).await;
    app.upload_ok(u.alice, &t, "ok.txt", text(100_000, "fits"))
        .await;
    // Declared too large: refused before reading.
    let r = app
        .upload(u.alice, &t, "big.txt", text(100_001, "big"))
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Streamed without a length: refused once it passes the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..30).map(|_| Ok(text(10_000, "stream"))).collect();
    let r = app
        .req(
            Method::POST,
            &format!("/api/tickets/{t}/attachments?filename=s.txt"),
            u.alice,
        )
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        files(&app.storage_dir()).len(),
        1,
        "the refused upload left nothing"
    );
    app.finish().await;
}

async fn tampering_is_detected(engine: Engine) {
    let app = App::start(engine, |_, _| {}).await;
    let u = &app.users;
    let t = app.ticket(u.alice).await;
    let small = app
        .upload_ok(u.alice, &t, "s.txt", text(1000, "small"))
        .await;
    let big = app
        .upload_ok(u.alice, &t, "b.txt", text(300_000, "big"))
        .await;
    let other = app
        .upload_ok(u.alice, &t, "o.txt", text(1000, "other"))
        .await;
    let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
    let object = |aid: &str| {
        files(&app.storage_dir())
            .into_iter()
            .find(|p| p.to_string_lossy().contains(aid))
            .unwrap()
    };
    // A flipped byte in a one-chunk object: a clean error, no content.
    let f = object(&id(&small));
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(&f, &bytes).unwrap();
    let r = app.download(u.alice, &t, &id(&small), "").await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["type"], "urn:portcullis:problem:attachment-integrity");

    // A flipped byte in the fourth chunk: the download starts, then breaks off before
    // the bad chunk; the client never gets the whole (or a wrong) body.
    let f = object(&id(&big));
    let mut bytes = std::fs::read(&f).unwrap();
    let at = 3 * (64 * 1024 + 16) + 5;
    bytes[at] ^= 0x80;
    std::fs::write(&f, &bytes).unwrap();
    // Whether the response head left before the bad chunk was reached is up to how the
    // server's writes were buffered: either the exchange fails outright, or a 200 whose
    // body breaks off. Never a complete body.
    let r = app
        .req(
            Method::GET,
            &format!("/api/tickets/{t}/attachments/{}", id(&big)),
            u.alice,
        )
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.bytes().await.is_err(),
            "a broken object must not download completely"
        );
    }

    // A swapped wrapped key: the other attachment's key does not open this one.
    let db = app.state.db.pool();
    let wrapped: String =
        sqlx::query_scalar("select wrapped_key from attachment_versions where attachment_id = $1")
            .bind(id(&other))
            .fetch_one(db)
            .await
            .unwrap();
    let fresh = app
        .upload_ok(u.alice, &t, "f.txt", text(500, "fresh"))
        .await;
    sqlx::query("update attachment_versions set wrapped_key = $1 where attachment_id = $2")
        .bind(&wrapped)
        .bind(id(&fresh))
        .execute(db)
        .await
        .unwrap();
    let r = app.download(u.alice, &t, &id(&fresh), "").await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    // The untouched one still opens.
    let r = app.download(u.alice, &t, &id(&other), "").await;
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        text(1000, "other").as_slice()
    );
    app.finish().await;
}

async fn kek_rotation_resumes_and_retirement_waits(engine: Engine) {
    let app = App::start(engine, |_, _| {}).await;
    let u = &app.users;
    let t = app.ticket(u.alice).await;
    let mut uploaded = Vec::new();
    for i in 0..3 {
        let body = text(90_000 + i, &format!("rot{i}"));
        let a = app
            .upload_ok(u.alice, &t, &format!("r{i}.txt"), body.clone())
            .await;
        uploaded.push((a["id"].as_str().unwrap().to_owned(), body));
    }
    let before: Vec<(PathBuf, Vec<u8>)> = files(&app.storage_dir())
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    let att = &app.state.attachments;
    let db = &app.state.db;
    let old = att.keks.current_id().unwrap();
    let new = att.keks.create().unwrap();
    att.keks.set_current(&new).unwrap();

    // Dry run: counts, changes nothing.
    let dry = rotation::rewrap_all(db, att, None, true, |_| {})
        .await
        .unwrap();
    assert_eq!((dry.rewrapped, dry.remaining), (0, 3));
    // Interrupted after one object…
    let first = rotation::rewrap_all(db, att, Some(1), false, |_| {})
        .await
        .unwrap();
    assert_eq!((first.rewrapped, first.remaining), (1, 2));
    // …the old key cannot be retired while two objects use it…
    let refused = rotation::retire(db, &att.keks, &old).await.unwrap_err();
    assert!(
        matches!(refused, rotation::RotationError::InUse { count: 2, .. }),
        "{refused}"
    );
    // …every object downloads in the middle of the rotation…
    for (aid, body) in &uploaded {
        let got = app
            .download(u.alice, &t, aid, "")
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(got.as_ref(), body.as_slice());
    }
    // …and a rerun finishes the rest.
    let mut seen = Vec::new();
    let rest = rotation::rewrap_all(db, att, None, false, |n| seen.push(n))
        .await
        .unwrap();
    assert_eq!((rest.rewrapped, rest.remaining), (2, 0));
    assert_eq!(seen, vec![1, 2]);
    let again = rotation::rewrap_all(db, att, None, false, |_| {})
        .await
        .unwrap();
    assert_eq!((again.rewrapped, again.remaining), (0, 0), "idempotent");
    // Content was not re-encrypted: the stored objects are byte for byte the same.
    for (p, b) in &before {
        assert_eq!(&std::fs::read(p).unwrap(), b, "{}", p.display());
    }
    // The current key is never retired; the old one now is.
    assert!(matches!(
        rotation::retire(db, &att.keks, &new).await,
        Err(rotation::RotationError::Current(_))
    ));
    rotation::retire(db, &att.keks, &old).await.unwrap();
    assert!(!att.settings.kek_dir.join(format!("{old}.key")).exists());
    for (aid, body) in &uploaded {
        let got = app
            .download(u.alice, &t, aid, "")
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(got.as_ref(), body.as_slice());
    }
    app.finish().await;
}

/// The S3 store against a real S3 server process: uploads land there as ciphertext
/// only, download back intact, and a changed object is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_holds_only_ciphertext() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let bucket = "portcullis-attachments";
    moto.create_bucket(bucket).await;
    let endpoint = moto.endpoint.clone();
    let app = App::start(Engine::Sqlite, |dir, a| {
        let creds = Moto::credentials_file(dir);
        a.storage = StorageSettings::S3 {
            endpoint,
            bucket: bucket.to_owned(),
            region: "us-east-1".into(),
            credentials_file: creds,
            prefix: Some("tenant-a".into()),
        };
    })
    .await;
    let u = &app.users;
    let t = app.ticket(u.alice).await;
    // Large enough for more than one multipart part? 9 MiB: two parts of the store's
    // buffered writer.
    let big = text(9 * 1024 * 1024, "s3-big");
    let small = text(3000, "s3-small");
    let a = app.upload_ok(u.alice, &t, "big.txt", big.clone()).await;
    let b = app.upload_ok(u.alice, &t, "small.txt", small.clone()).await;
    let aid = a["id"].as_str().unwrap().to_owned();
    let bid = b["id"].as_str().unwrap().to_owned();
    let got = app
        .download(u.alice, &t, &aid, "")
        .await
        .bytes()
        .await
        .unwrap();
    assert!(
        got.as_ref() == big.as_slice(),
        "big attachment differs after S3 round trip"
    );
    let got = app
        .download(u.alice, &t, &bid, "")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), small.as_slice());

    let objects = moto.objects(bucket).await;
    assert_eq!(
        objects.len(),
        2,
        "{:?}",
        objects.iter().map(|o| &o.0).collect::<Vec<_>>()
    );
    for (key, bytes) in &objects {
        assert!(key.starts_with("tenant-a/attachments/"), "{key}");
        assert!(bytes.len() > 3000, "{key}: {} bytes", bytes.len());
        assert!(!contains(bytes, MARKER.as_bytes()), "{key} holds plaintext");
    }
    // Nothing was written to the local folder.
    assert!(!app._dir.path().join("attachments").exists());

    // An object changed in the bucket is refused, not served.
    let (key, bytes) = objects.iter().find(|(k, _)| k.contains(&bid)).unwrap();
    let mut bad = bytes.clone();
    bad[100] ^= 1;
    {
        use object_store::ObjectStoreExt;
        moto.bucket(bucket)
            .put(&object_store::path::Path::from(key.as_str()), bad.into())
            .await
            .unwrap();
    }
    let r = app.download(u.alice, &t, &bid, "").await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);

    // Deleting removes the objects from the bucket.
    let r = app
        .req(
            Method::DELETE,
            &format!("/api/tickets/{t}/attachments/{aid}"),
            u.alice,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(moto.objects(bucket).await.len(), 1);
    app.finish().await;
}

on_both_engines!(
    upload_list_download_versions_delete,
    who_may_do_what,
    size_limit_is_enforced_while_streaming,
    tampering_is_detected,
    kek_rotation_resumes_and_retirement_waits,
);
