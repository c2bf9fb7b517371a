// Test cases for rust-sql.yaml (`semgrep --test .semgrep`). Not compiled.

pub async fn by_username(db: &Db, username: &str) -> Result<Employee, RepoError> {
    // ruleid: portcullis.rust.sql-format-quoted-value
    let sql = format!("select {EMPLOYEE_COLUMNS} from employees where username = '{username}'");
    // ruleid: portcullis.rust.sql-format-quoted-value, portcullis.rust.sql-format-string-argument
    let sql = format!("select * from employees where username = '{}'", username);
    // ruleid: portcullis.rust.sql-format-quoted-value
    let row = sqlx::query(dynamic_sql!("delete from sessions where session_id = '{username}'"));
    // ruleid: portcullis.rust.sql-format-quoted-value
    clauses.push(format!("name like '%{q}%'"));
    // ruleid: portcullis.rust.sql-format-inline-value
    let sql = format!("select * from tickets where reporter_id = {id} order by ticket_id");
    // ruleid: portcullis.rust.sql-format-inline-value
    let sql = format!("select * from tickets limit {limit}");
    // ruleid: portcullis.rust.sql-format-string-argument
    let sql = format!("select * from employees where email = {}", username);
    // ok: portcullis.rust.sql-format-string-argument
    let sql = format!("select * from employees where email = {}", p.text(username));
    // ok: portcullis.rust.sql-format-quoted-value, portcullis.rust.sql-format-inline-value
    let sql = format!("select {EMPLOYEE_COLUMNS} from employees where employee_id = $1");
    // ok: portcullis.rust.sql-format-inline-value
    let sql = format!("select {TICKET_COLUMNS} from tickets {filter_sql} order by ticket_id limit {}", p.int(limit + 1));
    // ok: portcullis.rust.sql-format-inline-value
    clauses.push(format!("(occurred_at {cmp} {at} or (occurred_at = {at} and audit_event_id {cmp} {id}))"));
    // ok: portcullis.rust.sql-format-quoted-value
    let msg = format!("unknown user '{username}'");
    // ok: portcullis.rust.sql-format-string-argument
    let msg = format!("{username} already exists");
    // ok: portcullis.rust.sql-format-quoted-value
    let sql = format!("insert into tickets (status) values ('open') returning {TICKET_COLUMNS}");
}
