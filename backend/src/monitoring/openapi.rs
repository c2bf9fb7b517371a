//! The OpenAPI 3.1 document of the API (`GET /api/openapi.json`), generated from the
//! handlers of each resource, with the problem responses every operation can
//! produce, the bearer scheme, the constraints the handlers check on request bodies
//! (lengths, characters, ranges: generated requests are then mostly valid ones) and the
//! links from each response to what can be done next with the resource it names (what
//! a stateful API fuzzer such as schemathesis follows: `scripts/schemathesis.sh`).

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa::openapi::link::{Link, LinkBuilder};
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{Object, Schema};
use utoipa::openapi::{RefOr, ResponseBuilder};

use crate::attachments::handlers as attachments;
use crate::audit_log::api::{AuditLogCount, AuditLogPage};
use crate::directory::{departments, employees};
use crate::http::{ApiError, Problem};
use crate::tickets::handlers as tickets;

pub(super) async fn openapi_json() -> Response {
    match document().and_then(|d| serde_json::to_string(&d)) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => ApiError::Internal(e.to_string()).into_response(),
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Portcullis ticket API", description = "Reached through the Portcullis gateway, which authenticates every request."),
    paths(
        tickets::create_ticket, tickets::list_tickets, tickets::get_ticket, tickets::update_ticket,
        tickets::transition_ticket, tickets::assign_ticket, tickets::approve_ticket,
        tickets::list_comments, tickets::add_comment, tickets::ticket_history,
        attachments::upload, attachments::list_attachments, attachments::download,
        attachments::upload_version, attachments::delete_attachment,
        employees::list_employees, employees::create_employee, employees::get_employee,
        employees::update_employee, employees::delete_employee,
        departments::list_departments, departments::create_department, departments::get_department,
        departments::rename_department, departments::delete_department,
        crate::audit_log::api::list_logs, crate::audit_log::api::count_logs, crate::audit_log::api::export_logs,
        super::health::health, super::errors::errors, super::performance::performance,
    ),
    components(schemas(Problem, AuditLogPage, AuditLogCount)),
    modifiers(&ErrorResponses, &RequestConstraints, &Links),
)]
struct ApiDoc;

/// Adds the problem responses every operation can produce (from the
/// backend or from the gateway in front of it) and the bearer scheme.
struct ErrorResponses;

impl utoipa::Modify for ErrorResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        let problem = |desc: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(desc)
                    .content(
                        portcullis_contract::problem::CONTENT_TYPE,
                        utoipa::openapi::ContentBuilder::new()
                            .schema(Some(utoipa::openapi::Ref::from_schema_name("Problem")))
                            .build(),
                    )
                    .build(),
            )
        };
        let common: &[(&str, &str)] = &[
            ("400", "Malformed request"),
            ("401", "Not authenticated"),
            ("403", "Not allowed"),
            ("404", "Not found or not visible"),
            ("405", "Method not allowed"),
            ("406", "Not acceptable"),
            ("409", "Conflict or invalid workflow transition"),
            ("412", "If-Match does not name the current version"),
            ("413", "Body too large"),
            ("415", "Send application/json"),
            ("422", "Invalid field values"),
            ("428", "If-Match required"),
            ("429", "Rate limited"),
            ("500", "Internal error"),
            ("502", "Backend unavailable"),
            ("503", "Unavailable"),
            ("504", "Backend timeout"),
        ];
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                for (code, desc) in common {
                    op.responses
                        .responses
                        .entry((*code).to_owned())
                        .or_insert_with(|| problem(desc));
                }
                if op
                    .tags
                    .as_ref()
                    .is_some_and(|t| t.iter().any(|t| t != "monitoring"))
                {
                    op.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
                        "bearer",
                        Vec::<String>::new(),
                    )]);
                }
            }
        }
    }
}

// Patterns of what `http::validate::check_text` and the directory's checks accept. A
// control character is Unicode `Cc` (`char::is_control`): U+0000-U+001F, U+007F-U+009F.
/// One line: no control character, not blank.
const ONE_LINE: &str = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$";
/// Several lines (tab, CR and LF allowed), not blank.
const LINES: &str = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$";
/// Several lines (tab, CR and LF allowed), possibly empty.
const LINES_OR_EMPTY: &str = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$";
/// `employees::check_username`.
const USERNAME: &str = r"^[a-z0-9._-]{3,64}$";
/// `employees::check_email`: `local@domain`, the domain with a dot and not starting with
/// one, no white space or control character.
const EMAIL: &str = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^.\s\x00-\x1f\x7f-\x9f][^\s\x00-\x1f\x7f-\x9f]*\.[^\s\x00-\x1f\x7f-\x9f]*$";

