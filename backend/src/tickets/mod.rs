//! Tickets: the endpoints under `/api/tickets` ([`router`]), their object-level
//! authorization (the `data.portcullis.tickets.*` rules) and their SQL ([`repo`]):
//! tickets, comments and the hash-chained history.

pub(crate) mod handlers;
mod policy;
pub mod repo;

use axum::Router;
use axum::routing::{get, post, put};

use self::handlers::{
    add_comment, approve_ticket, assign_ticket, create_ticket, get_ticket, list_comments,
    list_tickets, ticket_history, transition_ticket, update_ticket,
};
use crate::AppState;

/// Routes of the ticket API.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/tickets", post(create_ticket).get(list_tickets))
        .route("/api/tickets/{id}", get(get_ticket).patch(update_ticket))
        .route("/api/tickets/{id}/transitions", post(transition_ticket))
        .route("/api/tickets/{id}/assignment", put(assign_ticket))
        .route("/api/tickets/{id}/approval", post(approve_ticket))
        .route(
            "/api/tickets/{id}/comments",
            get(list_comments).post(add_comment),
        )
        .route("/api/tickets/{id}/history", get(ticket_history))
}
