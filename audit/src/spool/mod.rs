//! The spool: a folder of append-only, hash-chained JSON-lines segments where every event is
//! written and fsync'd before the caller hears back, and from which sinks read at their own
//! pace.
//!
//! One writer thread per spool owns the files: callers encode their event on their own thread,
//! send it over a channel, and the writer takes whatever has queued up, chains and writes it,
//! and fsyncs once for the whole batch (group commit). Segments are named after the seq of
//! their first line (`00000001.jsonl`, `00004711.jsonl`, …); the newest one is never deleted,
//! so the chain head survives a restart. Sinks read committed lines only.
//!
//! Layers, lowest first: [`spooled`] (what is stored and handed to sinks), [`error`],
//! [`segment`] (segment files), [`shared`] (writer and readers' common state), `writer` (the
//! thread and its group commit), [`handle`] ([`handle::Spool`], which callers hold) and
//! [`reader`] (what sinks read through).

pub(crate) mod error;
pub(crate) mod handle;
pub(crate) mod reader;
pub(crate) mod segment;
pub(crate) mod shared;
pub(crate) mod spooled;
mod writer;
