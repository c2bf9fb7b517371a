//! The OpenAPI 3.1 document of the API (`GET /api/openapi.json`), generated from the
//! handlers of each resource, with the problem responses every operation can
//! produce and the bearer scheme.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa::openapi::{RefOr, ResponseBuilder};

use crate::audit_log::api::{AuditLogCount, AuditLogPage};
use crate::directory::{departments, employees};
use crate::http::{ApiError, Problem};
use crate::tickets::handlers as tickets;

pub(super) async fn openapi_json() -> Response {
    match serde_json::to_string(&openapi()) {
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
        employees::list_employees, employees::create_employee, employees::get_employee,
        employees::update_employee, employees::delete_employee,
        departments::list_departments, departments::create_department, departments::get_department,
        departments::rename_department, departments::delete_department,
        crate::audit_log::api::list_logs, crate::audit_log::api::count_logs, crate::audit_log::api::export_logs,
        super::health::health,
    ),
    components(schemas(Problem, AuditLogPage, AuditLogCount)),
    modifiers(&ErrorResponses),
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

/// The OpenAPI 3.1 document of this API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
