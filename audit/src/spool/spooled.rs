//! What the spool stores and hands to sinks: [`SpooledEvent`], and [`Seq`], an event's
//! position in its emitter's chain.

use serde::Deserialize;

use crate::event::schema::{Category, Level};

/// Position of an event in its emitter's chain, from 1.
pub type Seq = u64;

/// An event as stored in the spool, handed to sinks.
#[derive(Debug, Clone, PartialEq)]
pub struct SpooledEvent {
    seq: Seq,
    id: String,
    timestamp: String,
    level: Level,
    category: Category,
    emitter: String,
    line: String,
}

impl SpooledEvent {
    /// Parses a stored line (without its newline).
    pub(crate) fn parse(line: String) -> Result<Self, serde_json::Error> {
        let head: LineHead = serde_json::from_str(&line)?;
        Ok(Self {
            seq: head.seq,
            id: head.id,
            timestamp: head.timestamp,
            level: head.level,
            category: head.category,
            emitter: head.emitter,
            line,
        })
    }

    /// Position in the emitter's chain.
    pub fn seq(&self) -> Seq {
        self.seq
    }

    /// `event.id`.
    pub fn event_id(&self) -> &str {
        &self.id
    }

    /// `@timestamp`, RFC 3339 in UTC with microseconds.
    pub fn timestamp(&self) -> &str {
        &self.timestamp
    }

    /// `log.level`.
    pub fn level(&self) -> Level {
        self.level
    }

    /// `event.category`.
    pub fn category(&self) -> Category {
        self.category
    }

    /// `portcullis.emitter`.
    pub fn emitter(&self) -> &str {
        &self.emitter
    }

    /// The event's JSON exactly as stored (canonical, chain fields included, no newline).
    /// Forward it unchanged: the hash covers these bytes' meaning.
    pub fn json(&self) -> &str {
        &self.line
    }
}

#[derive(Deserialize)]
struct LineHead {
    #[serde(rename = "portcullis.chain.seq")]
    seq: Seq,
    #[serde(rename = "event.id")]
    id: String,
    #[serde(rename = "@timestamp")]
    timestamp: String,
    #[serde(rename = "log.level")]
    level: Level,
    #[serde(rename = "event.category")]
    category: Category,
    #[serde(rename = "portcullis.emitter")]
    emitter: String,
}
