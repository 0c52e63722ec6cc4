//! Retention planning with restic's `forget` (0.16+) semantics (DESIGN.md §5).
//!
//! [`plan`] takes a container's snapshots, a [`Policy`], the names that safety
//! rule 6 protects and the local time zone, and returns one [`Decision`] per
//! snapshot saying whether to keep it and every rule that kept it. It is pure:
//! it never reads the clock, the disk or the environment, and it never deletes
//! anything. The executor in `prune` walks the plan.
//!
//! The semantics follow restic's `ApplyPolicy` (`internal/data/snapshot_policy.go`):
//!
//! * Snapshots are sorted newest first. restic uses a stable sort, so ties keep
//!   the order the repository listed them in; we have no listing order, so ties
//!   are broken by name, ascending (the same result restic gives for a backend
//!   that lists snapshots sorted by id). The result never depends on the order
//!   of the input slice.
//! * `keep_last N` keeps the N newest.
//! * `keep_hourly|daily|weekly|monthly|yearly N` walk newest to oldest and keep
//!   a snapshot when its bucket (wall-clock time in `tz`; weeks are ISO weeks,
//!   keyed by ISO year) differs from the bucket the rule last kept and the rule
//!   still has count left (`-1`: unlimited), then count down.
//! * When the walk reaches the oldest snapshot and a rule still has count left,
//!   that rule keeps the oldest snapshot too, even if its bucket was already
//!   kept. restic labels this "oldest daily snapshot"; here the rule appears in
//!   [`Decision::reasons`] and also in [`Decision::oldest`].
//! * `keep_within D` keeps every snapshot strictly newer than the newest
//!   snapshot's time minus D, where years, months and days are subtracted on the
//!   local calendar with Go's `AddDate` normalisation (2024-03-31 minus one
//!   month is 2024-03-02) and hours are subtracted as elapsed time.
//! * Rules are OR-ed. On top (safety rule 6) the newest snapshot is always kept
//!   ([`Rule::Newest`]) and so is every snapshot named in `protected`
//!   ([`Rule::Protected`]).
//!
//! One deliberate difference: restic measures `keep_within` from the newest
//! snapshot that is not in the future. The planner has no clock, so it measures
//! from the newest snapshot given; a caller that distrusts clock skew filters
//! future snapshots out before planning.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone, Timelike, Utc,
};

/// The count that means "no limit" for the `keep_*` counts.
pub const UNLIMITED: i64 = -1;

/// Errors from validating a policy, parsing a duration or planning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// All counts are 0 and there is no `keep_within`: pruning would delete everything.
    #[error("policy keeps nothing: set at least one keep_* count or keep_within")]
    KeepsNothing,
    /// A count below -1.
    #[error("{key} = {value} is invalid: use a count of 0 or more, or -1 for unlimited")]
    NegativeCount { key: &'static str, value: i64 },
    /// A `keep_within` duration that does not parse.
    #[error("invalid keep_within duration {input:?}: {problem}")]
    InvalidWithin {
        input: String,
        problem: WithinProblem,
    },
    /// Two snapshots with the same name: the order between them would be undefined.
    #[error("snapshot name {name:?} appears more than once")]
    DuplicateSnapshot { name: String },
}

/// What is wrong with a `keep_within` duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WithinProblem {
    #[error("it is empty; write e.g. \"7d\" or \"1y2m3d4h\"")]
    Empty,
    #[error("expected a number at {rest:?}")]
    MissingNumber { rest: String },
    #[error("negative values are not allowed")]
    Negative,
    #[error("number {digits} is too large")]
    TooLarge { digits: String },
    #[error("no unit after number {number}; units are y, m (months), d and h")]
    MissingUnit { number: u32 },
    #[error("unknown unit {unit:?} after number {number}; units are y, m (months), d and h")]
    UnknownUnit { unit: char, number: u32 },
    #[error("unit {unit:?} is given more than once")]
    DuplicateUnit { unit: char },
}

/// A `keep_within` duration in restic's calendar units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Within {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl Within {
    /// A zero duration switches `keep_within` off, as in restic.
    pub fn is_zero(&self) -> bool {
        *self == Within::default()
    }
}

impl fmt::Display for Within {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0h");
        }
        for (value, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if value != 0 {
                write!(f, "{value}{unit}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for Within {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_within(s)
    }
}

/// Parses restic's duration syntax: `<n>y`, `<n>m` (months), `<n>d`, `<n>h`,
/// each optional, in any order, e.g. `1y2m3d4h` or `36h`.
///
/// Stricter than restic on purpose: an empty string, a negative number or a
/// repeated unit is an error (restic reads "" as zero, rejects negatives only
/// later in `forget`, and lets a repeated unit silently override).
pub fn parse_within(s: &str) -> Result<Within, PolicyError> {
    let fail = |problem| PolicyError::InvalidWithin {
        input: s.to_owned(),
        problem,
    };
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(fail(WithinProblem::Empty));
    }
    let mut within = Within::default();
    let mut seen = BTreeSet::new();
    while !rest.is_empty() {
        if rest.starts_with('-') {
            return Err(fail(WithinProblem::Negative));
        }
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let digits = &rest[..end];
        if digits.is_empty() {
            return Err(fail(WithinProblem::MissingNumber {
                rest: rest.to_owned(),
            }));
        }
        let number: u32 = digits.parse().map_err(|_| {
            fail(WithinProblem::TooLarge {
                digits: digits.to_owned(),
            })
        })?;
        let mut after = rest[end..].chars();
        let unit = after
            .next()
            .ok_or_else(|| fail(WithinProblem::MissingUnit { number }))?;
        let slot = match unit {
            'y' => &mut within.years,
            'm' => &mut within.months,
            'd' => &mut within.days,
            'h' => &mut within.hours,
            other => {
                return Err(fail(WithinProblem::UnknownUnit {
                    unit: other,
                    number,
                }))
            }
        };
        if !seen.insert(unit) {
            return Err(fail(WithinProblem::DuplicateUnit { unit }));
        }
        *slot = number;
        rest = after.as_str();
    }
    Ok(within)
}

