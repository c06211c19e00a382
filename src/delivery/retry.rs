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
