//! Logging and tracing set-up in one place: an `EnvFilter`, human output on a terminal, JSON when
//! asked or when the output is not a terminal (log collectors parse it), and, in builds with the
//! `otlp` feature, the export of spans to an OTLP collector.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON otherwise.
    #[default]
    Auto,
    Human,
    Json,
}

impl LogFormat {
    /// The names the settings take.
    pub const NAMES: [&'static str; 3] = ["auto", "human", "json"];
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "auto" => Ok(LogFormat::Auto),
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: one of {}", LogFormat::NAMES.join(", "))),
        }
    }
}

/// Keeps the span exporter alive; dropping it flushes the spans not yet sent.
#[must_use = "dropping the guard stops the span export"]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("flushing trace spans failed: {e}");
        }
    }
}

/// Installs the global subscriber without span export. `RUST_LOG`, when set, wins over `filter`.
pub fn init(filter: &str, format: LogFormat) {
    let _ = install(filter, format, None);
}

/// Installs the global subscriber, exporting spans to `otlp_endpoint` when given. Errors when an
/// endpoint is given to a build without the `otlp` feature, or the exporter cannot be built.
pub fn install(filter: &str, format: LogFormat, otlp_endpoint: Option<&str>) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(filter)).unwrap_or_else(|e| {
        eprintln!("invalid log filter {filter:?} ({e}); using `info`");
        EnvFilter::new("info")
    });
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let output = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let output = if json {
        output.json().flatten_event(true).with_current_span(true).with_span_list(false).boxed()
    } else {
        output.with_target(false).boxed()
    };
    let registry = tracing_subscriber::registry().with(filter).with(output);

    #[cfg(feature = "otlp")]
    {
        use opentelemetry::trace::TracerProvider as _;
        use opentelemetry_otlp::WithExportConfig as _;
        let provider = match otlp_endpoint {
            None => None,
            Some(endpoint) => {
                // The exporter's HTTP client is the workspace's reqwest, built without a default
                // TLS crypto provider.
                crate::tls::install_crypto_provider();
                let exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_endpoint(endpoint)
                    .build()
                    .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
                let resource = opentelemetry_sdk::Resource::builder().with_service_name("orchestrator").build();
                Some(
                    opentelemetry_sdk::trace::SdkTracerProvider::builder()
                        .with_batch_exporter(exporter)
                        .with_resource(resource)
                        .build(),
                )
            }
        };
        let spans = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("orchestrator")));
        // A second init (tests that start the orchestrator in-process) keeps the first subscriber.
        let _ = registry.with(spans).try_init();
        Ok(Telemetry { provider })
    }
    #[cfg(not(feature = "otlp"))]
    {
        if let Some(endpoint) = otlp_endpoint {
            return Err(format!(
                "--otlp-endpoint {endpoint}: this build has no OTLP export; build with `cargo build --features otlp`"
            ));
        }
        let _ = registry.try_init();
        Ok(Telemetry {})
    }
}
