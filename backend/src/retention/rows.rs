//! A database row as a JSON object (for the archive): integers, reals, text and nulls,
//! column by column, whatever the engine.

use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::{Column, Row};

/// The row's columns by name.
pub(super) fn to_json(row: &AnyRow) -> Value {
    let mut object = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let value = if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
            v.map_or(Value::Null, Value::from)
        } else if let Ok(v) = row.try_get::<Option<String>, _>(i) {
            v.map_or(Value::Null, Value::from)
        } else if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
            v.map_or(Value::Null, Value::from)
        } else if let Ok(v) = row.try_get::<Option<bool>, _>(i) {
            v.map_or(Value::Null, Value::from)
        } else {
            Value::Null
        };
        object.insert(column.name().to_owned(), value);
    }
    Value::Object(object)
}
