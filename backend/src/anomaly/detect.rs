//! The detection rule, apart from the database: each subject's counts in the judged
//! window against the same slot of the day on each baseline day, by robust z-score.
//!
//! Why a robust z-score (median and median absolute deviation, Iglewicz and
//! Hoaglin's modified z = 0.6745 (x − median) / MAD, flagged past 3.5 by default):
//! a subject's history holds its own outliers (an earlier incident, a busy
//! release day), and mean and standard deviation would let them widen the normal
//! range; the median and MAD ignore up to half the samples being odd. It also
//! works on the 14 samples a two-week baseline gives, where a quantile rule would
//! need far more history to place a 99th percentile. Comparing with the same slot
//! of the day keeps daytime work from looking abnormal against quiet nights. A MAD
//! below one event is taken as one, so a subject whose history is all zeros is not
//! flagged for two events; `min_events` is the floor under every count.

use std::collections::{HashMap, HashSet};

use crate::settings::AnomalySettings;

const DAY: i64 = 86_400;

/// What kind of deviation was found (the `kind` label of `portcullis_anomalies_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// More events than usual in this slot.
    RequestRate,
    /// More refusals (events with outcome `failure`) than usual.
    DenialRate,
    /// More distinct tickets touched than usual.
    DistinctTickets,
    /// More activity in off hours than on a usual whole night.
    OffHours,
    /// Activity from addresses the baseline never saw.
    NewSourceAddress,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::RequestRate,
        Kind::DenialRate,
        Kind::DistinctTickets,
        Kind::OffHours,
        Kind::NewSourceAddress,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RequestRate => "request_rate",
            Kind::DenialRate => "denial_rate",
            Kind::DistinctTickets => "distinct_tickets",
            Kind::OffHours => "off_hours",
            Kind::NewSourceAddress => "new_source_address",
        }
    }
}

/// One audit event, as the rule sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// `user.id`.
    pub subject: String,
    /// Unix seconds.
    pub at: i64,
    /// Outcome `failure`: a refusal.
    pub denied: bool,
    /// How many events it stands for: 1, or for the audit trail's summary of folded
    /// repeats (`aggregate.repeats`), the repeats it counts.
    pub weight: u32,
    pub ticket: Option<String>,
    pub source_ip: Option<String>,
}

/// A subject flagged for one kind of deviation.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub subject: String,
    pub kind: Kind,
    /// The count in the judged window.
    pub value: f64,
    /// The baseline's median and median absolute deviation.
    pub median: f64,
    pub mad: f64,
    /// The robust z-score (for new addresses: the events from them).
    pub score: f64,
}

/// Median and median absolute deviation.
fn median_mad(samples: &[f64]) -> (f64, f64) {
    fn median(v: &mut [f64]) -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }
    let mut v = samples.to_vec();
    let m = median(&mut v);
    let mut dev: Vec<f64> = samples.iter().map(|s| (s - m).abs()).collect();
    (m, median(&mut dev))
}

/// The modified z-score of `x`, with the MAD floored at one event.
pub fn robust_z(x: f64, samples: &[f64]) -> (f64, f64, f64) {
    let (median, mad) = median_mad(samples);
    (median, mad, 0.6745 * (x - median) / mad.max(1.0))
}

/// Whether the hour of the day of `at` (UTC) is in `[start, end)`, wrapping midnight.
fn off_hours(at: i64, (start, end): (u8, u8)) -> bool {
    let hour = u8::try_from(at.rem_euclid(DAY) / 3600).unwrap_or(0);
    if start <= end {
        (start..end).contains(&hour)
    } else {
        hour >= start || hour < end
    }
}

/// One subject's counts: slot 0 is the judged window, slot k the same window k days
/// earlier; `nights[d]` the off-hours events of the 24 hours d days back.
#[derive(Default)]
struct Subject {
    events: Vec<f64>,
    denials: Vec<f64>,
    tickets: Vec<HashSet<String>>,
    nights: Vec<f64>,
    off_hours_now: f64,
    active_days: HashSet<i64>,
    seen_addresses: HashSet<String>,
    new_addresses: HashMap<String, u32>,
}

impl Subject {
    fn new(days: usize) -> Self {
        Self {
            events: vec![0.0; days + 1],
            denials: vec![0.0; days + 1],
            tickets: vec![HashSet::new(); days + 1],
            nights: vec![0.0; days + 1],
            ..Self::default()
        }
    }
}