/// The property `field` of the component schema `schema`, if it is a plain schema.
fn property<'a>(
    doc: &'a mut utoipa::openapi::OpenApi,
    schema: &str,
    field: &str,
) -> Option<&'a mut Schema> {
    let components = doc.components.as_mut()?;
    let RefOr::T(Schema::Object(object)) = components.schemas.get_mut(schema)? else {
        return None;
    };
    match object.properties.get_mut(field)? {
        RefOr::T(s) => Some(s),
        RefOr::Ref(_) => None,
    }
}

/// The string or integer property `field` of `schema`.
fn scalar<'a>(
    doc: &'a mut utoipa::openapi::OpenApi,
    schema: &str,
    field: &str,
) -> Option<&'a mut Object> {
    match property(doc, schema, field)? {
        Schema::Object(o) => Some(o),
        _ => None,
    }
}

fn text(o: &mut Object, min: Option<usize>, max: usize, pattern: &str) {
    o.min_length = min;
    o.max_length = Some(max);
    o.pattern = Some(pattern.to_owned());
}

/// The request bodies' schemas as the handlers check them (`http::validate`, the
/// directory's `check_*`), so that generated requests are mostly valid ones. The request
/// types live in `model.rs`; what their handlers check is written down here.
struct RequestConstraints;

impl utoipa::Modify for RequestConstraints {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        // Tickets (`tickets::handlers`): title 1-200, description up to 10 000, comment 1-5000.
        for schema in ["NewTicket", "TicketPatch"] {
            if let Some(o) = scalar(doc, schema, "title") {
                text(o, Some(1), 200, ONE_LINE);
            }
            if let Some(o) = scalar(doc, schema, "description") {
                text(o, None, 10_000, LINES_OR_EMPTY);
            }
        }
        if let Some(o) = scalar(doc, "NewComment", "body") {
            text(o, Some(1), 5_000, LINES);
        }
        // Identifiers are positive.
        for (schema, field) in [
            ("NewTicket", "department_id"),
            ("Assignment", "assignee_id"),
            ("NewEmployee", "department_id"),
            ("EmployeePatch", "department_id"),
        ] {
            if let Some(o) = scalar(doc, schema, field) {
                o.minimum = Some(utoipa::Number::Int(1));
            }
        }
        // Employees (`directory::employees`).
        if let Some(o) = scalar(doc, "NewEmployee", "username") {
            o.pattern = Some(USERNAME.to_owned());
        }
        for schema in ["NewEmployee", "EmployeePatch"] {
            if let Some(o) = scalar(doc, schema, "email") {
                text(o, Some(3), 254, EMAIL);
            }
            if let Some(o) = scalar(doc, schema, "display_name") {
                text(o, Some(1), 100, ONE_LINE);
            }
            if let Some(Schema::Array(a)) = property(doc, schema, "roles") {
                a.min_items = Some(1);
            }
        }
        if let Some(o) = scalar(doc, "EmployeePatch", "status") {
            o.enum_values = Some(vec![json!("active"), json!("disabled"), Value::Null]);
        }
        if let Some(o) = scalar(doc, "EmployeePatch", "session_timeout_seconds") {
            o.minimum = Some(utoipa::Number::Int(300));
            o.maximum = Some(utoipa::Number::Int(43_200));
        }
        // Departments (`directory::departments`).
        if let Some(o) = scalar(doc, "NewDepartment", "name") {
            text(o, Some(1), 100, ONE_LINE);
        }
        // The audit log's query (`audit_log::api`): three filters take one of a few
        // values; `/count` and `/export` refuse `limit` and `cursor` (they apply to the
        // list only, `AuditQuery` is shared).
        let audit = [
            ("/admin/audit/logs", true),
            ("/admin/audit/logs/count", false),
            ("/admin/audit/logs/export", false),
        ];
        for (path, paged) in audit {
            let Some(op) = doc.paths.paths.get_mut(path).and_then(|p| p.get.as_mut()) else {
                continue;
            };
            let Some(params) = op.parameters.as_mut() else {
                continue;
            };
            if !paged {
                params.retain(|p| p.name != "limit" && p.name != "cursor");
            }
            for p in params.iter_mut() {
                let values: &[&str] = match p.name.as_str() {
                    "category" => &["auth", "user", "maintenance", "system", "api", "security"],
                    "outcome" => &["success", "failure", "unknown"],
                    "level" => &["info", "warning", "error", "critical"],
                    _ => continue,
                };
                if let Some(RefOr::T(Schema::Object(o))) = p.schema.as_mut() {
                    o.enum_values = Some(values.iter().map(|v| Value::from(*v)).collect());
                }
            }
        }
    }
}

