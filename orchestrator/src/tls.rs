//! TLS set-up shared by every HTTP client of the process (health checks, the command line, span
//! export): one crypto provider, installed once. The client crate holds the one definition, since
//! its stack client needs it too; reqwest is built without a provider of its own so that only
//! ring, which async-nats already uses, is compiled in.

pub use orch_client::install_crypto_provider;
