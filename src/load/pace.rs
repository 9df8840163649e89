//! When a load run starts its jobs: open loop (arrivals at a rate, optionally in bursts,
//! whatever the service's answers) or closed loop (a fixed number of clients, each starting its
//! next job when the last one ends); until a count or a duration.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// `rate` arrivals a second, in groups of `burst` (1: evenly spaced).
    Open {
        rate: f64,
        burst: u32,
    },
    Closed {
        concurrency: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    Count(u64),
    For(Duration),
}

/// Open loop: when arrival `i` starts, from the run's start. Groups of `burst` arrive at once,
/// `burst / rate` seconds apart, so the mean rate is `rate` either way (pure).
pub fn arrival_offset(i: u64, rate: f64, burst: u32) -> Duration {
    let burst = u64::from(burst.max(1));
    let group = i / burst;
    Duration::from_secs_f64(group as f64 * burst as f64 / rate)
}

/// Whether job `i`, due at `offset` into the run, is within the limit (pure).
pub fn within(limit: Limit, i: u64, offset: Duration) -> bool {
    match limit {
        Limit::Count(n) => i < n,
        Limit::For(d) => offset < d,
    }
}

/// When a run's jobs ran: from the first one's start to the last one's end.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

/// Runs `job(i)` for every job the pace and limit allow, and waits for all of them.
pub async fn drive<F, Fut>(pace: Pace, limit: Limit, job: F) -> Window
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let job = Arc::new(job);
    let start = Instant::now();
    let mut running = JoinSet::new();
    match pace {
        Pace::Open { rate, burst } => {
            for i in 0.. {
                let offset = arrival_offset(i, rate, burst);
                if !within(limit, i, offset) {
                    break;
                }
                tokio::time::sleep_until(start + offset).await;
                running.spawn(job(i));
                // Reap finished jobs as we go, so a long run holds only the ones in flight.
                while running.try_join_next().is_some() {}
            }
        }
        Pace::Closed { concurrency } => {
            let next = Arc::new(AtomicU64::new(0));
            for _ in 0..concurrency.max(1) {
                let next = next.clone();
                let job = job.clone();
                running.spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if !within(limit, i, start.elapsed()) {
                            break;
                        }
                        job(i).await;
                    }
                });
            }
        }
    }
    while running.join_next().await.is_some() {}
    Window {
        start,
        end: Instant::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_arrivals_keep_the_mean_rate_in_bursts_or_not() {
        assert_eq!(arrival_offset(0, 10.0, 1), Duration::ZERO);
        assert_eq!(arrival_offset(5, 10.0, 1), Duration::from_millis(500));
        // Bursts of 5 at 10/s: five at 0 s, five at 0.5 s.
        assert_eq!(arrival_offset(4, 10.0, 5), Duration::ZERO);
        assert_eq!(arrival_offset(5, 10.0, 5), Duration::from_millis(500));
        assert_eq!(arrival_offset(99, 10.0, 5), Duration::from_millis(9500));
    }

    #[test]
    fn limits_stop_by_count_or_time() {
        assert!(within(Limit::Count(3), 2, Duration::from_secs(99)));
        assert!(!within(Limit::Count(3), 3, Duration::ZERO));
        assert!(within(
            Limit::For(Duration::from_secs(2)),
            1000,
            Duration::from_millis(1999)
        ));
        assert!(!within(
            Limit::For(Duration::from_secs(2)),
            0,
            Duration::from_secs(2)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn both_paces_run_exactly_the_counted_jobs() {
        for pace in [
            Pace::Open {
                rate: 100.0,
                burst: 4,
            },
            Pace::Closed { concurrency: 3 },
        ] {
            let ran = Arc::new(AtomicU64::new(0));
            let counter = ran.clone();
            drive(pace, Limit::Count(10), move |_| {
                let counter = counter.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
            .await;
            assert_eq!(ran.load(Ordering::Relaxed), 10, "{pace:?}");
        }
    }
}