/// A link to `operation_id` with `parameters` (`location.name` = runtime expression) and,
/// if given, a request body.
fn link(operation_id: &str, parameters: &[(&str, &str)], body: Option<Value>) -> Link {
    parameters
        .iter()
        .fold(
            LinkBuilder::new().operation_id(operation_id),
            |b, (name, value)| b.parameter(*name, *value),
        )
        .request_body(body)
        .build()
}

/// What can be done with the ticket that `id` (a runtime expression) names: read it, its
/// comments and history, comment on it; and with `etag` (the response's `ETag`) change
/// it: edit, assign, approve, and take each step of the workflow (open → in_progress →
/// resolved → closed, resolved or closed → reopened → in_progress).
fn ticket_links(id: &str, etag: bool) -> Vec<(String, Link)> {
    let read = [("path.id", id)];
    let mut links = vec![
        ("GetTicket", link("get_ticket", &read, None)),
        ("ListComments", link("list_comments", &read, None)),
        ("AddComment", link("add_comment", &read, None)),
        ("TicketHistory", link("ticket_history", &read, None)),
        ("ListAttachments", link("list_attachments", &read, None)),
    ];
    if etag {
        let change = [
            ("path.id", id),
            ("header.If-Match", "$response.header.ETag"),
        ];
        links.extend([
            ("UpdateTicket", link("update_ticket", &change, None)),
            ("AssignTicket", link("assign_ticket", &change, None)),
            ("ApproveTicket", link("approve_ticket", &change, None)),
            ("TransitionTicket", link("transition_ticket", &change, None)),
        ]);
        for (name, to) in [
            ("StartWork", "in_progress"),
            ("Resolve", "resolved"),
            ("Close", "closed"),
            ("Reopen", "reopened"),
        ] {
            let body = Some(json!({ "to": to }));
            links.push((name, link("transition_ticket", &change, body)));
        }
    }
    links
        .into_iter()
        .map(|(name, l)| (name.to_owned(), l))
        .collect()
}

/// Read, change and delete the employee (`kind` "Employee") or department that `id`
/// names.
fn directory_links(kind: &str, id: &str) -> Vec<(String, Link)> {
    let (get, update, delete) = match kind {
        "Employee" => ("get_employee", "update_employee", "delete_employee"),
        _ => ("get_department", "rename_department", "delete_department"),
    };
    [("Get", get), ("Update", update), ("Delete", delete)]
        .into_iter()
        .map(|(verb, op)| (format!("{verb}{kind}"), link(op, &[("path.id", id)], None)))
        .collect()
}

/// The documented response `status` of `method` `path`.
fn response<'a>(
    doc: &'a mut utoipa::openapi::OpenApi,
    path: &str,
    method: &str,
    status: &str,
) -> Option<&'a mut utoipa::openapi::Response> {
    let item = doc.paths.paths.get_mut(path)?;
    let op: &mut Operation = match method {
        "get" => item.get.as_mut()?,
        "post" => item.post.as_mut()?,
        "put" => item.put.as_mut()?,
        "patch" => item.patch.as_mut()?,
        _ => item.delete.as_mut()?,
    };
    match op.responses.responses.get_mut(status)? {
        RefOr::T(r) => Some(r),
        RefOr::Ref(_) => None,
    }
}

/// OpenAPI links: from each response that names a ticket, employee or department to the
/// operations that read, change, comment on or delete it, with its `ETag` as `If-Match`
/// where a change needs one.
struct Links;

