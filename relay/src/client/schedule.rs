//! When a daemon checks its sources: the one schedule of the relay's sync worker, the
//! origin's import cycles and the agent's `sync`.
//!
//! A schedule is a few timers, each a cron expression (6 fields, seconds first, UTC) or
//! a fixed interval, each with an optional random delay (the jitter, so that a fleet does
//! not ask at the same instant) and optionally armed only while the last check failed
//! (the retry). A timer that fires calls the daemon's `wake`; the daemon's own loop runs
//! the checks, one at a time, tells the schedule whether the last one failed
//! ([`Schedule::set_failing`]) and shows when the next is due ([`Schedule::next`]).
//!
//! The timers run on tokio-cron-scheduler: the relay's operators write cron (a check
//! at 03:00, retries on the hour), the agent's configuration writes intervals (`24h`,
//! `1h`), and one scheduler runs both, so there is one loop shape, one place that knows
//! a retry fires only while failing, and one answer to "when is the next check".

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use crate::bundle::Timestamp;

/// When a timer fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum When {
    /// A cron expression, 6 fields with seconds first, in UTC (`0 0 3 * * *`).
    Cron(String),
    /// Every so often, counted from the start of the schedule.
    Every(Duration),
}

/// One timer of a schedule.
#[derive(Clone, Debug)]
pub struct Timer {
    pub when: When,
    /// A random delay of up to this much after each tick, before the wake.
    pub jitter: Duration,
    /// Fires only while the last check failed.
    pub only_while_failing: bool,
}

impl Timer {
    /// The regular check.
    pub fn check(when: When, jitter: Duration) -> Self {
        Timer {
            when,
            jitter,
            only_while_failing: false,
        }
    }

    /// The retry after a failed check.
    pub fn retry(when: When) -> Self {
        Timer {
            when,
            jitter: Duration::ZERO,
            only_while_failing: true,
        }
    }
}

/// The scheduler could not be started, or a timer is malformed.
#[derive(Debug, thiserror::Error)]
#[error("schedule: {0}")]
pub struct ScheduleError(String);

impl From<JobSchedulerError> for ScheduleError {
    fn from(e: JobSchedulerError) -> Self {
        ScheduleError(e.to_string())
    }
}

/// Running timers. Stopped by [`Schedule::stop`] (or with the runtime).
pub struct Schedule {
    scheduler: JobScheduler,
    /// Each timer's job, and whether it fires only while failing.
    jobs: Vec<(uuid::Uuid, bool)>,
    failing: Arc<AtomicBool>,
}

impl Schedule {
    /// Starts `timers`; each tick calls `wake` (after the timer's jitter; a retry only
    /// while [`Schedule::set_failing`] last said so).
    pub async fn start<W>(timers: &[Timer], wake: W) -> Result<Self, ScheduleError>
    where
        W: Fn() + Clone + Send + Sync + 'static,
    {
        let scheduler = JobScheduler::new().await?;
        let failing = Arc::new(AtomicBool::new(false));
        let mut jobs = Vec::with_capacity(timers.len());
        for timer in timers {
            let (wake, failing) = (wake.clone(), Arc::clone(&failing));
            let (jitter, only_while_failing) = (timer.jitter, timer.only_while_failing);
            let run = move |_, _| {
                let (wake, failing) = (wake.clone(), Arc::clone(&failing));
                Box::pin(async move {
                    if only_while_failing && !failing.load(Ordering::SeqCst) {
                        return;
                    }
                    if !jitter.is_zero() {
                        tokio::time::sleep(super::random_below(jitter)).await;
                    }
                    wake();
                })
                    as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
            };
            let job = match &timer.when {
                When::Cron(expr) => Job::new_async(expr.as_str(), run)?,
                When::Every(every) => Job::new_repeated_async(*every, run)?,
            };
            jobs.push((scheduler.add(job).await?, only_while_failing));
        }
        scheduler.start().await?;
        Ok(Schedule {
            scheduler,
            jobs,
            failing,
        })
    }

    /// Whether the last check failed: arms or disarms the retry timers.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// When the next wake is due (before any jitter): the soonest timer armed now.
    pub async fn next(&mut self) -> Option<Timestamp> {
        let failing = self.failing.load(Ordering::SeqCst);
        let mut soonest: Option<Timestamp> = None;
        for &(job, only_while_failing) in &self.jobs {
            if only_while_failing && !failing {
                continue;
            }
            let tick = self
                .scheduler
                .next_tick_for_job(job)
                .await
                .ok()
                .flatten()
                .and_then(|t| Timestamp::from_unix(t.timestamp()));
            soonest = soonest.into_iter().chain(tick).min();
        }
        soonest
    }

    /// Stops the timers.
    pub async fn stop(mut self) {
        let _ = self.scheduler.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn counter() -> (Arc<AtomicUsize>, impl Fn() + Clone + Send + Sync + 'static) {
        let count = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&count);
        (count, move || {
            c.fetch_add(1, Ordering::SeqCst);
        })
    }

    #[tokio::test]
    async fn an_interval_timer_wakes_and_a_retry_only_while_failing() {
        let (checks, wake_check) = counter();
        let (retries, wake_retry) = counter();
        let mut check = Schedule::start(
            &[Timer::check(
                When::Every(Duration::from_secs(1)),
                Duration::ZERO,
            )],
            wake_check,
        )
        .await
        .unwrap();
        let mut retry = Schedule::start(
            &[Timer::retry(When::Every(Duration::from_secs(1)))],
            wake_retry,
        )
        .await
        .unwrap();
        let now = Timestamp::now().unix();
        let next = check.next().await.expect("a next check").unix();
        assert!((now..=now + 2).contains(&next), "{next} vs {now}");
        assert_eq!(
            retry.next().await,
            None,
            "a retry is not due while checks succeed"
        );
        tokio::time::sleep(Duration::from_millis(2600)).await;
        assert!(checks.load(Ordering::SeqCst) >= 1);
        assert_eq!(retries.load(Ordering::SeqCst), 0);
        retry.set_failing(true);
        assert!(retry.next().await.is_some());
        tokio::time::sleep(Duration::from_millis(2600)).await;
        assert!(retries.load(Ordering::SeqCst) >= 1);
        check.stop().await;
        retry.stop().await;
    }

    #[tokio::test]
    async fn a_malformed_cron_expression_is_an_error() {
        let (_, wake) = counter();
        let err = Schedule::start(&[Timer::retry(When::Cron("every day".into()))], wake)
            .await
            .err()
            .expect("refused");
        assert!(err.to_string().starts_with("schedule:"), "{err}");
    }
}
