//! The node agent: supervises the processes of managed services on one node, takes its requests
//! over NATS, and reports how each process ended.

pub mod client;
pub mod logs;
pub mod pressure;
pub mod service;
pub mod shim;
pub mod supervisor;

pub use supervisor::{Exit, Exited, ProcessSpec, Supervisor, SupervisorError};