/// A retention policy. Counts: `-1` ([`UNLIMITED`]) keeps every bucket, `0`
/// switches the rule off. The `Default` policy keeps nothing and is invalid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub keep_last: i64,
    pub keep_hourly: i64,
    pub keep_daily: i64,
    pub keep_weekly: i64,
    pub keep_monthly: i64,
    pub keep_yearly: i64,
    pub keep_within: Option<Within>,
}

impl Policy {
    /// Rejects counts below -1 (naming the key) and a policy that keeps nothing.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for (key, value) in self.counts() {
            if value < UNLIMITED {
                return Err(PolicyError::NegativeCount { key, value });
            }
        }
        let any_count = self.counts().iter().any(|&(_, value)| value != 0);
        let any_within = self.keep_within.is_some_and(|w| !w.is_zero());
        if any_count || any_within {
            Ok(())
        } else {
            Err(PolicyError::KeepsNothing)
        }
    }

    fn counts(&self) -> [(&'static str, i64); 6] {
        [
            ("keep_last", self.keep_last),
            ("keep_hourly", self.keep_hourly),
            ("keep_daily", self.keep_daily),
            ("keep_weekly", self.keep_weekly),
            ("keep_monthly", self.keep_monthly),
            ("keep_yearly", self.keep_yearly),
        ]
    }
}

/// One snapshot of one container, as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snap<'a> {
    pub name: &'a str,
    pub time: DateTime<Utc>,
}

/// Why a snapshot is kept. Ordered as the reasons appear in a [`Decision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
    Within,
    Newest,
    Protected,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::Last => "last",
            Rule::Hourly => "hourly",
            Rule::Daily => "daily",
            Rule::Weekly => "weekly",
            Rule::Monthly => "monthly",
            Rule::Yearly => "yearly",
            Rule::Within => "within",
            Rule::Newest => "newest (never deleted)",
            Rule::Protected => "protected (parent of newest backup)",
        })
    }
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'a> {
    pub name: &'a str,
    pub time: DateTime<Utc>,
    pub keep: bool,
    /// Every rule that kept the snapshot, in [`Rule`] order; empty when deleted.
    pub reasons: Vec<Rule>,
    /// The bucket rules in `reasons` that kept this snapshot only because it
    /// is the oldest and they had count left (restic's "oldest daily snapshot").
    pub oldest: Vec<Rule>,
}

/// How a counted rule groups snapshots.
#[derive(Debug, Clone, Copy)]
enum Bucket {
    /// Every snapshot is its own bucket (`keep_last`).
    Each,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Bucket {
    /// A key that is equal exactly when two snapshots share the bucket.
    fn key(self, index: usize, local: &NaiveDateTime) -> i64 {
        let year = i64::from(local.year());
        let month = i64::from(local.month());
        let day = i64::from(local.day());
        match self {
            // A slice holds at most isize::MAX elements, so the index always
            // fits; the fallback is unreachable.
            Bucket::Each => i64::try_from(index).unwrap_or(i64::MAX),
            Bucket::Hour => ((year * 100 + month) * 100 + day) * 100 + i64::from(local.hour()),
            Bucket::Day => (year * 100 + month) * 100 + day,
            Bucket::Week => {
                let week = local.iso_week();
                i64::from(week.year()) * 100 + i64::from(week.week())
            }
            Bucket::Month => year * 100 + month,
            Bucket::Year => year,
        }
    }
}

/// A counted rule while walking the snapshots.
struct Counter {
    rule: Rule,
    bucket: Bucket,
    /// Remaining count; `UNLIMITED` never runs out.
    left: i64,
    last_kept: Option<i64>,
}

impl Counter {
    fn has_left(&self) -> bool {
        self.left > 0 || self.left == UNLIMITED
    }
}

/// Plans which snapshots to keep. See the module docs for the exact rules.
///
/// `tz` is the zone whose wall clock defines hours, days, weeks, months and
/// years (the host's local zone in production). The result has one decision per
/// snapshot, newest first (ties by name, ascending).
pub fn plan<'a, Tz: TimeZone>(
    snaps: &[Snap<'a>],
    policy: &Policy,
    protected: &BTreeSet<String>,
    tz: &Tz,
) -> Result<Vec<Decision<'a>>, PolicyError> {
    policy.validate()?;
    let mut names = HashSet::with_capacity(snaps.len());
    for snap in snaps {
        if !names.insert(snap.name) {
            return Err(PolicyError::DuplicateSnapshot {
                name: snap.name.to_owned(),
            });
        }
    }

    let mut sorted = snaps.to_vec();
    sorted.sort_by(newest_first);
    let Some(newest) = sorted.first().map(|s| s.time) else {
        return Ok(Vec::new());
    };

