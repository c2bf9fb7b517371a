// Test cases for rust-request-unwrap.yaml (`semgrep --test .semgrep`). Not compiled.
// (Path filters do not apply in test mode.)

async fn request_filter(session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
    // ruleid: portcullis.rust.unwrap-on-request-data, portcullis.rust.unwrap-on-request-data-flow
    let host = session.req_header().headers.get("host").unwrap();
    // ruleid: portcullis.rust.unwrap-on-request-data, portcullis.rust.unwrap-on-request-data-flow
    let ua = session.req_header().headers.get("user-agent").unwrap().to_str().expect("ascii");
    // ruleid: portcullis.rust.unwrap-on-request-data
    let v: Value = serde_json::from_slice(&body).unwrap();
    let req = session.req_header();
    let cookie = req.headers.get("cookie");
    // ruleid: portcullis.rust.unwrap-on-request-data-flow
    let c = cookie.unwrap();
    // ok: portcullis.rust.unwrap-on-request-data, portcullis.rust.unwrap-on-request-data-flow
    let host = session.req_header().headers.get("host").and_then(|v| v.to_str().ok());
    // ok: portcullis.rust.unwrap-on-request-data
    let n = settings.limits.unwrap_or(10);
}

fn if_match(headers: &HeaderMap) -> Result<i64, ApiError> {
    // ruleid: portcullis.rust.unwrap-on-request-data, portcullis.rust.unwrap-on-request-data-flow
    let v = headers.get("if-match").unwrap();
    // ruleid: portcullis.rust.unwrap-on-request-data, portcullis.rust.unwrap-on-request-data-flow
    let n: i64 = v.to_str().unwrap().parse().unwrap();
    Ok(n)
}

#[cfg(test)]
mod tests {
    fn t() {
        // ok: portcullis.rust.unwrap-on-request-data, portcullis.rust.unwrap-on-request-data-flow
        let h = resp.headers.get("x").unwrap().to_str().unwrap();
    }
}
