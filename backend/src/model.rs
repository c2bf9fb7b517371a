//! Domain types: roles, ticket states and their workflow, and the JSON
//! shapes of the API (with their OpenAPI schemas).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The five roles of the ticket system.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Employee,
    Technician,
    DepartmentHead,
    Administrator,
    Developer,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Employee,
        Role::Technician,
        Role::DepartmentHead,
        Role::Administrator,
        Role::Developer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Employee => "employee",
            Role::Technician => "technician",
            Role::DepartmentHead => "department_head",
            Role::Administrator => "administrator",
            Role::Developer => "developer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Ticket workflow states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatus {
    Open,
    InProgress,
    Resolved,
    Closed,
    Reopened,
}

impl TicketStatus {
    pub const ALL: [TicketStatus; 5] = [
        TicketStatus::Open,
        TicketStatus::InProgress,
        TicketStatus::Resolved,
        TicketStatus::Closed,
        TicketStatus::Reopened,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TicketStatus::Open => "open",
            TicketStatus::InProgress => "in_progress",
            TicketStatus::Resolved => "resolved",
            TicketStatus::Closed => "closed",
            TicketStatus::Reopened => "reopened",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The workflow: open → in_progress → resolved → closed, with resolved
    /// or closed → reopened → in_progress.
    pub fn can_become(self, to: TicketStatus) -> bool {
        use TicketStatus::*;
        matches!(
            (self, to),
            (Open, InProgress)
                | (InProgress, Resolved)
                | (Resolved, Closed)
                | (Resolved, Reopened)
                | (Closed, Reopened)
                | (Reopened, InProgress)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    Medium,
    High,
    Critical,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            Priority::Low,
            Priority::Medium,
            Priority::High,
            Priority::Critical,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// A ticket as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Ticket {
    /// `TCK-<year>-<6 digits>`, assigned by the server.
    #[schema(example = "TCK-2026-000001")]
    pub id: String,
    pub title: String,
    pub description: String,
    pub status: TicketStatus,
    pub priority: Priority,
    pub department_id: i64,
    pub reporter_id: i64,
    pub assignee_id: Option<i64>,
    pub approved_by: Option<i64>,
    pub approved_at: Option<String>,
    /// Bumped by every change; the `ETag` is `"<version>"`.
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// `POST /api/tickets`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTicket {
    /// 1 to 200 characters.
    pub title: String,
    /// Up to 10 000 characters.
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_priority")]
    pub priority: Priority,
    /// Default: the reporter's department.
    pub department_id: Option<i64>,
}

fn default_priority() -> Priority {
    Priority::Medium
}

/// `PATCH /api/tickets/{id}`: the fields to change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketPatch {
    pub title: Option<String>,
    pub description: Option<String>,
    pub priority: Option<Priority>,
}

/// `POST /api/tickets/{id}/transitions`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    pub to: TicketStatus,
}

/// `PUT /api/tickets/{id}/assignment`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    /// An active employee with the technician role.
    pub assignee_id: i64,
}

/// A page of tickets.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TicketPage {
    pub items: Vec<Ticket>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Comment {
    pub id: i64,
    pub ticket_id: String,
    pub author_id: i64,
    pub body: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewComment {
    /// 1 to 5 000 characters.
    pub body: String,
}

/// One entry of a ticket's hash-chained history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HistoryEntry {
    pub sequence: i64,
    pub action: String,
    pub actor_id: i64,
    /// The ticket after the change, as canonical JSON.
    pub snapshot: String,
    pub prev_hash: String,
    /// Hex SHA-256 of `prev_hash` followed by `snapshot`.
    pub hash: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Employee {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub display_name: String,
    pub department_id: Option<i64>,
    pub roles: Vec<Role>,
    /// `active` or `disabled`.
    pub status: String,
    pub is_oidc: bool,
    /// Idle timeout of this employee's sessions; `null`: the configured default.
    pub session_timeout_seconds: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEmployee {
    /// 3 to 64 of `a-z 0-9 . _ -`.
    pub username: String,
    pub email: String,
    pub display_name: String,
    pub department_id: Option<i64>,
    pub roles: Vec<Role>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmployeePatch {
    pub email: Option<String>,
    pub display_name: Option<String>,
    /// `null` removes the department.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub department_id: Option<Option<i64>>,
    pub roles: Option<Vec<Role>>,
    /// `active` or `disabled`.
    pub status: Option<String>,
    /// Idle timeout of this employee's sessions, 300 to 43200 seconds, from
    /// their next sign-in or refresh; `null` returns to the configured default.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub session_timeout_seconds: Option<Option<i64>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Department {
    pub id: i64,
    pub name: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDepartment {
    /// 1 to 100 characters, unique.
    pub name: String,
}

/// Distinguishes an absent field from an explicit `null`.
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        T: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_allows_only_listed_transitions() {
        use TicketStatus::*;
        let allowed = [
            (Open, InProgress),
            (InProgress, Resolved),
            (Resolved, Closed),
            (Resolved, Reopened),
            (Closed, Reopened),
            (Reopened, InProgress),
        ];
        for from in TicketStatus::ALL {
            for to in TicketStatus::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
    }
}
