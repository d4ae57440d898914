//! Workflows: declarative multi-step executions ([`definition`]) whose expressions are checked
//! and evaluated by [`expr`], each run as a pure state machine ([`machine`]) by the executor on
//! the leader ([`executor`]), which starts queued executions by priority ([`queue`]) and runs the
//! steps' effects ([`steps`]); [`api`] stores definitions and starts, reads and cancels
//! executions for the HTTP routes.
//!
//! Cron schedules ([`schedule`], pure) are fired by [`scheduler`] on the leader, each firing
//! committed once with the schedule's next time. Event triggers ([`trigger`], pure) are counted
//! by [`listener`] on the leader, which reads the events stream from where it stopped. Webhook
//! deliveries are checked by [`hook`] (pure) and start executions through [`api`].

pub mod api;
pub mod definition;
pub mod definitions;
pub mod executor;
pub mod expr;
pub mod hook;
pub mod listener;
pub mod machine;
pub mod queue;
pub mod schedule;
pub mod scheduler;
pub mod steps;
pub mod trigger;

pub use definition::{Definition, DefinitionError, StepKind};
pub use machine::{Action, Execution, ExecutionStatus, Input, StepStatus};
