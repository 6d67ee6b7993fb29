//! The idle timeout of connections served by hyper: a connection with no request in flight
//! for the idle timeout is shut down gracefully (HTTP/2 sends GOAWAY).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Requests in flight on one connection.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    busy: AtomicUsize,
    /// Requests started so far (tells a quiet spell from one with a short request in it).
    started: AtomicU64,
    /// Woken whenever the last request in flight ends.
    quiet: Notify,
}

/// One request in flight on a connection, until dropped.
#[derive(Debug)]
pub(crate) struct Active(Arc<Activity>);

impl Activity {
    /// Counts a request in flight.
    pub(crate) fn start(self: &Arc<Self>) -> Active {
        self.started.fetch_add(1, Ordering::AcqRel);
        self.busy.fetch_add(1, Ordering::AcqRel);
        Active(self.clone())
    }

    /// Resolves once the connection has had no request in flight for `limit`.
    pub(crate) async fn idle_for(&self, limit: Duration) {
        loop {
            let quiet = self.quiet.notified();
            tokio::pin!(quiet);
            quiet.as_mut().enable();
            if self.busy.load(Ordering::Acquire) > 0 {
                quiet.await;
                continue;
            }
            let started = self.started.load(Ordering::Acquire);
            tokio::time::sleep(limit).await;
            if self.busy.load(Ordering::Acquire) == 0
                && self.started.load(Ordering::Acquire) == started
            {
                return;
            }
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.quiet.notify_waiters();
        }
    }
}
