//! The global connection guard (`KEDA_HTTP_MAX_CONNECTIONS`): beyond the limit, a new client
//! connection to the proxy listeners is closed as soon as it is accepted, before it costs a
//! task or buffers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Open client connections of the proxy listeners (plain and TLS), against a limit.
#[derive(Debug)]
pub(crate) struct Connections {
    open: AtomicUsize,
    max: Option<usize>,
    refused: AtomicU64,
}

/// One open connection; dropping it closes its place.
#[derive(Debug)]
pub(crate) struct Open(Arc<Connections>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Connections {
    /// At most `max` open connections (`None` = no limit).
    pub(crate) fn new(max: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            max,
            refused: AtomicU64::new(0),
        })
    }

    /// A place for a new connection, or `None` (counted as refused) when all are taken.
    pub(crate) fn open(self: &Arc<Self>) -> Option<Open> {
        let max = self.max.unwrap_or(usize::MAX);
        match self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            }) {
            Ok(_) => Some(Open(self.clone())),
            Err(_) => {
                let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                // One line for the first refusal and then every 1000th, not one per connection.
                if refused % 1000 == 1 {
                    tracing::warn!(
                        max,
                        refused,
                        "KEDA_HTTP_MAX_CONNECTIONS reached: new connections are closed"
                    );
                }
                None
            }
        }
    }

    /// Connections refused so far.
    #[cfg(test)]
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_beyond_the_limit_and_frees_places_on_drop() {
        let limit = Connections::new(Some(2));
        let a = limit.open().expect("first");
        let _b = limit.open().expect("second");
        assert!(limit.open().is_none(), "a third is refused");
        assert_eq!(limit.refused(), 1);
        drop(a);
        assert!(limit.open().is_some(), "a freed place is taken again");
        let unlimited = Connections::new(None);
        let held: Vec<_> = (0..1000)
            .map(|_| unlimited.open().expect("no limit"))
            .collect();
        assert_eq!(held.len(), 1000);
    }
}
