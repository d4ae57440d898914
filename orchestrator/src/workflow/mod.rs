//! Workflows: declarative multi-step executions ([`definition`]) whose expressions are checked
//! and evaluated by [`expr`], each run as a pure state machine ([`machine`]) by the executor on
//! the leader ([`executor`]), which starts queued executions by priority ([`queue`]) and runs the
//! steps' effects ([`steps`]); [`api`] stores definitions and starts, reads and cancels
//! executions for the HTTP routes.
//!
//! Cron schedules ([`schedule`], pure) are fired by [`scheduler`] on the leader, each firing
//! committed once with the schedule's next time.
//!
//! Built so far: manual and cron runs of the step kinds `call` (NATS), `wait`, `restart` and
//! `set_priority`. Not yet: the other step kinds, event and webhook triggers, queue statistics,
//! the bridge, CLI and dashboard (docs/architecture.md, "Workflows").

pub mod api;
pub mod definition;
pub mod executor;
pub mod expr;
pub mod machine;
pub mod queue;
pub mod schedule;
pub mod scheduler;
pub mod steps;

pub use definition::{Definition, DefinitionError, StepKind};
pub use machine::{Action, Execution, ExecutionStatus, Input, StepStatus};
