//! The node agent: supervises the processes of managed services on one node. This part holds the
//! process supervisor and the capture of their output; the agent's NATS interface comes next.

pub mod logs;
pub mod supervisor;

pub use supervisor::{Exit, Exited, ProcessSpec, Supervisor, SupervisorError};
