//! A group of orchestrator replicas on one database: which one leads. The lease and its fence are
//! in PostgreSQL (`storage::leadership`); what a replica does about them is decided in [`lease`]
//! and done in [`replica`]; [`front`] is its HTTP listener, which forwards to the leader while it
//! stands by; [`view`] and [`requests`] answer "who leads?" from every replica.

pub mod front;
pub mod lease;
pub mod replica;
pub mod requests;
pub mod view;

pub use lease::{Action, Lease, LeaseSettings, Role};
