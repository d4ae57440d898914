//! The orchestrator's wire protocol: subject names, command payloads, CloudEvents and the error
//! format. Shared by the server and every client (the Python bridge among them), so a client never
//! links the server's database or HTTP stack. `docs/protocol.md` is the human-readable contract for
//! everything defined here.

pub mod agent;
pub mod config_store;
pub mod error;
pub mod events;
pub mod headers;
pub mod health;
pub mod history;
pub mod lifecycle;
pub mod names;
pub mod principal;
pub mod priority;
pub mod registry;
pub mod resources;
pub mod stack;
pub mod subjects;
pub mod workflow;

pub use error::{ErrorBody, ErrorCode, ProtocolError};
pub use events::{Event, EventKind};
pub use subjects::Subjects;
