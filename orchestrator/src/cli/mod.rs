//! The client commands of the command line, each a thin user of `orch-client`: the stack over the
//! HTTP API (`up`, `down`, `status`, `profile`, `logs`) and the event stream over NATS (`events`). Like
//! `config.rs`, this is the edge: the domain modules import neither.

pub mod config;
pub mod events;
pub mod logs;
pub mod nodes;
pub mod stack;
pub mod workflow;
