//! The bridge's one tokio runtime, and [`block_on`]: the one helper through which every blocking
//! call from Python goes. It releases the GIL while waiting and wakes every [`SIGNAL_POLL`] to run
//! Python's signal handlers, so Ctrl-C interrupts any wait.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use pyo3::prelude::*;
use tokio::runtime::Runtime;

use crate::error::Error;

/// How often a blocking wait wakes to let Python handle signals (Ctrl-C).
pub const SIGNAL_POLL: Duration = Duration::from_millis(100);

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The runtime every connection, consumer and request runs on (also the one behind the asyncio
/// awaitables). A few worker threads: the work per event is small, and a client should not take a
/// machine's every core.
pub fn runtime() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 4);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("orch-bridge")
            .enable_all()
            .build()
            .expect("the orch_bridge tokio runtime could not start")
    })
}

/// Hands the runtime to pyo3-async-runtimes, so asyncio awaitables run on it too.
pub fn init_async() {
    // Err only when it was set already, e.g. by a second import of the module.
    let _ = pyo3_async_runtimes::tokio::init_with_runtime(runtime());
}

/// Runs `future` on the runtime and waits for it with the GIL released. A pending signal
/// (`KeyboardInterrupt` from Ctrl-C) ends the wait, aborts the future and is raised.
pub fn block_on<F, T>(py: Python<'_>, future: F) -> PyResult<T>
where
    F: Future<Output = Result<T, Error>> + Send + 'static,
    T: Send + 'static,
{
    let mut task = runtime().spawn(future);
    loop {
        let waited = py.detach(|| runtime().block_on(async { tokio::time::timeout(SIGNAL_POLL, &mut task).await }));
        match waited {
            Ok(Ok(result)) => return result.map_err(PyErr::from),
            Ok(Err(join_error)) => {
                return Err(PyErr::from(Error::connection(format!(
                    "the bridge's background task failed: {join_error}"
                ))));
            }
            Err(_elapsed) => {
                if let Err(signal) = py.check_signals() {
                    task.abort();
                    return Err(signal);
                }
            }
        }
    }
}

/// Seconds from Python into a `Duration`, refusing what is not a positive finite number.
pub fn seconds(field: &str, value: f64) -> Result<Duration, Error> {
    if value.is_finite() && value > 0.0 && value < 1e9 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(Error::invalid(field, format!("must be a positive number of seconds (got {value})")))
    }
}
