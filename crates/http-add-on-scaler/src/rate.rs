//! Request-rate ring buffer: request counts in buckets of `granularity`, summed over `window`.

use std::time::{Duration, Instant};

/// Default rate window (upstream's `1m`).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Default bucket size (upstream's `1s`).
pub const DEFAULT_GRANULARITY: Duration = Duration::from_secs(1);
/// Most buckets one window may have; a finer granularity is coarsened to fit.
pub const MAX_BUCKETS: u64 = 3600;

/// Window and bucket size of a route's rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateConfig {
    /// Length of the sliding window.
    pub window: Duration,
    /// Size of one bucket.
    pub granularity: Duration,
}

impl Default for RateConfig {
    fn default() -> Self {
        Self {
            window: DEFAULT_WINDOW,
            granularity: DEFAULT_GRANULARITY,
        }
    }
}

impl RateConfig {
    /// A usable config: a zero window or granularity falls back to the default, a granularity
    /// larger than the window is clamped to it, and at most [`MAX_BUCKETS`] buckets are used.
    pub fn sanitized(self) -> Self {
        let window = if self.window.is_zero() {
            DEFAULT_WINDOW
        } else {
            self.window
        };
        let mut granularity = if self.granularity.is_zero() {
            DEFAULT_GRANULARITY.min(window)
        } else {
            self.granularity.min(window)
        };
        let min_granularity = window / MAX_BUCKETS as u32;
        if granularity < min_granularity {
            granularity = min_granularity;
        }
        Self {
            window,
            granularity,
        }
    }

    fn buckets(&self) -> usize {
        self.window
            .as_nanos()
            .div_ceil(self.granularity.as_nanos())
            .max(1) as usize
    }
}

/// Sliding-window request counter of one route.
#[derive(Clone, Debug)]
pub struct RateWindow {
    config: RateConfig,
    origin: Instant,
    /// Bucket `epoch % len` holds the count of bucket `epoch` for the `len` newest epochs.
    buckets: Vec<u64>,
    /// Epoch of the newest bucket written.
    head: u64,
}

impl RateWindow {
    /// An empty window; `origin` is the time epochs are counted from.
    pub fn new(config: RateConfig, origin: Instant) -> Self {
        let config = config.sanitized();
        Self {
            buckets: vec![0; config.buckets()],
            config,
            origin,
            head: 0,
        }
    }

    /// The window and granularity in use.
    pub fn config(&self) -> RateConfig {
        self.config
    }

    fn epoch(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin).as_nanos();
        (since / self.config.granularity.as_nanos()) as u64
    }

    /// Moves the head to `epoch`, clearing the buckets that fell out of the window.
    fn advance(&mut self, epoch: u64) {
        if epoch <= self.head {
            return;
        }
        let len = self.buckets.len() as u64;
        if epoch - self.head >= len {
            self.buckets.iter_mut().for_each(|b| *b = 0);
        } else {
            for e in self.head + 1..=epoch {
                self.buckets[(e % len) as usize] = 0;
            }
        }
        self.head = epoch;
    }

    /// Records `count` requests at `at`.
    pub fn add(&mut self, at: Instant, count: u64) {
        if count == 0 {
            return;
        }
        let epoch = self.epoch(at);
        self.advance(epoch);
        let len = self.buckets.len() as u64;
        // A late sample for an epoch still in the window lands in its own bucket; an older one
        // in the oldest bucket still in the window.
        let epoch = epoch.max(self.head.saturating_sub(len - 1));
        let bucket = &mut self.buckets[(epoch % len) as usize];
        *bucket = bucket.saturating_add(count);
    }

    /// Requests recorded in the window ending at `at`.
    pub fn total(&self, at: Instant) -> u64 {
        let now = self.epoch(at);
        let len = self.buckets.len() as u64;
        let oldest = now.saturating_sub(len - 1);
        if self.head < oldest {
            return 0;
        }
        (oldest..=self.head.min(now))
            .map(|e| self.buckets[(e % len) as usize])
            .fold(0u64, u64::saturating_add)
    }

    /// Requests per second over the window ending at `at`.
    pub fn rate(&self, at: Instant) -> f64 {
        self.total(at) as f64 / self.config.window.as_secs_f64()
    }

    /// The same counts re-bucketed into `config`, keeping those still inside the new window.
    pub fn reconfigured(&self, config: RateConfig, at: Instant) -> Self {
        let mut next = Self::new(config, self.origin);
        let len = self.buckets.len() as u64;
        let now = self.epoch(at);
        let oldest = now.saturating_sub(len - 1);
        for e in oldest..=self.head.min(now) {
            let count = self.buckets[(e % len) as usize];
            if count > 0 {
                let start = self.origin + self.config.granularity * e as u32;
                if at.saturating_duration_since(start) < next.config.window {
                    next.add(start, count);
                }
            }
        }
        next
    }
}

