//! Background duties: publishing the outbox and pruning old records.

pub mod maintenance;
pub mod outbox_relay;
