//! Workflows: declarative multi-step executions (`definition`), whose expressions are CEL
//! (`expr`), run as pure state machines (`machine`) by an executor on the leader.
//!
//! Built so far: the definitions with their validation, the expressions, and the execution
//! state machine. Not yet: storage, the executor, triggers, queues and the API (issue
//! "Workflows and scheduled jobs"; docs/architecture.md, "Workflows").

pub mod definition;
pub mod expr;
pub mod machine;

pub use definition::{Definition, DefinitionError, StepKind};
pub use machine::{Action, Execution, ExecutionStatus, Input, StepStatus};
