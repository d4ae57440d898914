//! Stopping long-running tasks. The owner of a group of tasks keeps a [`Stopper`]; each task keeps
//! a [`Shutdown`] and waits on [`Shutdown::requested`] beside its work (in a `select!`), then
//! finishes what it has in hand and returns.
//!
//! A stop is a state, not a message: a task that subscribes or looks after the stop was asked
//! still sees it, and dropping the `Stopper` counts as asking.

use tokio::sync::watch;

/// Asks the tasks subscribed to it to stop.
#[derive(Debug)]
pub struct Stopper(watch::Sender<bool>);

/// A task's view of whether it should stop.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Stopper {
    /// A stopper and the first subscription to it.
    pub fn new() -> (Stopper, Shutdown) {
        let (sender, receiver) = watch::channel(false);
        (Stopper(sender), Shutdown(receiver))
    }

    /// Another task's view of this stopper.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }

    /// Asks every subscribed task to stop. Asking again changes nothing.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// True once a stop was asked.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Completes once a stop is asked (at once if it already was), or the stopper is gone.
    pub async fn requested(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_stop_asked_before_subscribing_is_seen() {
        let (stopper, _) = Stopper::new();
        stopper.stop();
        let mut late = stopper.subscribe();
        assert!(late.is_requested());
        tokio::time::timeout(Duration::from_secs(5), late.requested()).await.expect("completes at once");
    }

    #[tokio::test]
    async fn dropping_the_stopper_stops() {
        let (stopper, mut shutdown) = Stopper::new();
        assert!(!shutdown.is_requested());
        drop(stopper);
        assert!(shutdown.is_requested());
        tokio::time::timeout(Duration::from_secs(5), shutdown.requested()).await.expect("completes");
    }

    #[tokio::test]
    async fn every_subscriber_sees_one_stop() {
        let (stopper, first) = Stopper::new();
        let waiters: Vec<_> = [first, stopper.subscribe()]
            .into_iter()
            .map(|mut s| tokio::spawn(async move { s.requested().await }))
            .collect();
        stopper.stop();
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("completes").unwrap();
        }
    }
}
