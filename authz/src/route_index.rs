//! The route index: `data.derived.http`, derived from the route lists of
//! `data.config.http` when a bundle loads.
//!
//! `data.yaml` lists routes the way people read them: in order, each with a path pattern.
//! A policy that walks every route on every request pays for all of them (30-odd pattern
//! matches per decision); with the index it looks at the few whose pattern could match.
//! For each route list (every array under `config.http`), per first path segment (`""`
//! for the empty pattern, the site's root), the index holds:
//!
//! - `by_length[n]`: the patterns of exactly `n` elements that do not end in `"**"`;
//! - `open`: the patterns that end in `"**"`;
//!
//! each in `data.yaml` order, each route copied whole. A route whose pattern does not fit
//! (not an array of strings, a wildcard first element, `"**"` before the end) is refused
//! with the bundle, naming the route: a route that silently never matches is a hole in
//! the policy nobody sees.
//!
//! `data.yaml` stays as written, and nothing but the loader may write under `derived`.
//! A Rego test that replaces `data.config.http` with `with` must replace
//! `data.derived.http` too: the index is built once, from the loaded data.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

/// Top-level key of the data document the loader derives; `data.yaml` may not use it.
pub(crate) const DERIVED_KEY: &str = "derived";

/// A pattern element matching exactly one non-empty segment.
const ONE: &str = "*";

/// A last pattern element matching any remaining segments.
const REST: &str = "**";

/// `{"http": {list: {first segment: {"by_length": [[route…]…], "open": [route…]}}}}` for
/// the route lists of `data` (`config.http`); `None` when `data` has no `config.http`
/// mapping. The error names the route at fault.
pub(crate) fn derive(data: &Value) -> Result<Option<Value>, String> {
    let Some(http) = data.pointer("/config/http").and_then(Value::as_object) else {
        return Ok(None);
    };
    let mut lists = Map::new();
    for (name, list) in http {
        let Some(routes) = list.as_array() else {
            continue;
        };
        lists.insert(name.clone(), index_list(name, routes)?);
    }
    let mut derived = Map::new();
    derived.insert("http".to_owned(), Value::Object(lists));
    Ok(Some(Value::Object(derived)))
}

/// The routes of one list that share a first segment.
#[derive(Default, Serialize)]
struct Bucket<'a> {
    /// Index `n`: the patterns of exactly `n` elements.
    by_length: Vec<Vec<&'a Value>>,
    /// The patterns ending in `"**"`.
    open: Vec<&'a Value>,
}

/// The index of one route list, `config.http.<name>`.
fn index_list(name: &str, routes: &[Value]) -> Result<Value, String> {
    let mut by_first: BTreeMap<String, Bucket<'_>> = BTreeMap::new();
    for (position, route) in routes.iter().enumerate() {
        let (first, shape) = shape(route).map_err(|why| {
            let id = route
                .get("id")
                .and_then(Value::as_str)
                .map(|id| format!(" (id {id})"))
                .unwrap_or_default();
            format!("config.http.{name}[{position}]{id}: {why}")
        })?;
        let bucket = by_first.entry(first).or_default();
        match shape {
            Shape::Fixed(length) => {
                if bucket.by_length.len() <= length {
                    bucket.by_length.resize_with(length + 1, Vec::new);
                }
                bucket.by_length[length].push(route);
            }
            Shape::Open => bucket.open.push(route),
        }
    }
    serde_json::to_value(by_first).map_err(|err| format!("config.http.{name}: {err}"))
}

/// Which bucket a route's pattern goes in.
enum Shape {
    /// Exactly this many segments.
    Fixed(usize),
    /// Ends in `"**"`.
    Open,
}

/// The route's first path segment (`""` for the root pattern) and its shape.
fn shape(route: &Value) -> Result<(String, Shape), &'static str> {
    let Some(path) = route.get("path").and_then(Value::as_array) else {
        return Err("`path` must be a list of segments");
    };
    let mut elements = Vec::with_capacity(path.len());
    for element in path {
        match element.as_str() {
            Some("") => return Err("`path` has an empty segment"),
            Some(element) => elements.push(element),
            None => return Err("`path` must be a list of strings"),
        }
    }
    let Some((&first, _)) = elements.split_first() else {
        return Ok((String::new(), Shape::Fixed(0)));
    };
    if first == ONE || first == REST {
        return Err("the first element of `path` must be a literal segment");
    }
    match elements.iter().position(|e| *e == REST) {
        None => Ok((first.to_owned(), Shape::Fixed(elements.len()))),
        Some(at) if at + 1 == elements.len() => Ok((first.to_owned(), Shape::Open)),
        Some(_) => Err("\"**\" may only be the last element of `path`"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::derive;

    fn route(id: &str, path: &[&str]) -> serde_json::Value {
        json!({"id": id, "path": path})
    }

    #[test]
    fn routes_are_grouped_by_first_segment_and_length_in_order() {
        let routes = vec![
            route("root", &[]),
            route("coll", &["api", "tickets"]),
            route("users", &["admin", "users", "**"]),
            route("one", &["api", "tickets", "*"]),
            route("emps", &["api", "employees"]),
            route("all", &["api", "**"]),
        ];
        let data = json!({"config": {"http": {"routes": routes, "limit": 3}}});
        let index = derive(&data).unwrap().unwrap();
        assert_eq!(
            index,
            json!({"http": {"routes": {
                "": {"by_length": [[route("root", &[])]], "open": []},
                "api": {
                    "by_length": [[], [], [route("coll", &["api", "tickets"]), route("emps", &["api", "employees"])],
                                  [route("one", &["api", "tickets", "*"])]],
                    "open": [route("all", &["api", "**"])],
                },
                "admin": {"by_length": [], "open": [route("users", &["admin", "users", "**"])]},
            }}})
        );
    }

    #[test]
    fn data_without_http_routes_derives_nothing() {
        assert_eq!(derive(&json!({"config": {"roles": []}})).unwrap(), None);
        assert_eq!(derive(&json!({})).unwrap(), None);
    }

    #[test]
    fn a_route_that_cannot_be_indexed_is_refused_by_name() {
        for (path, why) in [
            (json!(["*", "x"]), "first element"),
            (json!(["**"]), "first element"),
            (json!(["a", "**", "b"]), "last element"),
            (json!(["a", ""]), "empty segment"),
            (json!(["a", 1]), "list of strings"),
            (json!("a/b"), "list of segments"),
        ] {
            let data = json!({"config": {"http": {"routes": [route("ok", &["a"]), {"id": "bad", "path": path}]}}});
            let err = derive(&data).unwrap_err();
            assert!(err.starts_with("config.http.routes[1] (id bad): "), "{err}");
            assert!(err.contains(why), "{err}");
        }
    }
}
