//! What the controller shows of the stack: the answer to `apply`, the managed services and
//! their states, and start-up profiles. The wire types live in the protocol crate, which the
//! clients read them with.

pub use orch_protocol::stack::{ManagedService, RunProfile, StackApplied, StackView};