impl utoipa::Modify for Links {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let id = "$response.body#/id";
        let mut table = Vec::new();
        for (path, method, status) in [
            ("/api/tickets", "post", "201"),
            ("/api/tickets/{id}", "get", "200"),
            ("/api/tickets/{id}", "patch", "200"),
            ("/api/tickets/{id}/transitions", "post", "200"),
            ("/api/tickets/{id}/assignment", "put", "200"),
            ("/api/tickets/{id}/approval", "post", "200"),
        ] {
            table.push((path, method, status, ticket_links(id, true)));
        }
        let comment = ticket_links("$request.path.id", false);
        table.push(("/api/tickets/{id}/comments", "post", "201", comment));
        // An uploaded attachment: download it, add a version, delete it.
        let attachment = [("path.id", "$request.path.id"), ("path.aid", id)];
        let mut attachment_links: Vec<(String, Link)> = [
            ("DownloadAttachment", "download"),
            ("UploadVersion", "upload_version"),
            ("DeleteAttachment", "delete_attachment"),
        ]
        .into_iter()
        .map(|(name, op)| (name.to_owned(), link(op, &attachment, None)))
        .collect();
        // The version that exists (a random `?version=` names none).
        let version = [
            ("path.id", "$request.path.id"),
            ("path.aid", id),
            ("query.version", "$response.body#/latest/version"),
        ];
        attachment_links.push((
            "DownloadVersion".to_owned(),
            link("download", &version, None),
        ));
        table.push((
            "/api/tickets/{id}/attachments",
            "post",
            "201",
            attachment_links,
        ));
        // The first department can always be read: a department that employees or
        // tickets refer to cannot be deleted, so the list is never empty.
        let first = link(
            "get_department",
            &[("path.id", "$response.body#/0/id")],
            None,
        );
        let first = vec![("GetDepartment".to_owned(), first)];
        table.push(("/api/departments", "get", "200", first));
        for (kind, collection, item) in [
            ("Employee", "/api/employees", "/api/employees/{id}"),
            ("Department", "/api/departments", "/api/departments/{id}"),
        ] {
            table.push((collection, "post", "201", directory_links(kind, id)));
            table.push((item, "get", "200", directory_links(kind, id)));
            table.push((item, "patch", "200", directory_links(kind, id)));
        }
        for (path, method, status, links) in table {
            if let Some(r) = response(doc, path, method, status) {
                for (name, l) in links {
                    r.links.insert(name, RefOr::T(l));
                }
            }
        }
    }
}

