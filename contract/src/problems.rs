//! The one collector of configuration problems: every section validator (proxy,
//! backend, audit, shared)
//! pushes `path: message` entries here, so one run reports every mistake with
//! its path (`proxy.routes[2].csp.policy: …`) instead of stopping at the first.

use std::fmt;

/// One configuration mistake: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigProblem {
    /// Path of the offending field (`rules[2].burst_requests`), relative to
    /// whoever validated it; [`Problems::extend_under`] prefixes it.
    pub path: String,
    /// What is wrong, never quoting a secret.
    pub message: String,
}

/// Every problem found during one validation, in the order found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(Vec<ConfigProblem>);

impl Problems {
    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl AsRef<str>, message: impl fmt::Display) {
        self.0.push(ConfigProblem {
            path: path.as_ref().to_owned(),
            message: message.to_string(),
        });
    }

    /// Takes over `other`'s problems, their paths prefixed with `prefix.`.
    pub fn extend_under(&mut self, prefix: &str, other: Problems) {
        for ConfigProblem { path, message } in other.0 {
            self.0.push(ConfigProblem {
                path: format!("{prefix}.{path}"),
                message,
            });
        }
    }

    /// Takes over `other`'s problems as they are.
    pub fn append(&mut self, other: Problems) {
        self.0.extend(other.0);
    }

    /// Whether any problem is at `path` or below it.
    pub fn any_under(&self, path: &str) -> bool {
        self.0.iter().any(|p| {
            p.path == path
                || p.path
                    .strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
    }

    /// Takes over lines already formatted as `path: message` (from validators
    /// outside this crate); a line without `: ` is kept whole as the message.
    pub fn extend_lines(&mut self, lines: impl IntoIterator<Item = String>) {
        for line in lines {
            let problem = match line.split_once(": ") {
                Some((path, message)) => ConfigProblem {
                    path: path.to_owned(),
                    message: message.to_owned(),
                },
                None => ConfigProblem {
                    path: String::new(),
                    message: line,
                },
            };
            self.0.push(problem);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `Ok(value)` when nothing was found, else every problem.
    pub fn into_result<T>(self, value: impl FnOnce() -> T) -> Result<T, Problems> {
        if self.is_empty() {
            Ok(value())
        } else {
            Err(self)
        }
    }

    /// Each problem as a `path: message` line.
    pub fn into_lines(self) -> Vec<String> {
        self.0
            .into_iter()
            .map(|p| {
                if p.path.is_empty() {
                    p.message
                } else {
                    p.to_string()
                }
            })
            .collect()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            if problem.path.is_empty() {
                f.write_str(&problem.message)?;
            } else {
                write!(f, "{problem}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl IntoIterator for Problems {
    type Item = ConfigProblem;
    type IntoIter = std::vec::IntoIter<ConfigProblem>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_prefixed_and_lines_formatted() {
        let mut inner = Problems::default();
        inner.push("rules[0].name", "bad");
        let mut outer = Problems::default();
        outer.push("proxy.listen.https", "not an address");
        outer.extend_under("proxy.rate_limits", inner);
        outer.extend_lines(["audit.spool.max_bytes: too small".to_owned()]);
        assert_eq!(outer.len(), 3);
        assert_eq!(
            outer.into_lines(),
            vec![
                "proxy.listen.https: not an address",
                "proxy.rate_limits.rules[0].name: bad",
                "audit.spool.max_bytes: too small",
            ]
        );
    }
}
