//! The Generic Cell Rate Algorithm, in integer microseconds.
//!
//! State per key is one number, the theoretical arrival time (TAT). With
//! emission interval `T` (period / requests, rounded up) and capacity
//! `C = T × burst`, a request at `now` is allowed when
//! `max(TAT, now) + T − now ≤ C`, and then `TAT := max(TAT, now) + T`.
//! A denied request leaves the state alone. In any window of length `t`, at
//! most `burst + ⌊t / T⌋` requests are allowed. The Redis Lua script mirrors
//! this function line by line.

use std::time::Duration;

use super::{RateLimit, Verdict};

/// The outcome of one GCRA step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    pub allowed: bool,
    /// The TAT to store (unchanged when denied).
    pub tat: u64,
    /// Further requests allowed right now.
    pub remaining: u32,
    /// Time until the key is back to a full burst.
    pub reset_after_us: u64,
    /// When denied: time until the same request would be allowed.
    pub retry_after_us: u64,
}

/// One request at `now` against stored state `tat` (`None` for a fresh key).
pub(crate) fn step(tat: Option<u64>, now: u64, limit: &RateLimit) -> Step {
    let interval = limit.interval_us;
    let capacity = limit.capacity_us();
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat.saturating_add(interval);
    let diff = new_tat - now;
    if diff > capacity {
        Step {
            allowed: false,
            tat,
            remaining: 0,
            reset_after_us: tat - now,
            retry_after_us: diff - capacity,
        }
    } else {
        Step {
            allowed: true,
            tat: new_tat,
            remaining: u32::try_from((capacity - diff) / interval).unwrap_or(u32::MAX),
            reset_after_us: diff,
            retry_after_us: 0,
        }
    }
}

impl Verdict {
    /// The verdict for one GCRA step against `limit`.
    pub(crate) fn from_step(limit: &RateLimit, step: Step) -> Self {
        Self {
            allowed: step.allowed,
            limit: limit.burst,
            remaining: step.remaining,
            reset_after: Duration::from_micros(step.reset_after_us),
            retry_after: (!step.allowed).then(|| Duration::from_micros(step.retry_after_us)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limit(requests: u32, period_seconds: u64, burst: u32) -> RateLimit {
        RateLimit::try_new(requests, period_seconds, burst).unwrap()
    }

    /// Runs arrivals through GCRA; returns each arrival's step.
    fn run(limit: &RateLimit, arrivals: &[u64]) -> Vec<Step> {
        let mut tat = None;
        arrivals
            .iter()
            .map(|&now| {
                let s = step(tat, now, limit);
                if s.allowed {
                    tat = Some(s.tat);
                }
                s
            })
            .collect()
    }

    #[test]
    fn burst_then_rate() {
        let l = limit(10, 1, 3); // T = 100 ms, burst 3
        let steps = run(&l, &[0, 0, 0, 0, 100_000, 100_000]);
        let allowed: Vec<bool> = steps.iter().map(|s| s.allowed).collect();
        assert_eq!(allowed, vec![true, true, true, false, true, false]);
        assert_eq!(
            steps.iter().map(|s| s.remaining).collect::<Vec<_>>(),
            vec![2, 1, 0, 0, 0, 0]
        );
        assert_eq!(steps[3].retry_after_us, 100_000);
        assert_eq!(steps[3].reset_after_us, 300_000);
        assert_eq!(steps[0].reset_after_us, 100_000);
    }

    fn arb_limit() -> impl Strategy<Value = RateLimit> {
        (1u32..=50, 1u64..=10, 1u32..=20).prop_map(|(r, p, b)| limit(r, p, b))
    }

    /// Sorted arrival times within 30 s, clustered so that bursts happen.
    fn arb_arrivals() -> impl Strategy<Value = Vec<u64>> {
        prop::collection::vec((0u64..30_000_000, 0u64..4), 1..300).prop_map(|v| {
            let mut times: Vec<u64> = v
                .into_iter()
                .flat_map(|(t, repeat)| std::iter::repeat_n(t, repeat as usize + 1))
                .collect();
            times.sort_unstable();
            times
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Never more than burst + rate × t requests in any window t.
        #[test]
        fn window_bound(limit in arb_limit(), arrivals in arb_arrivals()) {
            let steps = run(&limit, &arrivals);
            let allowed: Vec<u64> = arrivals
                .iter()
                .zip(&steps)
                .filter(|(_, s)| s.allowed)
                .map(|(t, _)| *t)
                .collect();
            let period_us = limit.period().as_micros() as u64;
            for i in 0..allowed.len() {
                for j in i..allowed.len() {
                    let window = allowed[j] - allowed[i];
                    let count = (j - i + 1) as u64;
                    let bound = u64::from(limit.burst())
                        + window * u64::from(limit.requests_per_period()) / period_us;
                    prop_assert!(count <= bound, "{count} > {bound} in {window} µs");
                }
            }
        }

        /// A client that keeps to the rate is never refused.
        #[test]
        fn steady_client_never_refused(
            limit in arb_limit(),
            start in 0u64..1_000_000_000,
            slack in 0u64..1_000,
            n in 1usize..200,
        ) {
            let spacing = limit.interval_us + slack;
            let arrivals: Vec<u64> = (0..n as u64).map(|i| start + i * spacing).collect();
            prop_assert!(run(&limit, &arrivals).iter().all(|s| s.allowed));
        }

        /// Retrying after `retry_after` succeeds, and not a microsecond sooner.
        #[test]
        fn retry_after_is_honest(limit in arb_limit(), arrivals in arb_arrivals()) {
            let mut tat = None;
            for now in arrivals {
                let s = step(tat, now, &limit);
                if s.allowed {
                    tat = Some(s.tat);
                    continue;
                }
                prop_assert!(s.retry_after_us > 0);
                let later = now + s.retry_after_us;
                prop_assert!(step(tat, later, &limit).allowed);
                prop_assert!(!step(tat, later - 1, &limit).allowed);
            }
        }

        /// `remaining` counts exactly the further requests allowed now.
        #[test]
        fn remaining_is_exact(limit in arb_limit(), arrivals in arb_arrivals()) {
            let mut tat = None;
            for now in arrivals {
                let s = step(tat, now, &limit);
                if !s.allowed {
                    continue;
                }
                tat = Some(s.tat);
                let mut probe = Some(s.tat);
                for _ in 0..s.remaining {
                    let p = step(probe, now, &limit);
                    prop_assert!(p.allowed);
                    probe = Some(p.tat);
                }
                prop_assert!(!step(probe, now, &limit).allowed);
            }
        }
    }
}