/// The OpenAPI 3.1 document of this API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as served: [`openapi`] with each link's target and body under the names the
/// specification gives (`operationId`, `operationRef`, `requestBody`). utoipa 5 serializes its Link
/// Object's fields in snake case, which OpenAPI tools do not recognise (schemathesis
/// refuses such a link as naming no operation).
pub fn document() -> Result<serde_json::Value, serde_json::Error> {
    let mut doc = serde_json::to_value(openapi())?;
    let operations = doc["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut());
    for operation in operations {
        let links = operation["responses"]
            .as_object_mut()
            .into_iter()
            .flat_map(|responses| responses.values_mut())
            .filter_map(|response| response.get_mut("links"))
            .filter_map(serde_json::Value::as_object_mut)
            .flat_map(|links| links.values_mut())
            .filter_map(serde_json::Value::as_object_mut);
        for link in links {
            for (from, to) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(v) = link.remove(from) {
                    link.insert(to.to_owned(), v);
                }
            }
        }
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::Value;

    fn doc() -> Value {
        super::document().expect("the document serializes")
    }

    #[test]
    fn request_bodies_say_what_the_handlers_check() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        let field = |schema: &str, name: &str| schemas[schema]["properties"][name].clone();
        for (schema, name, min, max) in [
            ("NewTicket", "title", 1, 200),
            ("TicketPatch", "title", 1, 200),
            ("NewComment", "body", 1, 5_000),
            ("NewEmployee", "email", 3, 254),
            ("EmployeePatch", "display_name", 1, 100),
            ("NewDepartment", "name", 1, 100),
        ] {
            let f = field(schema, name);
            assert_eq!(f["minLength"], min, "{schema}.{name}: {f}");
            assert_eq!(f["maxLength"], max, "{schema}.{name}: {f}");
            assert!(f["pattern"].is_string(), "{schema}.{name}: {f}");
        }
        assert_eq!(field("NewTicket", "description")["maxLength"], 10_000);
        assert!(field("NewEmployee", "username")["pattern"].is_string());
        assert_eq!(field("NewEmployee", "roles")["minItems"], 1);
        assert_eq!(field("NewTicket", "department_id")["minimum"], 1);
        assert_eq!(field("Assignment", "assignee_id")["minimum"], 1);
        let timeout = field("EmployeePatch", "session_timeout_seconds");
        assert_eq!(timeout["minimum"], 300);
        assert_eq!(timeout["maximum"], 43_200);
        let status = field("EmployeePatch", "status");
        assert_eq!(
            status["enum"],
            serde_json::json!(["active", "disabled", null])
        );
        // `/count` and `/export` refuse `limit` and `cursor`.
        for path in ["/admin/audit/logs/count", "/admin/audit/logs/export"] {
            let params = doc["paths"][path]["get"]["parameters"]
                .as_array()
                .expect(path);
            assert!(
                params
                    .iter()
                    .all(|p| p["name"] != "limit" && p["name"] != "cursor")
            );
            let category = params.iter().find(|p| p["name"] == "category").expect(path);
            assert!(category["schema"]["enum"].is_array(), "{category}");
        }
    }

    /// The monitoring endpoints' answers are described (schemathesis checks the
    /// responses against them); errors and performance need a bearer token.
    #[test]
    fn monitoring_answers_are_described() {
        let doc = doc();
        let schema = |path: &str| {
            doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
                ["schema"]["$ref"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(schema("/monitoring/health"), "#/components/schemas/Health");
        assert_eq!(schema("/monitoring/errors"), "#/components/schemas/Errors");
        assert_eq!(
            schema("/monitoring/performance"),
            "#/components/schemas/Performance"
        );
        let schemas = &doc["components"]["schemas"];
        for name in [
            "Health",
            "SinkHealth",
            "Errors",
            "ErrorGroup",
            "RoutePerformance",
        ] {
            assert!(schemas[name]["properties"].is_object(), "{name} missing");
        }
        let minutes = doc["paths"]["/monitoring/errors"]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .find(|p| p["name"] == "minutes")
            .cloned()
            .expect("minutes");
        assert_eq!(minutes["schema"]["maximum"], 10080);
        assert!(doc["paths"]["/monitoring/health"]["get"]["security"].is_null());
        assert!(doc["paths"]["/monitoring/errors"]["get"]["security"].is_array());
    }

    /// Every link names an operation of the document and only parameters it has.
    #[test]
    fn links_lead_to_operations_of_the_document() {
        let doc = doc();
        let paths = doc["paths"].as_object().expect("paths");
        let mut operations: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for item in paths.values() {
            for op in item.as_object().expect("path item").values() {
                let Some(id) = op["operationId"].as_str() else {
                    continue;
                };
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                let names = params
                    .iter()
                    .map(|p| {
                        format!(
                            "{}.{}",
                            p["in"].as_str().unwrap_or(""),
                            p["name"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                operations.insert(id.to_owned(), names);
            }
        }
        let mut links = 0;
        for item in paths.values() {
            for op in item.as_object().expect("path item").values() {
                let Some(responses) = op["responses"].as_object() else {
                    continue;
                };
                for response in responses.values() {
                    let Some(map) = response["links"].as_object() else {
                        continue;
                    };
                    for (name, link) in map {
                        let target = link["operationId"].as_str().expect(name);
                        let params = operations.get(target).expect(target);
                        for p in link["parameters"].as_object().expect(name).keys() {
                            assert!(params.contains(p), "{name}: {target} has no {p}");
                        }
                        links += 1;
                    }
                }
            }
        }
        assert_eq!(links, 106);
        let created = &paths["/api/tickets"]["post"]["responses"]["201"]["links"];
        assert_eq!(created["StartWork"]["requestBody"]["to"], "in_progress");
        assert_eq!(
            created["UpdateTicket"]["parameters"]["header.If-Match"],
            "$response.header.ETag"
        );
    }
}
