//! A one-way "stop now" signal shared by the long-running parts of `clouddeck run`
//! (HTTP server, leader election, controllers), so that each stops in the order
//! [`crate::operator`] chooses: controllers first, then the Lease, then the server.

use std::future::Future;

use tokio::sync::watch;

/// The sending half: [`Trigger::stop`] (or dropping it) tells every [`Stop`] to stop.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// The receiving half; cheap to clone, one per task that must stop.
#[derive(Debug, Clone)]
pub struct Stop(watch::Receiver<bool>);

/// A connected [`Trigger`] and [`Stop`].
pub fn channel() -> (Trigger, Stop) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Stop(rx))
}

impl Trigger {
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

impl Stop {
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once stop was requested or the [`Trigger`] is gone.
    ///
    /// The future is `Send + Sync + 'static`, which kube's
    /// `Controller::graceful_shutdown_on` requires.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut rx = self.0.clone();
        async move {
            // An error means the trigger was dropped: treat that as "stop" too.
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn stop_reaches_every_clone() {
        let (trigger, stop) = channel();
        let other = stop.clone();
        assert!(!stop.is_stopped());
        trigger.stop();
        stop.stopped().await;
        other.stopped().await;
        assert!(other.is_stopped());
    }

    #[tokio::test]
    async fn dropping_the_trigger_stops() {
        let (trigger, stop) = channel();
        drop(trigger);
        tokio::time::timeout(Duration::from_secs(1), stop.stopped())
            .await
            .unwrap();
    }
}