/// The events the rule needs: from `now` back over the baseline and one window.
pub fn since(now: i64, s: &AnomalySettings) -> i64 {
    now - i64::from(s.baseline_days) * DAY - s.window_seconds
}

/// Every subject flagged in the window ending at `now` (Unix seconds).
pub fn detect(observations: &[Observation], now: i64, s: &AnomalySettings) -> Vec<Finding> {
    let days = s.baseline_days as usize;
    let window = s.window_seconds;
    let mut subjects: HashMap<&str, Subject> = HashMap::new();
    for o in observations {
        let delta = now - o.at;
        if delta < 0 || o.at < since(now, s) {
            continue;
        }
        let subject = subjects
            .entry(o.subject.as_str())
            .or_insert_with(|| Subject::new(days));
        let day = delta / DAY;
        // The slot: k days back, within the window's length before that moment.
        let slot = if delta <= window {
            Some(0)
        } else {
            let k = (delta - 1).div_euclid(DAY);
            (k >= 1 && delta - k * DAY <= window && k as usize <= days).then_some(k as usize)
        };
        let night = off_hours(o.at, s.off_hours);
        let weight = f64::from(o.weight);
        if slot == Some(0) {
            if night {
                subject.off_hours_now += weight;
            }
            if let Some(ip) = &o.source_ip
                && !subject.seen_addresses.contains(ip)
            {
                *subject.new_addresses.entry(ip.clone()).or_default() += o.weight;
            }
        } else {
            if day >= 1 && (day as usize) <= days {
                subject.active_days.insert(day);
                if night {
                    subject.nights[day as usize] += weight;
                }
            }
            if let Some(ip) = &o.source_ip {
                subject.seen_addresses.insert(ip.clone());
                subject.new_addresses.remove(ip);
            }
        }
        if let Some(k) = slot {
            subject.events[k] += weight;
            if o.denied {
                subject.denials[k] += weight;
            }
            if let Some(t) = &o.ticket {
                subject.tickets[k].insert(t.clone());
            }
        }
    }

    let min = f64::from(s.min_events);
    let mut findings = Vec::new();
    let mut names: Vec<&&str> = subjects.keys().collect();
    names.sort();
    for name in names {
        let sub = &subjects[*name];
        if sub.active_days.len() < s.min_baseline_days as usize {
            continue;
        }
        let tickets: Vec<f64> = sub.tickets.iter().map(|t| t.len() as f64).collect();
        let mut judge = |kind: Kind, now: f64, history: &[f64]| {
            let (median, mad, score) = robust_z(now, history);
            if now >= min && score > s.threshold {
                findings.push(Finding {
                    subject: (*name).to_owned(),
                    kind,
                    value: now,
                    median,
                    mad,
                    score,
                });
            }
        };
        judge(Kind::RequestRate, sub.events[0], &sub.events[1..]);
        judge(Kind::DenialRate, sub.denials[0], &sub.denials[1..]);
        judge(Kind::DistinctTickets, tickets[0], &tickets[1..]);
        judge(Kind::OffHours, sub.off_hours_now, &sub.nights[1..]);
        let from_new: u32 = sub.new_addresses.values().sum();
        if !sub.seen_addresses.is_empty() && f64::from(from_new) >= min {
            findings.push(Finding {
                subject: (*name).to_owned(),
                kind: Kind::NewSourceAddress,
                value: sub.new_addresses.len() as f64,
                median: 0.0,
                mad: 0.0,
                score: f64::from(from_new),
            });
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Midnight UTC of some day.
    const TODAY: i64 = 1_796_428_800 - 1_796_428_800 % DAY;

    fn settings() -> AnomalySettings {
        AnomalySettings::default()
    }

    /// Office hours, every day of the baseline and today up to `until`: three events an
    /// hour from 09:00 to 17:00 from the subject's office address, tickets of its own,
    /// one refusal a day at 11:15.
    fn normal_history(subject: &str, until: i64) -> Vec<Observation> {
        let mut out = Vec::new();
        for day in -15..=0 {
            for hour in 9..17 {
                for minute in [5, 25, 45] {
                    let at = TODAY + day * DAY + hour * 3600 + minute * 60;
                    if at > until {
                        continue;
                    }
                    out.push(Observation {
                        subject: subject.to_owned(),
                        at,
                        denied: hour == 11 && minute == 5,
                        weight: 1,
                        ticket: Some(format!("TCK-{subject}-{}", (hour + minute) % 4)),
                        source_ip: Some(format!("10.0.0.{subject}")),
                    });
                }
            }
        }
        out
    }

    fn everyone(until: i64) -> Vec<Observation> {
        ["7", "8", "9"]
            .iter()
            .flat_map(|s| normal_history(s, until))
            .collect()
    }

    #[test]
    fn a_day_of_normal_traffic_flags_nothing() {
        for hour in 0..24 {
            for minute in [0, 30] {
                let now = TODAY + hour * 3600 + minute * 60;
                let found = detect(&everyone(now), now, &settings());
                assert!(found.is_empty(), "at {hour}:{minute:02}: {found:#?}");
            }
        }
    }

    #[test]
    fn an_account_hammering_denied_routes_at_3_am_from_a_new_address_is_flagged() {
        let now = TODAY + 3 * 3600 + 40 * 60;
        let mut seen = everyone(now);
        for i in 0..60 {
            seen.push(Observation {
                subject: "7".into(),
                at: TODAY + 3 * 3600 + i * 30,
                denied: true,
                weight: 1,
                ticket: Some(format!("TCK-2026-{i:06}")),
                source_ip: Some("198.51.100.9".into()),
            });
        }
        let found = detect(&seen, now, &settings());
        let kinds: HashSet<Kind> = found.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, Kind::ALL.into_iter().collect(), "{found:#?}");
        assert!(found.iter().all(|f| f.subject == "7"), "{found:#?}");
        let denials = found.iter().find(|f| f.kind == Kind::DenialRate).unwrap();
        assert_eq!((denials.value, denials.median), (60.0, 0.0));
        assert!(denials.score > 3.5);
    }

    #[test]
    fn a_busy_but_usual_day_and_a_new_account_are_not_flagged() {
        // A few more events than usual, from the usual place, stay in the normal range.
        let now = TODAY + 14 * 3600;
        let mut seen = everyone(now);
        for minute in [10, 50] {
            seen.push(Observation {
                subject: "8".into(),
                at: now - minute * 60,
                denied: false,
                weight: 1,
                ticket: Some("TCK-8-1".into()),
                source_ip: Some("10.0.0.8".into()),
            });
        }
        // Someone new: no history to deviate from (min_baseline_days).
        for i in 0..50 {
            seen.push(Observation {
                subject: "new".into(),
                at: now - i * 60,
                denied: true,
                weight: 1,
                ticket: None,
                source_ip: Some("192.0.2.1".into()),
            });
        }
        assert!(detect(&seen, now, &settings()).is_empty());
        // Judged against an empty history when the configuration says so.
        let s = AnomalySettings {
            min_baseline_days: 0,
            ..settings()
        };
        let found = detect(&seen, now, &s);
        assert!(
            found
                .iter()
                .any(|f| f.subject == "new" && f.kind == Kind::DenialRate),
            "{found:#?}"
        );
    }

    #[test]
    fn a_summary_of_folded_repeats_counts_as_its_repeats() {
        let now = TODAY + 3 * 3600 + 40 * 60;
        let mut seen = everyone(now);
        for (at, weight) in [(TODAY + 3 * 3600, 1), (TODAY + 3 * 3600 + 60, 59)] {
            seen.push(Observation {
                subject: "9".into(),
                at,
                denied: true,
                weight,
                ticket: None,
                source_ip: Some("10.0.0.9".into()),
            });
        }
        let found = detect(&seen, now, &settings());
        let denials = found.iter().find(|f| f.kind == Kind::DenialRate).unwrap();
        assert_eq!(denials.value, 60.0);
    }

    #[test]
    fn the_robust_score_ignores_one_odd_day() {
        let mut history = vec![20.0; 13];
        history.push(400.0);
        let (median, mad, z) = robust_z(24.0, &history);
        assert_eq!((median, mad), (20.0, 0.0));
        assert!(z < 3.5, "{z}");
        assert!(robust_z(60.0, &history).2 > 3.5);
    }

    #[test]
    fn off_hours_wrap_midnight() {
        assert!(off_hours(TODAY + 23 * 3600, (22, 6)));
        assert!(off_hours(TODAY + 3 * 3600, (22, 6)));
        assert!(!off_hours(TODAY + 6 * 3600, (22, 6)));
        assert!(off_hours(TODAY + 13 * 3600, (12, 14)));
        assert!(!off_hours(TODAY + 14 * 3600, (12, 14)));
    }
}