/// Requests since the previous reading of a monotonic counter; a drop means the counter was
/// reset (the interceptor restarted), so the whole new value is new requests.
pub fn counter_delta(previous: u64, current: u64) -> u64 {
    if current >= previous {
        current - previous
    } else {
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn cfg(window: u64, granularity: u64) -> RateConfig {
        RateConfig {
            window: S * window as u32,
            granularity: S * granularity as u32,
        }
    }

    #[test]
    fn sums_buckets_in_the_window() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(cfg(10, 1), t0);
        w.add(t0, 5);
        w.add(t0 + S * 3, 5);
        assert_eq!(w.total(t0 + S * 3), 10);
        assert!((w.rate(t0 + S * 3) - 1.0).abs() < 1e-9);
        // The first bucket (epoch 0) is still inside a 10 s window at t=9.5s...
        assert_eq!(w.total(t0 + Duration::from_millis(9500)), 10);
        // ...and gone at t=10s.
        assert_eq!(w.total(t0 + S * 10), 5);
        assert_eq!(w.total(t0 + S * 13), 0);
        assert_eq!(w.rate(t0 + S * 100), 0.0);
    }

    #[test]
    fn coarse_granularity_groups_requests() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(cfg(60, 15), t0);
        assert_eq!(w.config().window, S * 60);
        w.add(t0 + S, 30);
        w.add(t0 + S * 14, 30);
        assert_eq!(w.total(t0 + S * 59), 60);
        assert!((w.rate(t0 + S * 59) - 1.0).abs() < 1e-9);
        // Epoch 0 (0..15 s) leaves the 4-bucket window when epoch 4 starts at 60 s.
        assert_eq!(w.total(t0 + S * 60), 0);
    }

    #[test]
    fn single_request_after_long_idle_is_seen() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(RateConfig::default(), t0);
        w.add(t0, 100);
        let later = t0 + S * 3600;
        assert_eq!(w.total(later), 0);
        w.add(later, 1);
        assert_eq!(w.total(later), 1);
        assert!(w.rate(later) > 0.0);
        assert_eq!(w.total(later + S * 59), 1);
        assert_eq!(w.total(later + S * 60), 0);
    }

    #[test]
    fn wraps_around_the_ring() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(cfg(3, 1), t0);
        for i in 0..10u32 {
            w.add(t0 + S * i, 1);
        }
        assert_eq!(w.total(t0 + S * 9), 3);
        // A sample older than the window counts in the oldest bucket still inside it.
        w.add(t0, 4);
        assert_eq!(w.total(t0 + S * 9), 7);
        assert_eq!(w.total(t0 + S * 10), 2);
    }

    #[test]
    fn sanitizes_configs() {
        assert_eq!(cfg(0, 0).sanitized(), RateConfig::default());
        assert_eq!(cfg(5, 10).sanitized(), cfg(5, 5));
        let fine = RateConfig {
            window: Duration::from_secs(3600),
            granularity: Duration::from_millis(1),
        }
        .sanitized();
        assert_eq!(fine.granularity, Duration::from_secs(1));
    }

    #[test]
    fn reconfiguring_keeps_recent_counts() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(cfg(60, 1), t0);
        w.add(t0 + S * 10, 3);
        w.add(t0 + S * 50, 4);
        let narrowed = w.reconfigured(cfg(20, 5), t0 + S * 55);
        assert_eq!(narrowed.total(t0 + S * 55), 4);
        assert!((narrowed.rate(t0 + S * 55) - 0.2).abs() < 1e-9);
        let widened = w.reconfigured(cfg(120, 1), t0 + S * 55);
        assert_eq!(widened.total(t0 + S * 55), 7);
    }

    #[test]
    fn counter_resets_count_the_new_value() {
        assert_eq!(counter_delta(10, 15), 5);
        assert_eq!(counter_delta(10, 10), 0);
        assert_eq!(counter_delta(10, 3), 3);
        assert_eq!(counter_delta(0, 7), 7);
    }
}
