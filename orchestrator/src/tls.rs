//! TLS set-up shared by every HTTP client of the process (health checks, the command line, span
//! export): one crypto provider, installed once.

use std::sync::Once;

/// Installs ring as the process's rustls provider, once. reqwest is built without a provider of
/// its own so that only ring, which async-nats already uses, is compiled in.
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Fails only when something else installed a provider first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
