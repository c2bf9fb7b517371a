//! The one `enforce | report_only` switch of the proxy's controls (CSP,
//! rate-limit rules, and the per-route modes of the policy, rate-limit and
//! CSRF guards), and the per-route modes read from the policy bundle's data,
//! so they hot-reload with the bundle.

use std::collections::HashMap;

use portcullis_authz::PolicyBundle;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

/// Whether a control refuses what it finds (`enforce`, the default) or only
/// counts, logs and audits it and lets the request through (`report_only`),
/// for trying a control on real traffic first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Refuse: 429, 403 or 401, or an enforced Content-Security-Policy.
    #[default]
    Enforce,
    /// Count, log and audit, and let the request through (for a CSP:
    /// `Content-Security-Policy-Report-Only`).
    ReportOnly,
}

impl Mode {
    /// The `mode` metric label and audit detail: `enforce`, `report_only`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::ReportOnly => "report_only",
        }
    }

    pub fn enforced(self) -> bool {
        self == Self::Enforce
    }
}

/// The modes of one route.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
pub struct Modes {
    pub policy: Mode,
    pub rate_limit: Mode,
    pub csrf: Mode,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct PartialModes {
    policy: Option<Mode>,
    rate_limit: Option<Mode>,
    csrf: Option<Mode>,
}

/// Per-route modes from `data.config.modes` of the policy bundle.
#[derive(Debug, Clone, Default)]
pub struct RouteModes {
    default: Modes,
    routes: HashMap<String, Modes>,
}

impl RouteModes {
    /// Reads the modes from a bundle; anything malformed means `enforce`.
    pub fn from_bundle(bundle: &PolicyBundle) -> Self {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Doc {
            default: Modes,
            routes: HashMap<String, PartialModes>,
        }
        let doc: Doc = bundle
            .eval_value("data.config.modes", &json!({}))
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        let routes = doc
            .routes
            .into_iter()
            .map(|(name, p)| {
                (
                    name,
                    Modes {
                        policy: p.policy.unwrap_or(doc.default.policy),
                        rate_limit: p.rate_limit.unwrap_or(doc.default.rate_limit),
                        csrf: p.csrf.unwrap_or(doc.default.csrf),
                    },
                )
            })
            .collect();
        Self {
            default: doc.default,
            routes,
        }
    }

    pub fn get(&self, route: &str) -> Modes {
        self.routes.get(route).copied().unwrap_or(self.default)
    }
}
