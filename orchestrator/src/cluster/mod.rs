//! A group of orchestrator replicas on one database: which one leads. The lease and its fence are
//! in PostgreSQL (`storage::leadership`); what a replica does about them is decided in [`lease`].

pub mod lease;
pub mod replica;

pub use lease::{Action, Lease, LeaseSettings, Role};
