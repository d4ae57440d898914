//! The typed Rust client of the orchestrator's wire protocol (`docs/protocol.md`), used by the
//! command line, the benchmarks and the Python bridge's core, so no wire type, reply check or
//! acknowledgement is written twice.
//!
//! - [`Client`] ([`connection`]): one NATS connection; [`Client::call`] sends a [`Request`]
//!   ([`requests`]: built from the protocol's types and checked as the server checks them) and
//!   turns error replies into [`Error::Remote`].
//! - [`events`]: subscriptions to the events stream, ephemeral or durable, with acknowledgements
//!   queued through async-nats' ack kinds.
//! - `stack` (feature `http`): the managed stack over the HTTP API (`PUT`/`GET`/`DELETE /stack`,
//!   the start-up profile), typed with the protocol's stack types.

pub mod connection;
pub mod error;
pub mod events;
pub mod requests;
#[cfg(feature = "http")]
pub mod stack;

pub use async_nats::jetstream::AckKind;
pub use connection::{Acker, Client, ConnectSettings, redacted_url, servers, url_credentials, without_credentials};
pub use error::{Error, Result};
pub use events::{RawEvent, SubscribeOptions, Subscription};
pub use requests::{ReplyKind, Request};

#[cfg(feature = "http")]
pub use stack::install_crypto_provider;
