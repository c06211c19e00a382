//! Retry policy: exponential backoff with jitter, then `dead`.

use std::time::Duration;

use rand::Rng;

use crate::config::RetryConfig;

/// The shortest wait ever returned, so a retry never fires at once even when
/// `backoff` is configured as zero.
pub(crate) const MIN_BACKOFF: Duration = Duration::from_millis(1);

/// What to do with an item whose attempt just failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Try again after this long.
    Retry(Duration),
    /// Attempts are used up: mark the item dead.
    Dead,
}

/// The wait before the next attempt, after `attempts_done` failed attempts (1-based):
/// `backoff * 2^(attempts_done - 1)`, capped at `max_backoff`, with jitter.
///
/// Equal jitter (half the step fixed, half random) rather than full jitter: full
/// jitter can draw a wait near zero at any step, which hammers an upstream that
/// has just failed; equal jitter keeps the exponential floor and still spreads
/// retries of a burst that failed together.
pub(crate) fn backoff(cfg: &RetryConfig, attempts_done: u32, rng: &mut impl Rng) -> Duration {
    let step = capped_step(cfg, attempts_done);
    let nanos = u64::try_from(step.as_nanos()).unwrap_or(u64::MAX);
    let half = nanos / 2;
    let jitter = rng.gen_range(0..=nanos - half);
    Duration::from_nanos(half + jitter).max(MIN_BACKOFF)
}

/// Retry with [`backoff`] while `attempts_done < max_attempts`, else dead.
pub(crate) fn verdict(cfg: &RetryConfig, attempts_done: u32, rng: &mut impl Rng) -> Verdict {
    if attempts_done >= cfg.max_attempts {
        Verdict::Dead
    } else {
        Verdict::Retry(backoff(cfg, attempts_done, rng))
    }
}

/// The un-jittered step: `backoff * 2^(n-1)`, saturating, capped at `max_backoff`.
fn capped_step(cfg: &RetryConfig, attempts_done: u32) -> Duration {
    let exp = attempts_done.saturating_sub(1);
    let grown = 1u32
        .checked_shl(exp)
        .and_then(|factor| cfg.backoff.checked_mul(factor))
        .unwrap_or(Duration::MAX);
    grown.min(cfg.max_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn cfg(max_attempts: u32, backoff: u64, max_backoff: u64) -> RetryConfig {
        RetryConfig {
            max_attempts,
            backoff: Duration::from_secs(backoff),
            max_backoff: Duration::from_secs(max_backoff),
        }
    }

    #[test]
    fn step_grows_exponentially() {
        let c = cfg(10, 1, 10_000);
        let steps: Vec<u64> = (1..=6).map(|n| capped_step(&c, n).as_secs()).collect();
        assert_eq!(steps, vec![1, 2, 4, 8, 16, 32]);
    }

    #[test]
    fn step_is_capped_and_never_overflows() {
        let c = cfg(10, 1, 600);
        assert_eq!(capped_step(&c, 10), Duration::from_secs(512));
        assert_eq!(capped_step(&c, 11), Duration::from_secs(600));
        assert_eq!(capped_step(&c, 40), Duration::from_secs(600));
        assert_eq!(capped_step(&c, u32::MAX), Duration::from_secs(600));
    }

    #[test]
    fn jitter_stays_between_half_step_and_step() {
        let c = cfg(10, 1, 600);
        let mut rng = StdRng::seed_from_u64(7);
        for n in 1..=15 {
            let step = capped_step(&c, n);
            let mut seen_low = false;
            let mut seen_high = false;
            for _ in 0..500 {
                let d = backoff(&c, n, &mut rng);
                assert!(
                    d >= step / 2 && d <= step,
                    "n={n}: {d:?} outside [{:?}, {step:?}]",
                    step / 2
                );
                seen_low |= d < step * 3 / 4;
                seen_high |= d > step * 3 / 4;
            }
            assert!(seen_low && seen_high, "n={n}: jitter does not spread");
        }
    }

    #[test]
    fn never_zero() {
        let zero = RetryConfig {
            max_attempts: 3,
            backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
        };
        let mut rng = StdRng::seed_from_u64(1);
        for n in 0..5 {
            assert!(backoff(&zero, n, &mut rng) >= MIN_BACKOFF);
        }
    }

    /// When each attempt starts, in seconds after the first, if every wait
    /// is drawn by `wait(attempts_done)`; one entry per attempt.
    fn schedule(cfg: &RetryConfig, mut wait: impl FnMut(u32) -> Duration) -> Vec<f64> {
        let mut at = vec![0.0];
        let mut now = 0.0;
        for done in 1..cfg.max_attempts {
            now += wait(done).as_secs_f64();
            at.push(now);
        }
        at
    }

    #[test]
    fn the_default_policy_retries_for_at_least_a_day_even_when_jitter_draws_every_wait_short() {
        let c = RetryConfig::default();
        // Equal jitter never waits less than half the step.
        let shortest = schedule(&c, |n| capped_step(&c, n) / 2);
        let longest = schedule(&c, |n| capped_step(&c, n));
        let day = 24.0 * 3600.0;
        let last_short = *shortest.last().unwrap();
        let last_long = *longest.last().unwrap();
        assert!(last_short >= day, "last attempt after {last_short} s");
        assert!(last_long <= 2.5 * day, "last attempt after {last_long} s");
        // And with real draws: the item is still alive a day after the first attempt.
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..50 {
            let drawn = schedule(&c, |n| backoff(&c, n, &mut rng));
            assert!(*drawn.last().unwrap() >= day);
        }
    }

    #[test]
    fn a_ten_minute_outage_does_not_kill_an_item_under_the_default_policy() {
        let c = RetryConfig::default();
        let outage = 600.0;
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..50 {
            let at = schedule(&c, |n| backoff(&c, n, &mut rng));
            // Every attempt inside the outage fails; the next one is not the last
            // and it comes no later than one capped step after the app is back.
            let failed = at.iter().filter(|&&t| t < outage).count();
            assert!(failed < at.len(), "dead inside a 10-minute outage");
            let next = at[failed];
            assert!(
                next - outage <= c.max_backoff.as_secs_f64(),
                "next attempt {next} s"
            );
            let mut rng2 = StdRng::seed_from_u64(5);
            let attempts_done = u32::try_from(failed).unwrap();
            assert!(matches!(
                verdict(&c, attempts_done, &mut rng2),
                Verdict::Retry(_)
            ));
        }
    }

    /// The waits the annotated example and the README print.
    #[test]
    fn the_default_waits_are_the_documented_table() {
        let c = RetryConfig::default();
        let steps: Vec<u64> = (1..c.max_attempts)
            .map(|n| capped_step(&c, n).as_secs())
            .collect();
        let mut want = vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048];
        want.extend(std::iter::repeat_n(3600, 47));
        assert_eq!(steps, want);
        assert_eq!(c.max_attempts, 60);
    }

    #[test]
    fn dead_after_max_attempts() {
        let c = cfg(3, 1, 600);
        let mut rng = StdRng::seed_from_u64(2);
        assert!(matches!(verdict(&c, 1, &mut rng), Verdict::Retry(_)));
        assert!(matches!(verdict(&c, 2, &mut rng), Verdict::Retry(_)));
        assert_eq!(verdict(&c, 3, &mut rng), Verdict::Dead);
        assert_eq!(verdict(&c, 4, &mut rng), Verdict::Dead);
        assert_eq!(verdict(&cfg(1, 1, 600), 1, &mut rng), Verdict::Dead);
    }
}