    let mut counters: Vec<Counter> = [
        (Rule::Last, Bucket::Each, policy.keep_last),
        (Rule::Hourly, Bucket::Hour, policy.keep_hourly),
        (Rule::Daily, Bucket::Day, policy.keep_daily),
        (Rule::Weekly, Bucket::Week, policy.keep_weekly),
        (Rule::Monthly, Bucket::Month, policy.keep_monthly),
        (Rule::Yearly, Bucket::Year, policy.keep_yearly),
    ]
    .into_iter()
    .filter(|&(_, _, count)| count != 0)
    .map(|(rule, bucket, left)| Counter {
        rule,
        bucket,
        left,
        last_kept: None,
    })
    .collect();

    // `None` inside `Some`: the cutoff lies before the calendar chrono can
    // represent, so everything is within.
    let within_cutoff = policy
        .keep_within
        .filter(|w| !w.is_zero())
        .map(|w| within_cutoff(newest, &w, tz));

    let oldest_index = sorted.len() - 1;
    let mut decisions = Vec::with_capacity(sorted.len());
    for (index, snap) in sorted.iter().enumerate() {
        let local = tz.from_utc_datetime(&snap.time.naive_utc()).naive_local();
        let mut reasons = Vec::new();
        let mut oldest = Vec::new();

        for counter in counters.iter_mut().filter(|c| c.has_left()) {
            let key = counter.bucket.key(index, &local);
            let new_bucket = counter.last_kept != Some(key);
            if new_bucket || index == oldest_index {
                if !new_bucket {
                    oldest.push(counter.rule);
                }
                counter.last_kept = Some(key);
                if counter.left > 0 {
                    counter.left -= 1;
                }
                reasons.push(counter.rule);
            }
        }

        match within_cutoff {
            Some(Some(cutoff)) if snap.time > cutoff => reasons.push(Rule::Within),
            Some(None) => reasons.push(Rule::Within),
            _ => {}
        }
        if index == 0 {
            reasons.push(Rule::Newest);
        }
        if protected.contains(snap.name) {
            reasons.push(Rule::Protected);
        }

        decisions.push(Decision {
            name: snap.name,
            time: snap.time,
            keep: !reasons.is_empty(),
            reasons,
            oldest,
        });
    }
    Ok(decisions)
}

/// Newest first; equal times by name, ascending.
fn newest_first(a: &Snap<'_>, b: &Snap<'_>) -> Ordering {
    b.time.cmp(&a.time).then_with(|| a.name.cmp(b.name))
}

/// `newest` minus `within` the way restic computes it:
/// `latest.AddDate(-y, -m, -d).Add(-h hours)` in the snapshot's zone.
///
/// Go's `AddDate` rebuilds the date from unnormalised fields, so the month is
/// reduced first and surplus days roll over (2024-03-31 minus 1m is "2024-02-31",
/// i.e. 2024-03-02), and the wall-clock time of day is kept across DST changes.
/// Returns `None` when the result falls outside chrono's calendar.
fn within_cutoff<Tz: TimeZone>(
    newest: DateTime<Utc>,
    within: &Within,
    tz: &Tz,
) -> Option<DateTime<Utc>> {
    let local = tz.from_utc_datetime(&newest.naive_utc()).naive_local();
    let months = i64::from(local.year()) * 12 + i64::from(local.month0())
        - i64::from(within.years) * 12
        - i64::from(within.months);
    let year = i32::try_from(months.div_euclid(12)).ok()?;
    let month = u32::try_from(months.rem_euclid(12) + 1).ok()?;
    let first = NaiveDate::from_ymd_opt(year, month, 1)?;
    let day_offset = i64::from(local.day()) - 1 - i64::from(within.days);
    let date = first.checked_add_signed(TimeDelta::try_days(day_offset)?)?;
    let instant = local_to_utc_like_go(&date.and_time(local.time()), tz)?;
    instant.checked_sub_signed(TimeDelta::try_hours(i64::from(within.hours))?)
}

/// Resolves a wall-clock time to an instant as Go's `time.Date` does, so that
/// times in a DST gap or overlap land where restic puts them: take the offset in
/// force at the instant whose UTC reading equals the wall clock; if that offset
/// does not hold at the resulting instant, use the offset that does.
/// (In Europe/Berlin both a skipped and a repeated 02:30 resolve with +01:00.)
fn local_to_utc_like_go<Tz: TimeZone>(local: &NaiveDateTime, tz: &Tz) -> Option<DateTime<Utc>> {
    let seconds =
        |offset: &Tz::Offset| TimeDelta::try_seconds(i64::from(offset.fix().local_minus_utc()));
    let guess = tz.offset_from_utc_datetime(local);
    let utc = local.checked_sub_signed(seconds(&guess)?)?;
    let actual = tz.offset_from_utc_datetime(&utc);
    let utc = if actual.fix() == guess.fix() {
        utc
    } else {
        local.checked_sub_signed(seconds(&actual)?)?
    };
    Some(Utc.from_utc_datetime(&utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, LocalResult, Weekday};

    /// Europe/Berlin's current rules, without a tz database: CET (+01:00), and
    /// CEST (+02:00) from the last Sunday of March to the last Sunday of
    /// October, switching at 01:00 UTC.
    #[derive(Debug, Clone, Copy)]
    struct Berlin;

    fn last_sunday(year: i32, month: u32) -> NaiveDate {
        let mut day = NaiveDate::from_ymd_opt(year, month + 1, 1).unwrap() - TimeDelta::days(1);
        while day.weekday() != Weekday::Sun {
            day -= TimeDelta::days(1);
        }
        day
    }

    impl Berlin {
        fn cet() -> FixedOffset {
            FixedOffset::east_opt(3600).unwrap()
        }
        fn cest() -> FixedOffset {
            FixedOffset::east_opt(7200).unwrap()
        }
    }

    impl TimeZone for Berlin {
        type Offset = FixedOffset;

        fn from_offset(_: &FixedOffset) -> Self {
            Berlin
        }

        fn offset_from_local_date(&self, local: &NaiveDate) -> LocalResult<FixedOffset> {
            self.offset_from_local_datetime(&local.and_hms_opt(0, 0, 0).unwrap())
        }

        fn offset_from_local_datetime(&self, local: &NaiveDateTime) -> LocalResult<FixedOffset> {
            let valid: Vec<FixedOffset> = [Berlin::cest(), Berlin::cet()]
                .into_iter()
                .filter(|off| {
                    let utc = *local - TimeDelta::seconds(off.local_minus_utc().into());
                    self.offset_from_utc_datetime(&utc) == *off
                })
                .collect();
            match valid.as_slice() {
                [] => LocalResult::None,
                [one] => LocalResult::Single(*one),
                [earlier, later] => LocalResult::Ambiguous(*earlier, *later),
                _ => unreachable!(),
            }
        }

        fn offset_from_utc_date(&self, utc: &NaiveDate) -> FixedOffset {
            self.offset_from_utc_datetime(&utc.and_hms_opt(0, 0, 0).unwrap())
        }

        fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> FixedOffset {
            let year = utc.year();
            let start = last_sunday(year, 3).and_hms_opt(1, 0, 0).unwrap();
            let end = last_sunday(year, 10).and_hms_opt(1, 0, 0).unwrap();
            if *utc >= start && *utc < end {
                Berlin::cest()
            } else {
                Berlin::cet()
            }
        }
    }

    /// "2024-12-30 10:00" read as UTC.
    fn utc(s: &str) -> DateTime<Utc> {
        let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
            .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S"))
            .unwrap_or_else(|e| panic!("bad test time {s:?}: {e}"));
        Utc.from_utc_datetime(&naive)
    }

    /// Builds snapshots from (name, UTC time) pairs.
    fn snaps<'a>(list: &[(&'a str, &str)]) -> Vec<Snap<'a>> {
        list.iter()
            .map(|&(name, time)| Snap {
                name,
                time: utc(time),
            })
            .collect()
    }

    fn run<'a>(list: &[Snap<'a>], policy: &Policy) -> Vec<Decision<'a>> {
        plan(list, policy, &BTreeSet::new(), &Utc).expect("valid policy")
    }

    fn kept<'a>(plan: &[Decision<'a>]) -> Vec<&'a str> {
        plan.iter().filter(|d| d.keep).map(|d| d.name).collect()
    }

    fn reasons_of(plan: &[Decision<'_>], name: &str) -> Vec<Rule> {
        plan.iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("{name} not in plan"))
            .reasons
            .clone()
    }

    /// Ten days, three snapshots a day at 06:00, 12:00 and 18:00, named
    /// "dDD-HH"; input oldest first so sorting is exercised.
    fn ten_days() -> Vec<(String, DateTime<Utc>)> {
        let mut out = Vec::new();
        for day in 1..=10 {
            for hour in [6, 12, 18] {
                out.push((
                    format!("d{day:02}-{hour:02}"),
                    utc(&format!("2024-05-{day:02} {hour:02}:00")),
                ));
            }
        }
        out
    }

    fn as_snaps(owned: &[(String, DateTime<Utc>)]) -> Vec<Snap<'_>> {
        owned
            .iter()
            .map(|(name, time)| Snap { name, time: *time })
            .collect()
    }

    #[test]
    fn keep_last_keeps_the_n_newest() {
        let list = snaps(&[
            ("a", "2024-01-01 00:00"),
            ("b", "2024-01-02 00:00"),
            ("c", "2024-01-03 00:00"),
            ("d", "2024-01-04 00:00"),
            ("e", "2024-01-05 00:00"),
        ]);
        let p = run(
            &list,
            &Policy {
                keep_last: 2,
                ..Policy::default()
            },
        );
        let order: Vec<&str> = p.iter().map(|d| d.name).collect();
        assert_eq!(order, ["e", "d", "c", "b", "a"], "newest first");
        assert_eq!(kept(&p), ["e", "d"]);
        assert_eq!(reasons_of(&p, "e"), [Rule::Last, Rule::Newest]);
        assert_eq!(reasons_of(&p, "d"), [Rule::Last]);
        assert!(reasons_of(&p, "c").is_empty());
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day() {
        // Walking newest first, the first snapshot seen of each day is its
        // 18:00 one: days 10 down to 4 use up the count of 7. Nothing is left
        // for the oldest-snapshot rule, so d01-06 goes too.
        let owned = ten_days();
        let p = run(
            &as_snaps(&owned),
            &Policy {
                keep_daily: 7,
                ..Policy::default()
            },
        );
        assert_eq!(
            kept(&p),
            ["d10-18", "d09-18", "d08-18", "d07-18", "d06-18", "d05-18", "d04-18"]
        );
        assert_eq!(reasons_of(&p, "d10-18"), [Rule::Daily, Rule::Newest]);
        assert_eq!(reasons_of(&p, "d04-18"), [Rule::Daily]);
        assert_eq!(p.len(), 30);
    }

    #[test]
    fn unlimited_daily_keeps_every_day_and_the_oldest() {
        // -1 never runs out: one per day (10) plus the oldest snapshot d01-06,
        // whose day was already kept, by the oldest-snapshot rule.
        let owned = ten_days();
        let p = run(
            &as_snaps(&owned),
            &Policy {
                keep_daily: UNLIMITED,
                ..Policy::default()
            },
        );
        let mut expected: Vec<String> = (1..=10).rev().map(|d| format!("d{d:02}-18")).collect();
        expected.push("d01-06".into());
        assert_eq!(kept(&p), expected);
        let oldest = p.last().unwrap();
        assert_eq!(
            (oldest.name, &oldest.reasons, &oldest.oldest),
            ("d01-06", &vec![Rule::Daily], &vec![Rule::Daily])
        );
        assert!(
            p[1].oldest.is_empty(),
            "a normal daily keep is not 'oldest'"
        );
    }

    #[test]
    fn oldest_snapshot_is_kept_while_a_rule_has_count_left() {
        // Days 3, 2, 1 with two snapshots each; daily 5 keeps the newest of each
        // day (count 5 -> 2), then still has count left, so it keeps
        // the oldest snapshot "1a" although day 1 is already kept by "1b".
        let list = snaps(&[
            ("3b", "2024-02-03 10:00"),
            ("3a", "2024-02-03 08:00"),
            ("2b", "2024-02-02 12:00"),
            ("2a", "2024-02-02 09:00"),
            ("1b", "2024-02-01 18:00"),
            ("1a", "2024-02-01 07:00"),
        ]);
        let five = Policy {
            keep_daily: 5,
            ..Policy::default()
        };
        let p = run(&list, &five);
        assert_eq!(kept(&p), ["3b", "2b", "1b", "1a"]);
        let last = p.last().unwrap();
        assert_eq!(
            (last.reasons.as_slice(), last.oldest.as_slice()),
            (&[Rule::Daily][..], &[Rule::Daily][..])
        );

        // With exactly 3 the count runs out on "1b", so the oldest goes.
        let three = Policy {
            keep_daily: 3,
            ..Policy::default()
        };
        assert_eq!(kept(&run(&list, &three)), ["3b", "2b", "1b"]);

        // keep_last with count left keeps the oldest as an ordinary "last".
        let last_ten = Policy {
            keep_last: 10,
            ..Policy::default()
        };
        let p = run(&list, &last_ten);
        assert_eq!(kept(&p).len(), 6);
        assert!(p.iter().all(|d| d.oldest.is_empty()));
    }

    #[test]
    fn weekly_uses_iso_weeks_across_the_year_boundary() {
        // 2024-12-30 (Mon) .. 2025-01-05 (Sun) is 2025-W01; 2024-12-29 is
        // 2024-W52; 2025-01-06 starts W02. Weekly 3: W02 "jan06", W01 "jan05"
        // (its newest), W52 "dec29"; the count is then spent, so "dec28"
        // (also W52, and the oldest) goes. A calendar-year week key would
        // have split W01 and kept "dec30".
        let list = snaps(&[
            ("dec28", "2024-12-28 12:00"),
            ("dec29", "2024-12-29 12:00"),
            ("dec30", "2024-12-30 12:00"),
            ("jan01", "2025-01-01 12:00"),
            ("jan05", "2025-01-05 12:00"),
            ("jan06", "2025-01-06 12:00"),
        ]);
        let p = run(
            &list,
            &Policy {
                keep_weekly: 3,
                ..Policy::default()
            },
        );
        assert_eq!(kept(&p), ["jan06", "jan05", "dec29"]);
    }

    #[test]
    fn weekly_handles_iso_week_53() {
        // 2020-12-28 (Mon) .. 2021-01-03 (Sun) is 2020-W53; 2021-01-04 is
        // 2021-W01; 2020-12-27 is 2020-W52. Unlimited weekly keeps one per
        // week: jan04, jan03 (newest of W53), dec27 (also the oldest). dec31
        // and dec28 share W53 with jan03 and go.
        let list = snaps(&[
            ("dec27", "2020-12-27 12:00"),
            ("dec28", "2020-12-28 12:00"),
            ("dec31", "2020-12-31 12:00"),
            ("jan03", "2021-01-03 12:00"),
            ("jan04", "2021-01-04 12:00"),
        ]);
        let p = run(
            &list,
            &Policy {
                keep_weekly: UNLIMITED,
                ..Policy::default()
            },
        );
        assert_eq!(kept(&p), ["jan04", "jan03", "dec27"]);
        assert!(p.iter().all(|d| d.oldest.is_empty()), "dec27 is a new week");
    }

    #[test]
    fn monthly_keeps_the_newest_of_each_month() {
        // Monthly 3: mar25 (March), feb20 (February), jan31 (January, count
        // now 0); jan15 goes although it is the oldest.
        let list = snaps(&[
            ("jan15", "2024-01-15 12:00"),
            ("jan31", "2024-01-31 23:00"),
            ("feb01", "2024-02-01 00:30"),
            ("feb20", "2024-02-20 12:00"),
            ("mar05", "2024-03-05 12:00"),
            ("mar25", "2024-03-25 12:00"),
        ]);
        let p = run(
            &list,
            &Policy {
                keep_monthly: 3,
                ..Policy::default()
            },
        );
        assert_eq!(kept(&p), ["mar25", "feb20", "jan31"]);
        assert_eq!(reasons_of(&p, "mar25"), [Rule::Monthly, Rule::Newest]);
    }

    #[test]
    fn yearly_keeps_the_newest_of_each_year() {
        // Yearly 2: 2023 -> "2023b", 2022 -> "2022b"; 2021 would need a third.
        let list = snaps(&[
            ("2021", "2021-06-01 12:00"),
            ("2022a", "2022-01-01 12:00"),
            ("2022b", "2022-12-31 12:00"),
            ("2023a", "2023-07-01 12:00"),
            ("2023b", "2023-12-31 12:00"),
        ]);
        let two = Policy {
            keep_yearly: 2,
            ..Policy::default()
        };
        assert_eq!(kept(&run(&list, &two)), ["2023b", "2022b"]);
    }

    #[test]
    fn hourly_buckets_follow_the_local_wall_clock_in_autumn() {
        // 2026-10-25 in Berlin: 02:00-02:59 happens twice (00:xx UTC in CEST,
        // 01:xx UTC in CET). 00:30 and 01:30 UTC are both "02:30" locally, so
        // hourly keeps only the newer; in UTC all four hours differ.
        let list = snaps(&[
            ("a", "2026-10-24 23:30"), // 01:30 CEST
            ("b", "2026-10-25 00:30"), // 02:30 CEST
            ("c", "2026-10-25 01:30"), // 02:30 CET
            ("d", "2026-10-25 02:30"), // 03:30 CET
        ]);
        let hourly = Policy {
            keep_hourly: 10,
            ..Policy::default()
        };
        let p = plan(&list, &hourly, &BTreeSet::new(), &Berlin).unwrap();
        assert_eq!(kept(&p), ["d", "c", "a"]);
        assert_eq!(kept(&run(&list, &hourly)), ["d", "c", "b", "a"]);
    }

    #[test]
    fn daily_buckets_follow_the_local_date_in_spring() {
        // 2026-03-29 in Berlin: 02:00-02:59 is skipped. 22:30 UTC on the 28th
        // is 23:30 CET (day 28); 23:30 UTC is 00:30 CET (day 29); 00:30 and
        // 01:30 UTC are 01:30 CET and 03:30 CEST (day 29); 22:30 UTC on the
        // 29th is 00:30 CEST on the 30th. Daily 3: e (30th), d (29th), a (28th).
        let list = snaps(&[
            ("a", "2026-03-28 22:30"),
            ("b", "2026-03-28 23:30"),
            ("c", "2026-03-29 00:30"),
            ("d", "2026-03-29 01:30"),
            ("e", "2026-03-29 22:30"),
        ]);
        let daily = Policy {
            keep_daily: 3,
            ..Policy::default()
        };
        let p = plan(&list, &daily, &BTreeSet::new(), &Berlin).unwrap();
        assert_eq!(kept(&p), ["e", "d", "a"]);
        // In UTC, e shares day 29 with d and c, and b shares day 28 with a;
        // daily still has a count left at the end, so the oldest, a, stays too.
        assert_eq!(kept(&run(&list, &daily)), ["e", "b", "a"]);
    }

    #[test]
    fn within_counts_calendar_days_across_dst() {
        // Newest: 2026-03-29 12:00 CEST (10:00 UTC). One calendar day back is
        // 2026-03-28 12:00 CET = 11:00 UTC, only 23 hours earlier; the cutoff is
        // exclusive. In UTC the cutoff would be 2026-03-28 10:00.
        let list = snaps(&[
            ("newest", "2026-03-29 10:00"),
            ("inside", "2026-03-28 11:30"),
            ("edge", "2026-03-28 11:00"),
            ("out", "2026-03-28 10:30"),
        ]);
        let one_day = Policy {
            keep_within: Some(parse_within("1d").unwrap()),
            ..Policy::default()
        };
        let p = plan(&list, &one_day, &BTreeSet::new(), &Berlin).unwrap();
        assert_eq!(kept(&p), ["newest", "inside"]);
        assert_eq!(reasons_of(&p, "newest"), [Rule::Within, Rule::Newest]);
        assert_eq!(
            kept(&run(&list, &one_day)),
            ["newest", "inside", "edge", "out"]
        );
    }

    #[test]
    fn within_cutoff_in_a_dst_gap_or_overlap_resolves_like_go() {
        // 2026-03-30 02:30 CEST minus 1d is 2026-03-29 02:30, which does not
        // exist; Go's time.Date gives 03:30 CEST = 01:30 UTC.
        let newest = utc("2026-03-30 00:30");
        let day = Within {
            days: 1,
            ..Within::default()
        };
        assert_eq!(
            within_cutoff(newest, &day, &Berlin),
            Some(utc("2026-03-29 01:30"))
        );
        // 2026-10-26 02:30 CET minus 1d is 2026-10-25 02:30, which happens
        // twice; Go picks the CET one, 01:30 UTC.
        let newest = utc("2026-10-26 01:30");
        assert_eq!(
            within_cutoff(newest, &day, &Berlin),
            Some(utc("2026-10-25 01:30"))
        );
    }

    #[test]
    fn within_months_and_years_normalise_like_go_add_date() {
        // 2024-03-31 minus 1m = "2024-02-31" = 2024-03-02 (2024 is a leap year).
        let month = Within {
            months: 1,
            ..Within::default()
        };
        assert_eq!(
            within_cutoff(utc("2024-03-31 12:00"), &month, &Utc),
            Some(utc("2024-03-02 12:00"))
        );
        // 2024-02-29 minus 1y = "2023-02-29" = 2023-03-01.
        let year = Within {
            years: 1,
            ..Within::default()
        };
        assert_eq!(
            within_cutoff(utc("2024-02-29 06:00"), &year, &Utc),
            Some(utc("2023-03-01 06:00"))
        );
        // Days go back from the unnormalised date: 2024-03-01 minus 1m1d is
        // "2024-02-00" = 2024-01-31; hours are elapsed time afterwards.
        let mixed = parse_within("1m1d5h").unwrap();
        assert_eq!(
            within_cutoff(utc("2024-03-01 03:00"), &mixed, &Utc),
            Some(utc("2024-01-30 22:00"))
        );
        // A duration beyond chrono's calendar means "everything is within".
        let huge = Within {
            years: u32::MAX,
            ..Within::default()
        };
        assert_eq!(within_cutoff(utc("2024-03-01 03:00"), &huge, &Utc), None);
        let list = snaps(&[("new", "2024-03-01 03:00"), ("old", "1970-01-01 00:00")]);
        let p = run(
            &list,
            &Policy {
                keep_within: Some(huge),
                ..Policy::default()
            },
        );
        assert_eq!(kept(&p), ["new", "old"]);
    }

    #[test]
    fn within_and_last_are_or_ed() {
        // Within 2d of the newest (cutoff exactly 48h back, exclusive) keeps
        // t0, t1h, t1d, t47h; keep_last 2 adds nothing new (t0, t1h). t2d sits
        // on the cutoff and t3d is outside.
        let list = snaps(&[
            ("t0", "2024-06-10 12:00"),
            ("t1h", "2024-06-10 11:00"),
            ("t1d", "2024-06-09 12:00"),
            ("t47h", "2024-06-08 13:00"),
            ("t2d", "2024-06-08 12:00"),
            ("t3d", "2024-06-07 12:00"),
        ]);
        let policy = Policy {
            keep_last: 2,
            keep_within: Some(parse_within("2d").unwrap()),
            ..Policy::default()
        };
        let p = run(&list, &policy);
        assert_eq!(kept(&p), ["t0", "t1h", "t1d", "t47h"]);
        assert_eq!(
            reasons_of(&p, "t0"),
            [Rule::Last, Rule::Within, Rule::Newest]
        );
        assert_eq!(reasons_of(&p, "t1h"), [Rule::Last, Rule::Within]);
        assert_eq!(reasons_of(&p, "t1d"), [Rule::Within]);
        // The 2d window is measured from the newest snapshot, not from now:
        // the same set a year later gives the same answer.
        let shifted: Vec<Snap<'_>> = list
            .iter()
            .map(|s| Snap {
                name: s.name,
                time: s.time - TimeDelta::days(365),
            })
            .collect();
        assert_eq!(kept(&run(&shifted, &policy)), ["t0", "t1h", "t1d", "t47h"]);
    }

    #[test]
    fn protected_and_newest_survive_any_policy() {
        let list = snaps(&[
            ("old", "2024-01-01 00:00"),
            ("mid", "2024-01-02 00:00"),
            ("new", "2024-01-03 00:00"),
        ]);
        let protected: BTreeSet<String> = ["old".to_owned(), "gone".to_owned()].into();
        // keep_within 1h of the newest keeps only "new"; "old" is the parent of
        // the newest backup; "gone" is not a snapshot here and is ignored.
        let policy = Policy {
            keep_within: Some(parse_within("1h").unwrap()),
            ..Policy::default()
        };
        let p = plan(&list, &policy, &protected, &Utc).unwrap();
        assert_eq!(kept(&p), ["new", "old"]);
        assert_eq!(reasons_of(&p, "new"), [Rule::Within, Rule::Newest]);
        assert_eq!(reasons_of(&p, "old"), [Rule::Protected]);
        assert!(reasons_of(&p, "mid").is_empty());
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn ties_are_broken_by_name_whatever_the_input_order() {
        let forward = snaps(&[
            ("b", "2024-04-01 12:00"),
            ("a", "2024-04-01 12:00"),
            ("c", "2024-04-01 12:00"),
            ("older", "2024-03-31 12:00"),
        ]);
        let mut backward = forward.clone();
        backward.reverse();
        let policy = Policy {
            keep_last: 1,
            keep_daily: 2,
            ..Policy::default()
        };
        for list in [&forward, &backward] {
            let p = run(list, &policy);
            let order: Vec<&str> = p.iter().map(|d| d.name).collect();
            assert_eq!(order, ["a", "b", "c", "older"]);
            // "a" is first: last, daily (2024-04-01), newest. b and c share the
            // day; "older" is the next day's daily.
            assert_eq!(kept(&p), ["a", "older"]);
            assert_eq!(reasons_of(&p, "a"), [Rule::Last, Rule::Daily, Rule::Newest]);
        }
    }

    #[test]
    fn empty_input_plans_nothing_but_still_checks_the_policy() {
        let policy = Policy {
            keep_last: 1,
            ..Policy::default()
        };
        assert_eq!(run(&[], &policy), Vec::<Decision<'_>>::new());
        assert_eq!(
            plan(&[], &Policy::default(), &BTreeSet::new(), &Utc),
            Err(PolicyError::KeepsNothing)
        );
    }

    #[test]
    fn a_single_snapshot_is_kept() {
        let list = snaps(&[("only", "2024-07-01 08:00")]);
        let policy = Policy {
            keep_monthly: 6,
            ..Policy::default()
        };
        let p = run(&list, &policy);
        assert_eq!(p.len(), 1);
        assert!(p[0].keep);
        // Its month is new, so it is an ordinary monthly keep, not "oldest".
        assert_eq!(p[0].reasons, [Rule::Monthly, Rule::Newest]);
        assert!(p[0].oldest.is_empty());
    }

    #[test]
    fn policies_that_keep_nothing_or_have_bad_counts_are_errors() {
        assert_eq!(Policy::default().validate(), Err(PolicyError::KeepsNothing));
        let zero_within = Policy {
            keep_within: Some(parse_within("0d").unwrap()),
            ..Policy::default()
        };
        assert_eq!(zero_within.validate(), Err(PolicyError::KeepsNothing));
        let bad = Policy {
            keep_daily: 3,
            keep_weekly: -2,
            ..Policy::default()
        };
        let err = bad.validate().unwrap_err();
        assert_eq!(
            err,
            PolicyError::NegativeCount {
                key: "keep_weekly",
                value: -2
            }
        );
        assert!(err.to_string().starts_with("keep_weekly = -2"), "{err}");
        assert_eq!(
            PolicyError::KeepsNothing.to_string(),
            "policy keeps nothing: set at least one keep_* count or keep_within"
        );
        let list = snaps(&[("a", "2024-01-01 00:00")]);
        assert_eq!(
            plan(&list, &bad, &BTreeSet::new(), &Utc),
            Err(PolicyError::NegativeCount {
                key: "keep_weekly",
                value: -2
            })
        );
        let unlimited = Policy {
            keep_yearly: UNLIMITED,
            ..Policy::default()
        };
        assert_eq!(unlimited.validate(), Ok(()));
    }

    #[test]
    fn duplicate_names_are_refused() {
        let list = snaps(&[("a", "2024-01-01 00:00"), ("a", "2024-01-02 00:00")]);
        let policy = Policy {
            keep_last: 1,
            ..Policy::default()
        };
        assert_eq!(
            plan(&list, &policy, &BTreeSet::new(), &Utc),
            Err(PolicyError::DuplicateSnapshot { name: "a".into() })
        );
    }

    #[test]
    fn parse_within_reads_restic_durations() {
        let w = |years, months, days, hours| Within {
            years,
            months,
            days,
            hours,
        };
        assert_eq!(parse_within("1y2m3d4h"), Ok(w(1, 2, 3, 4)));
        assert_eq!(parse_within("2m"), Ok(w(0, 2, 0, 0)), "m is months");
        assert_eq!(parse_within(" 36h "), Ok(w(0, 0, 0, 36)));
        assert_eq!(parse_within("3d1y"), Ok(w(1, 0, 3, 0)));
        assert_eq!("7d".parse::<Within>(), Ok(w(0, 0, 7, 0)));
        assert_eq!(w(1, 0, 3, 0).to_string(), "1y3d");
        assert_eq!(Within::default().to_string(), "0h");

        let problem = |s: &str| match parse_within(s) {
            Err(PolicyError::InvalidWithin { input, problem }) => {
                assert_eq!(input, s);
                problem
            }
            other => panic!("{s:?}: expected an error, got {other:?}"),
        };
        assert_eq!(problem(""), WithinProblem::Empty);
        assert_eq!(problem("-1d"), WithinProblem::Negative);
        assert_eq!(
            problem("1x"),
            WithinProblem::UnknownUnit {
                unit: 'x',
                number: 1
            }
        );
        assert_eq!(problem("5"), WithinProblem::MissingUnit { number: 5 });
        assert_eq!(
            problem("d"),
            WithinProblem::MissingNumber { rest: "d".into() }
        );
        assert_eq!(
            problem("1d 2h"),
            WithinProblem::MissingNumber { rest: " 2h".into() }
        );
        assert_eq!(problem("1d2d"), WithinProblem::DuplicateUnit { unit: 'd' });
        assert_eq!(
            problem("99999999999y"),
            WithinProblem::TooLarge {
                digits: "99999999999".into()
            }
        );
        assert_eq!(
            parse_within("1w").unwrap_err().to_string(),
            "invalid keep_within duration \"1w\": unknown unit 'w' after number 1; \
             units are y, m (months), d and h"
        );
    }

    #[test]
    fn ten_thousand_hourly_snapshots_plan_in_one_pass() {
        // 10,000 hourly snapshots from 2020-01-01 00:00 UTC; the newest is
        // +9999h = 2021-02-20 15:00 (416 days + 15h; 2020 has 366 days).
        // hourly 24 keeps 2021-02-19 16:00 ..= 2021-02-20 15:00; daily 7 keeps
        // the latest of Feb 20 .. Feb 14, of which Feb 20 15:00 and Feb 19
        // 23:00 are already hourly keeps: 24 + 5 = 29.
        let start = utc("2020-01-01 00:00");
        let names: Vec<String> = (0..10_000).map(|i| format!("s{i:05}")).collect();
        let list: Vec<Snap<'_>> = names
            .iter()
            .enumerate()
            .map(|(i, name)| Snap {
                name,
                time: start + TimeDelta::hours(i64::try_from(i).unwrap()),
            })
            .collect();
        let policy = Policy {
            keep_hourly: 24,
            keep_daily: 7,
            ..Policy::default()
        };
        let p = run(&list, &policy);
        assert_eq!(p.len(), 10_000);
        assert_eq!(p[0].time, utc("2021-02-20 15:00"));
        let kept_times: Vec<DateTime<Utc>> = p.iter().filter(|d| d.keep).map(|d| d.time).collect();
        assert_eq!(kept_times.len(), 29);
        assert_eq!(kept_times[23], utc("2021-02-19 16:00"));
        assert_eq!(kept_times[24], utc("2021-02-18 23:00"));
        assert_eq!(kept_times[28], utc("2021-02-14 23:00"));
    }
}
