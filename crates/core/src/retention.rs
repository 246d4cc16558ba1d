//! Retention policies: which snapshots `forget` keeps, and which PostgreSQL WAL
//! segments a point-in-time-recovery (PITR) window still needs.
//!
//! Everything here is pure: no I/O, no printing. `forget` lists snapshots, calls
//! [`apply_policy`], prints the [`GroupDecision`]s (`--dry-run`) and removes the
//! snapshots marked [`Action::Remove`]. WAL pruning calls [`WalRetention::plan`] and
//! [`WalPlan::removable`].
//!
//! # Snapshot rules
//!
//! The rules are restic's `forget` rules (`internal/restic/snapshot_policy.go`), so a
//! policy that works with restic does the same thing here:
//!
//! 1. **Groups.** Snapshots are grouped by [`GroupBy`] (default: host, paths and
//!    source; restores' safety dumps always apart, which restic has no notion of) and
//!    every group is decided on its own. Within a group snapshots are
//!    sorted newest first (ties: by id, so the result does not depend on listing order).
//! 2. **Empty policy.** A policy with no rule ([`RetentionPolicy::is_empty`]) keeps
//!    everything, with the reason `policy is empty`, as restic does. The floor alone
//!    is not a rule, so [`RetentionPolicy::default()`] removes nothing.
//! 3. **Counted buckets** (`keep-last`, `keep-hourly`, `-daily`, `-weekly`, `-monthly`,
//!    `-yearly`): walking newest to oldest, a snapshot is kept when it is the first
//!    (newest) one seen in its hour / day / ISO 8601 week / month / year, until the
//!    count is used up. `keep-last` puts every snapshot in a bucket of its own. The
//!    buckets are computed in the snapshot's own UTC offset (the local time of the
//!    host that made it), not in UTC. While a count is not used up, the oldest snapshot
//!    of the group is kept too (reason `oldest daily snapshot` etc. when it shares its
//!    bucket with a newer kept one), so a young repository keeps its full history.
//!    [`UNLIMITED`] (`-1` or `unlimited` in a config file) never runs out.
//! 4. **Keep-within** (`keep-within 7d`): keeps every snapshot strictly newer than the
//!    newest snapshot of the group minus the duration. The reference is the newest
//!    snapshot that is not in the future, not "now": a host that stopped backing up
//!    keeps its last week of snapshots forever instead of losing everything after a
//!    week. (If every snapshot is in the future, everything is within.)
//! 5. **Keep-within buckets** (`keep-within-daily 30d`): among the snapshots inside the
//!    duration, keeps the newest of each hour / day / week / month / year, without a count.
//! 6. **Tags** (`keep-tag`): keeps snapshots carrying all tags of any one entry; an
//!    entry may list several tags separated by commas (`"prod,db"` needs both). An
//!    entry without tags matches untagged snapshots. Tags do not consume bucket counts.
//! 7. **Pinned** snapshots ([`Snapshot::pinned`](crate::snapshot::Snapshot::pinned)) are
//!    always kept with the reason `pinned`. They still take part in the buckets like any
//!    other snapshot.
//! 8. **Floor** (`keep-newest-min`, default 1): the newest N snapshots of every group
//!    are never removed, whatever the rules say. Restic has no floor; with the default a
//!    policy that matches nothing (a mistyped `keep-tag`, a `keep-within` shorter than
//!    the backup interval of an idle host) cannot empty a group. Set it to 0 to get
//!    restic's exact behaviour.
//!
//! Durations are restic's: `2y5m7d3h` (`y` years, `m` months, `w` weeks (our addition,
//! 7 days), `d` days, `h` hours). They are subtracted from a date the way restic does
//! it, with Go's `AddDate` normalisation: 31 March minus one month is 3 March, not
//! 28 February.
//!
//! Every snapshot's decision lists *all* the reasons that keep it, in this order:
//! pinned, tags, within, counted buckets, within buckets, floor.
//!
//! # WAL rules (PostgreSQL PITR)
//!
//! One policy covers dumps and PITR: the snapshot policy decides which base backups are
//! kept ("a year of monthlies"), [`WalRetention`] decides which archived WAL segments
//! still matter ("14 days of PITR"). A segment is kept when it is
//!
//! * between the start and stop segment (inclusive) of a kept base backup: without it
//!   that backup cannot become consistent;
//! * at or after the start segment of the newest base backup finished at or before the
//!   window start (`now - window`): replaying from that backup reaches any point inside
//!   the window. When no base backup is that old, from the oldest kept one;
//! * at or after the start segment of the newest kept base backup, even when PITR is off
//!   (zero window): a base backup in progress may be using it.
//!
//! Segments are compared on their position (log, segment), ignoring the timeline, like
//! `pg_archivecleanup`. Timeline history files (`*.history`) are never removable, nor is
//! a name that is not a WAL file name. With no kept base backup nothing is removable.
//!
//! # Errors
//!
//! Parsing (durations, counts, group-by lists, WAL names, LSNs) fails with
//! [`RetentionError`], which quotes the input it rejects. Applying a policy cannot fail.
//!
//! # Example
//!
//! ```
//! use lifeboat_core::retention::{apply_policy, GroupBy, RetentionPolicy};
//!
//! let policy: RetentionPolicy = serde_json::from_str(
//!     r#"{ "keep-daily": 7, "keep-monthly": 12, "keep-within": "2d" }"#,
//! )
//! .unwrap();
//! assert_eq!(policy.keep_newest_min, 1);
//! let group_by: GroupBy = "host,paths".parse().unwrap();
//! let decisions = apply_policy(&[], &policy, group_by);
//! assert!(decisions.is_empty());
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Days, FixedOffset, NaiveDate, TimeDelta, TimeZone, Timelike};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::blob::Id;
use crate::snapshot::{Snapshot, SnapshotEntry};

/// Why a retention input was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionError {
    #[error("invalid duration {input:?}: {reason} (expected e.g. 2y5m7d3h)")]
    InvalidDuration { input: String, reason: String },
    #[error("invalid keep count {input:?}: expected a number, -1 or \"unlimited\"")]
    InvalidCount { input: String },
    #[error(
        "invalid group-by {input:?}: unknown field {field:?} (expected host, paths, tags, source)"
    )]
    InvalidGroupBy { input: String, field: String },
    #[error("invalid WAL segment name {input:?}: expected 24 hex digits")]
    InvalidWalSegment { input: String },
    #[error("invalid LSN {input:?}: expected two hex numbers separated by '/'")]
    InvalidLsn { input: String },
    #[error("invalid WAL segment size {size}: expected a power of two from 1 MiB to 1 GiB")]
    InvalidWalSegmentSize { size: u64 },
}

// ---------------------------------------------------------------------------
// Durations and counts
// ---------------------------------------------------------------------------

/// A calendar duration like restic's: `2y5m7d3h`. Months and years are calendar
/// months and years, not fixed numbers of hours. Shown and serialized as that string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RetentionDuration {
    pub years: u32,
    pub months: u32,
    pub weeks: u32,
    pub days: u32,
    pub hours: u32,
}

impl RetentionDuration {
    /// The zero duration, meaning "rule not set" in a [`RetentionPolicy`].
    pub const ZERO: RetentionDuration = RetentionDuration {
        years: 0,
        months: 0,
        weeks: 0,
        days: 0,
        hours: 0,
    };

    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    /// `t` minus this duration, computed like Go's `t.AddDate(-y, -m, -d).Add(-h)`
    /// (what restic does): years and months first, then days with overflow carried
    /// (31 March − 1 month = 3 March), then hours, in `t`'s own offset. `None` when the
    /// result is outside the representable range (then everything is "within").
    pub fn before(&self, t: DateTime<FixedOffset>) -> Option<DateTime<FixedOffset>> {
        let local = t.naive_local();
        let months = i64::from(local.year()) * 12 + i64::from(local.month0())
            - i64::from(self.years) * 12
            - i64::from(self.months);
        let year = i32::try_from(months.div_euclid(12)).ok()?;
        let month = u32::try_from(months.rem_euclid(12)).ok()? + 1;
        let date = NaiveDate::from_ymd_opt(year, month, 1)?
            .checked_add_days(Days::new(u64::from(local.day0())))?
            .checked_sub_days(Days::new(u64::from(self.weeks) * 7 + u64::from(self.days)))?;
        let naive = date
            .and_time(local.time())
            .checked_sub_signed(TimeDelta::try_hours(i64::from(self.hours))?)?;
        t.offset().from_local_datetime(&naive).single()
    }
}

impl fmt::Display for RetentionDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0h");
        }
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.weeks, 'w'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for RetentionDuration {
    type Err = RetentionError;

    /// Parses `2y5m7d3h`: numbers each followed by one unit (`y`, `m` = month, `w`,
    /// `d`, `h`), each unit at most once, in any order.
    ///
    /// # Errors
    ///
    /// [`RetentionError::InvalidDuration`] for an empty string, a number without a unit,
    /// a unit without a number, an unknown or repeated unit, or a number above `u32::MAX`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| RetentionError::InvalidDuration {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(err("empty"));
        }
        let mut d = RetentionDuration::ZERO;
        let mut seen = String::new();
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(err("expected a number"));
            }
            let n: u32 = rest[..digits]
                .parse()
                .map_err(|_| err("number too large"))?;
            let unit = rest[digits..]
                .chars()
                .next()
                .ok_or_else(|| err("number without a unit"))?;
            if seen.contains(unit) {
                return Err(err("unit given twice"));
            }
            seen.push(unit);
            let field = match unit {
                'y' => &mut d.years,
                'm' => &mut d.months,
                'w' => &mut d.weeks,
                'd' => &mut d.days,
                'h' => &mut d.hours,
                _ => return Err(err("unknown unit")),
            };
            *field = n;
            rest = &rest[digits + unit.len_utf8()..];
        }
        Ok(d)
    }
}

impl Serialize for RetentionDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RetentionDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A keep count that never runs out (restic's `-1`, or `unlimited`).
pub const UNLIMITED: u32 = u32::MAX;

/// Parses a keep count for the command line: a number, `-1` or `unlimited`
/// (both [`UNLIMITED`]).
///
/// # Errors
///
/// [`RetentionError::InvalidCount`] for anything else.
pub fn parse_keep_count(s: &str) -> Result<u32, RetentionError> {
    match s.trim() {
        "-1" | "unlimited" => Ok(UNLIMITED),
        t => t.parse().map_err(|_| RetentionError::InvalidCount {
            input: s.to_string(),
        }),
    }
}

/// Serde for keep counts: a number, `-1` or `"unlimited"`; [`UNLIMITED`] is written back
/// as `"unlimited"`.
mod keep_count {
    use super::{parse_keep_count, UNLIMITED};
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer>(n: &u32, s: S) -> Result<S::Ok, S::Error> {
        if *n == UNLIMITED {
            s.serialize_str("unlimited")
        } else {
            s.serialize_u32(*n)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        struct CountVisitor;
        impl Visitor<'_> for CountVisitor {
            type Value = u32;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a keep count: a non-negative number, -1 or \"unlimited\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
                u32::try_from(v).map_err(|_| E::custom(format!("keep count {v} is too large")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
                match v {
                    -1 => Ok(UNLIMITED),
                    v if v < 0 => Err(E::custom(format!(
                        "invalid keep count {v}: only -1 (unlimited) may be negative"
                    ))),
                    v => self.visit_u64(v.unsigned_abs()),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
                parse_keep_count(v).map_err(E::custom)
            }
        }
        d.deserialize_any(CountVisitor)
    }
}

fn is_zero_count(n: &u32) -> bool {
    *n == 0
}

fn default_keep_newest_min() -> u32 {
    1
}

// ---------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------

/// Which snapshots to keep. Maps onto a config file section with kebab-case keys
/// (`keep-daily = 7`, `keep-within = "2d"`), the same names as the `forget` flags;
/// unknown keys are rejected so a typo cannot silently drop a rule. A count of 0 or a
/// zero duration means "rule not set".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Keep the newest N snapshots.
    #[serde(with = "keep_count", skip_serializing_if = "is_zero_count")]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[serde(with = "keep_count", skip_serializing_if = "is_zero_count")]
    pub keep_hourly: u32,
    #[serde(with = "keep_count", skip_serializing_if = "is_zero_count")]
    pub keep_daily: u32,
    /// ISO 8601 weeks (Monday to Sunday, week-numbering year).
    #[serde(with = "keep_count", skip_serializing_if = "is_zero_count")]
    pub keep_weekly: u32,
    #[serde(with = "keep_count", skip_serializing_if = "is_zero_count")]
    pub keep_monthly: u32,
    #[serde(with = "keep_count", skip_serializing_if = "is_zero_count")]
    pub keep_yearly: u32,
    /// Keep everything newer than the group's newest snapshot minus this.
    #[serde(skip_serializing_if = "RetentionDuration::is_zero")]
    pub keep_within: RetentionDuration,
    #[serde(skip_serializing_if = "RetentionDuration::is_zero")]
    pub keep_within_hourly: RetentionDuration,
    #[serde(skip_serializing_if = "RetentionDuration::is_zero")]
    pub keep_within_daily: RetentionDuration,
    #[serde(skip_serializing_if = "RetentionDuration::is_zero")]
    pub keep_within_weekly: RetentionDuration,
    #[serde(skip_serializing_if = "RetentionDuration::is_zero")]
    pub keep_within_monthly: RetentionDuration,
    #[serde(skip_serializing_if = "RetentionDuration::is_zero")]
    pub keep_within_yearly: RetentionDuration,
    /// Keep snapshots carrying all tags of any entry; `"a,b"` needs both `a` and `b`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keep_tags: Vec<String>,
    /// Never remove the newest N snapshots of a group (default 1; 0 = restic's behaviour).
    #[serde(default = "default_keep_newest_min")]
    pub keep_newest_min: u32,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            keep_last: 0,
            keep_hourly: 0,
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
            keep_yearly: 0,
            keep_within: RetentionDuration::ZERO,
            keep_within_hourly: RetentionDuration::ZERO,
            keep_within_daily: RetentionDuration::ZERO,
            keep_within_weekly: RetentionDuration::ZERO,
            keep_within_monthly: RetentionDuration::ZERO,
            keep_within_yearly: RetentionDuration::ZERO,
            keep_tags: Vec::new(),
            keep_newest_min: default_keep_newest_min(),
        }
    }
}

impl RetentionPolicy {
    /// True when no keep rule is set. The floor does not count: an empty policy keeps
    /// everything, so `forget` without rules is harmless.
    pub fn is_empty(&self) -> bool {
        self.counts().iter().all(|(_, n)| *n == 0)
            && self.within_buckets().iter().all(|(_, d)| d.is_zero())
            && self.keep_within.is_zero()
            && self.keep_tags.is_empty()
    }

    fn counts(&self) -> [(BucketKind, u32); 6] {
        [
            (BucketKind::Last, self.keep_last),
            (BucketKind::Hourly, self.keep_hourly),
            (BucketKind::Daily, self.keep_daily),
            (BucketKind::Weekly, self.keep_weekly),
            (BucketKind::Monthly, self.keep_monthly),
            (BucketKind::Yearly, self.keep_yearly),
        ]
    }

    fn within_buckets(&self) -> [(BucketKind, RetentionDuration); 5] {
        [
            (BucketKind::Hourly, self.keep_within_hourly),
            (BucketKind::Daily, self.keep_within_daily),
            (BucketKind::Weekly, self.keep_within_weekly),
            (BucketKind::Monthly, self.keep_within_monthly),
            (BucketKind::Yearly, self.keep_within_yearly),
        ]
    }
}

/// Describes the policy in words, for "Applying policy: ..." lines, e.g.
/// `keep 7 daily, 12 monthly snapshots, all snapshots within 2d of the newest, never
/// fewer than the newest 1`.
impl fmt::Display for RetentionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("keep all snapshots (empty policy)");
        }
        let mut parts = Vec::new();
        let counts: Vec<String> = self
            .counts()
            .iter()
            .filter(|(_, n)| *n != 0)
            .map(|(kind, n)| {
                let name = if *kind == BucketKind::Last {
                    "latest"
                } else {
                    kind.name()
                };
                if *n == UNLIMITED {
                    format!("all {name}")
                } else {
                    format!("{n} {name}")
                }
            })
            .collect();
        if !counts.is_empty() {
            parts.push(format!("{} snapshots", counts.join(", ")));
        }
        for (kind, d) in self.within_buckets() {
            if !d.is_zero() {
                parts.push(format!("{} snapshots within {d}", kind.name()));
            }
        }
        if !self.keep_tags.is_empty() {
            let tags: Vec<String> = self.keep_tags.iter().map(|t| format!("[{t}]")).collect();
            parts.push(format!("all snapshots with tags {}", tags.join(" or ")));
        }
        if !self.keep_within.is_zero() {
            parts.push(format!(
                "all snapshots within {} of the newest",
                self.keep_within
            ));
        }
        if self.keep_newest_min > 0 {
            parts.push(format!(
                "never fewer than the newest {}",
                self.keep_newest_min
            ));
        }
        write!(f, "keep {}", parts.join(", "))
    }
}

// ---------------------------------------------------------------------------
// Grouping
// ---------------------------------------------------------------------------

/// Which snapshot fields form a group; every group gets the policy on its own.
///
/// Parsed from a comma-separated list (`"host,paths"`; `""` puts every snapshot in one
/// group). The default is host + paths + source: a PostgreSQL dump and a file backup
/// of the same host are different series and must not share `keep-last` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
    pub source: bool,
}

impl GroupBy {
    /// One group for everything.
    pub const NONE: GroupBy = GroupBy {
        host: false,
        paths: false,
        tags: false,
        source: false,
    };

    /// The group `snapshot` belongs to. Paths and tags are compared as sets. Restores'
    /// safety dumps ([`crate::snapshot::SAFETY_TAG`]) always form groups of their own, so
    /// they never take a real backup's place in `keep-last` and the other counts.
    pub fn key(&self, snapshot: &Snapshot) -> GroupKey {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v.dedup();
            v
        };
        GroupKey {
            hostname: self.host.then(|| snapshot.hostname.clone()),
            paths: self.paths.then(|| sorted(&snapshot.paths)),
            tags: self.tags.then(|| sorted(&snapshot.tags)),
            source: self.source.then(|| snapshot.source.clone()),
            safety_dumps: snapshot.is_safety_dump(),
        }
    }
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
            source: true,
        }
    }
}

impl FromStr for GroupBy {
    type Err = RetentionError;

    /// Parses `host,paths,tags,source` (any subset, any order, spaces allowed).
    ///
    /// # Errors
    ///
    /// [`RetentionError::InvalidGroupBy`] naming the first unknown field.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut g = GroupBy::NONE;
        for field in s.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            match field {
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                "source" => g.source = true,
                _ => {
                    return Err(RetentionError::InvalidGroupBy {
                        input: s.to_string(),
                        field: field.to_string(),
                    })
                }
            }
        }
        Ok(g)
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields: Vec<&str> = [
            (self.host, "host"),
            (self.paths, "paths"),
            (self.tags, "tags"),
            (self.source, "source"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect();
        f.write_str(&fields.join(","))
    }
}

impl Serialize for GroupBy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GroupBy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The values a group shares; `None` for fields not grouped on.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A group of restores' safety dumps (never mixed with backups).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub safety_dumps: bool,
}

/// `host [h], paths [/a, /b], source [files]`; empty when not grouped.
impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(h) = &self.hostname {
            parts.push(format!("host [{h}]"));
        }
        if let Some(p) = &self.paths {
            parts.push(format!("paths [{}]", p.join(", ")));
        }
        if let Some(t) = &self.tags {
            parts.push(format!("tags [{}]", t.join(", ")));
        }
        if let Some(s) = &self.source {
            parts.push(format!("source [{s}]"));
        }
        if self.safety_dumps {
            parts.push("safety dumps".into());
        }
        f.write_str(&parts.join(", "))
    }
}

// ---------------------------------------------------------------------------
// Decisions
// ---------------------------------------------------------------------------

/// The time buckets of the counted and within rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BucketKind {
    /// Every snapshot is its own bucket (`keep-last`).
    Last,
    Hourly,
    Daily,
    /// ISO 8601 week of the ISO week-numbering year.
    Weekly,
    Monthly,
    Yearly,
}

impl BucketKind {
    fn name(self) -> &'static str {
        match self {
            BucketKind::Last => "last",
            BucketKind::Hourly => "hourly",
            BucketKind::Daily => "daily",
            BucketKind::Weekly => "weekly",
            BucketKind::Monthly => "monthly",
            BucketKind::Yearly => "yearly",
        }
    }

    /// The bucket of a snapshot taken at `t` (local to its own offset) at position `nr`
    /// of the newest-first list, as one comparable number (restic's `ymdh`, `yw`...).
    fn bucket(self, t: &DateTime<FixedOffset>, nr: usize) -> i64 {
        let (y, m, d, h) = (
            i64::from(t.year()),
            i64::from(t.month()),
            i64::from(t.day()),
            i64::from(t.hour()),
        );
        match self {
            BucketKind::Last => i64::try_from(nr).unwrap_or(i64::MAX),
            BucketKind::Hourly => ((y * 100 + m) * 100 + d) * 100 + h,
            BucketKind::Daily => (y * 100 + m) * 100 + d,
            BucketKind::Weekly => {
                let w = t.iso_week();
                i64::from(w.year()) * 100 + i64::from(w.week())
            }
            BucketKind::Monthly => y * 100 + m,
            BucketKind::Yearly => y,
        }
    }
}

/// Why a snapshot is kept. Shown (and serialized) as the text `forget --dry-run`
/// prints, e.g. `daily snapshot`, `within 7d`, `pinned`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeepReason {
    /// `pinned`
    Pinned,
    /// `policy is empty`
    EmptyPolicy,
    /// `has tags [a, b]` (`has no tags` for an empty entry)
    Tags(Vec<String>),
    /// `within 7d`
    Within(RetentionDuration),
    /// `last snapshot`, `daily snapshot`, `oldest daily snapshot`...
    Bucket { kind: BucketKind, oldest: bool },
    /// `daily within 30d`...
    WithinBucket {
        kind: BucketKind,
        within: RetentionDuration,
    },
    /// `floor (newest 1)`
    Floor(u32),
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::Pinned => f.write_str("pinned"),
            KeepReason::EmptyPolicy => f.write_str("policy is empty"),
            KeepReason::Tags(tags) if tags.is_empty() => f.write_str("has no tags"),
            KeepReason::Tags(tags) => write!(f, "has tags [{}]", tags.join(", ")),
            KeepReason::Within(d) => write!(f, "within {d}"),
            KeepReason::Bucket { kind, oldest } => {
                let prefix = if *oldest { "oldest " } else { "" };
                write!(f, "{prefix}{} snapshot", kind.name())
            }
            KeepReason::WithinBucket { kind, within } => {
                write!(f, "{} within {within}", kind.name())
            }
            KeepReason::Floor(n) => write!(f, "floor (newest {n})"),
        }
    }
}

impl Serialize for KeepReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What `forget` does with a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Keep,
    Remove,
}

/// The decision on one snapshot: kept with every reason that keeps it, or removed
/// (no reasons).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotDecision {
    pub snapshot: SnapshotEntry,
    pub action: Action,
    pub reasons: Vec<KeepReason>,
}

impl SnapshotDecision {
    pub fn is_kept(&self) -> bool {
        self.action == Action::Keep
    }
}

/// The decisions on one group, newest snapshot first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupDecision {
    pub key: GroupKey,
    pub snapshots: Vec<SnapshotDecision>,
}

impl GroupDecision {
    pub fn kept(&self) -> impl Iterator<Item = &SnapshotDecision> {
        self.snapshots.iter().filter(|d| d.is_kept())
    }

    pub fn removed(&self) -> impl Iterator<Item = &SnapshotDecision> {
        self.snapshots.iter().filter(|d| !d.is_kept())
    }
}

/// Applies `policy` to every group of `snapshots` (see the module docs for the rules).
/// Groups come sorted by key, snapshots newest first. "Now" (the clock) only serves to
/// ignore snapshots dated in the future as the keep-within reference; use
/// [`apply_policy_at`] for a fixed clock.
pub fn apply_policy(
    snapshots: &[SnapshotEntry],
    policy: &RetentionPolicy,
    group_by: GroupBy,
) -> Vec<GroupDecision> {
    apply_policy_at(
        snapshots,
        policy,
        group_by,
        chrono::Utc::now().fixed_offset(),
    )
}

/// [`apply_policy`] with an explicit "now": snapshots at or after `now` are not used as
/// the keep-within reference (a wrong clock on one host must not make a far-future
/// snapshot the reference and expire everything else).
pub fn apply_policy_at(
    snapshots: &[SnapshotEntry],
    policy: &RetentionPolicy,
    group_by: GroupBy,
    now: DateTime<FixedOffset>,
) -> Vec<GroupDecision> {
    let mut groups: BTreeMap<GroupKey, Vec<&SnapshotEntry>> = BTreeMap::new();
    for entry in snapshots {
        groups
            .entry(group_by.key(&entry.snapshot))
            .or_default()
            .push(entry);
    }
    groups
        .into_iter()
        .map(|(key, mut list)| {
            list.sort_by(|a, b| {
                b.snapshot
                    .time
                    .cmp(&a.snapshot.time)
                    .then_with(|| a.id.cmp(&b.id))
            });
            GroupDecision {
                key,
                snapshots: decide_group(&list, policy, now),
            }
        })
        .collect()
}

/// Where a keep-within rule starts: strictly after `Some(t)`; `None` = everything.
type Cutoff = Option<DateTime<FixedOffset>>;

fn is_within(cutoff: &Cutoff, t: &DateTime<FixedOffset>) -> bool {
    cutoff.as_ref().is_none_or(|c| t > c)
}

struct CountedBucket {
    kind: BucketKind,
    remaining: u32,
    last: Option<i64>,
}

struct WithinBucket {
    kind: BucketKind,
    within: RetentionDuration,
    cutoff: Cutoff,
    last: Option<i64>,
}

/// One group, sorted newest first.
fn decide_group(
    list: &[&SnapshotEntry],
    policy: &RetentionPolicy,
    now: DateTime<FixedOffset>,
) -> Vec<SnapshotDecision> {
    if policy.is_empty() {
        return list
            .iter()
            .map(|entry| {
                let mut reasons = Vec::new();
                if entry.snapshot.pinned {
                    reasons.push(KeepReason::Pinned);
                }
                reasons.push(KeepReason::EmptyPolicy);
                SnapshotDecision {
                    snapshot: (*entry).clone(),
                    action: Action::Keep,
                    reasons,
                }
            })
            .collect();
    }

    // The newest snapshot that is not in the future; restic's findLatestTimestamp.
    let reference = list
        .iter()
        .map(|e| e.snapshot.time)
        .filter(|t| *t < now)
        .max();
    let cutoff = |d: &RetentionDuration| reference.and_then(|r| d.before(r));

    let tag_lists: Vec<Vec<String>> = policy
        .keep_tags
        .iter()
        .map(|entry| {
            entry
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect();
    let within = (!policy.keep_within.is_zero()).then(|| cutoff(&policy.keep_within));
    let mut counted: Vec<CountedBucket> = policy
        .counts()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(kind, remaining)| CountedBucket {
            kind,
            remaining,
            last: None,
        })
        .collect();
    let mut within_buckets: Vec<WithinBucket> = policy
        .within_buckets()
        .into_iter()
        .filter(|(_, d)| !d.is_zero())
        .map(|(kind, within)| WithinBucket {
            kind,
            within,
            cutoff: cutoff(&within),
            last: None,
        })
        .collect();

    let oldest_nr = list.len().saturating_sub(1);
    let floor = usize::try_from(policy.keep_newest_min).unwrap_or(usize::MAX);
    let mut decisions = Vec::with_capacity(list.len());
    for (nr, entry) in list.iter().enumerate() {
        let sn = &entry.snapshot;
        let mut reasons = Vec::new();
        if sn.pinned {
            reasons.push(KeepReason::Pinned);
        }
        for tags in &tag_lists {
            let matches = if tags.is_empty() {
                sn.tags.is_empty()
            } else {
                tags.iter().all(|t| sn.tags.contains(t))
            };
            if matches {
                reasons.push(KeepReason::Tags(tags.clone()));
            }
        }
        if let Some(c) = &within {
            if is_within(c, &sn.time) {
                reasons.push(KeepReason::Within(policy.keep_within));
            }
        }
        for b in counted.iter_mut().filter(|b| b.remaining > 0) {
            let val = b.kind.bucket(&sn.time, nr);
            let same_bucket = b.last == Some(val);
            if !same_bucket || nr == oldest_nr {
                b.last = Some(val);
                if b.remaining != UNLIMITED {
                    b.remaining -= 1;
                }
                reasons.push(KeepReason::Bucket {
                    kind: b.kind,
                    oldest: same_bucket,
                });
            }
        }
        for b in within_buckets.iter_mut() {
            if is_within(&b.cutoff, &sn.time) {
                let val = b.kind.bucket(&sn.time, nr);
                if b.last != Some(val) {
                    b.last = Some(val);
                    reasons.push(KeepReason::WithinBucket {
                        kind: b.kind,
                        within: b.within,
                    });
                }
            }
        }
        if nr < floor {
            reasons.push(KeepReason::Floor(policy.keep_newest_min));
        }
        decisions.push(SnapshotDecision {
            snapshot: (*entry).clone(),
            action: if reasons.is_empty() {
                Action::Remove
            } else {
                Action::Keep
            },
            reasons,
        });
    }
    decisions
}

// ---------------------------------------------------------------------------
// WAL retention (PostgreSQL PITR)
// ---------------------------------------------------------------------------

/// A WAL segment position, ordered: (log, segment), the timeline left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WalPosition {
    pub log: u32,
    pub seg: u32,
}

/// A PostgreSQL WAL segment name: `TTTTTTTTLLLLLLLLSSSSSSSS` (timeline, log, segment,
/// 8 hex digits each). Displayed in upper case, as PostgreSQL names them; serialized
/// as the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WalSegment {
    pub timeline: u32,
    pub log: u32,
    pub seg: u32,
}

impl WalSegment {
    /// Where the segment sits in the WAL stream, for comparisons across timelines.
    pub fn position(&self) -> WalPosition {
        WalPosition {
            log: self.log,
            seg: self.seg,
        }
    }

    /// The segment holding byte `lsn` of the WAL on `timeline`, for a server with
    /// `wal_segment_size` bytes per segment (16 MiB unless changed at initdb).
    ///
    /// # Errors
    ///
    /// [`RetentionError::InvalidWalSegmentSize`] unless the size is a power of two from
    /// 1 MiB to 1 GiB, as PostgreSQL requires.
    pub fn containing_lsn(
        timeline: u32,
        lsn: u64,
        wal_segment_size: u64,
    ) -> Result<WalSegment, RetentionError> {
        if !wal_segment_size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&wal_segment_size) {
            return Err(RetentionError::InvalidWalSegmentSize {
                size: wal_segment_size,
            });
        }
        let segno = lsn / wal_segment_size;
        let per_log = 0x1_0000_0000 / wal_segment_size;
        // Both quotients fit: lsn < 2^64, per_log >= 4, segno % per_log < 2^12.
        Ok(WalSegment {
            timeline,
            log: u32::try_from(segno / per_log).unwrap_or(u32::MAX),
            seg: u32::try_from(segno % per_log).unwrap_or(u32::MAX),
        })
    }
}

/// Parses an LSN as PostgreSQL prints it (`16/B374D848`).
///
/// # Errors
///
/// [`RetentionError::InvalidLsn`] unless it is two hex numbers of up to 8 digits
/// separated by `/`.
pub fn parse_lsn(s: &str) -> Result<u64, RetentionError> {
    let err = || RetentionError::InvalidLsn {
        input: s.to_string(),
    };
    let (hi, lo) = s.split_once('/').ok_or_else(err)?;
    let part = |p: &str| {
        if p.is_empty() || p.len() > 8 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        u32::from_str_radix(p, 16).map_err(|_| err())
    };
    Ok((u64::from(part(hi)?) << 32) | u64::from(part(lo)?))
}

fn hex8(s: &str) -> Option<u32> {
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

impl FromStr for WalSegment {
    type Err = RetentionError;

    /// Parses a 24-hex-digit segment name (either case).
    ///
    /// # Errors
    ///
    /// [`RetentionError::InvalidWalSegment`] for anything else, including names with
    /// a suffix (`.partial`, `.backup`): see [`WalFile::parse`] for those.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || RetentionError::InvalidWalSegment {
            input: s.to_string(),
        };
        if s.len() != 24 || !s.is_ascii() {
            return Err(err());
        }
        Ok(WalSegment {
            timeline: hex8(&s[..8]).ok_or_else(err)?,
            log: hex8(&s[8..16]).ok_or_else(err)?,
            seg: hex8(&s[16..]).ok_or_else(err)?,
        })
    }
}

impl fmt::Display for WalSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}{:08X}{:08X}", self.timeline, self.log, self.seg)
    }
}

impl Serialize for WalSegment {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WalSegment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A file of a WAL archive, recognised by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalFile {
    /// `000000010000000000000003`
    Segment(WalSegment),
    /// `000000010000000000000003.partial`: the last, incomplete segment of a timeline.
    Partial(WalSegment),
    /// `000000010000000000000003.00000028.backup`: backup history file.
    BackupHistory(WalSegment),
    /// `00000002.history`: timeline history, never removable.
    TimelineHistory(u32),
}

impl WalFile {
    /// Recognises a WAL archive file name (no directory part); `None` for other names.
    pub fn parse(name: &str) -> Option<WalFile> {
        if let Some(tli) = name.strip_suffix(".history") {
            return hex8(tli).map(WalFile::TimelineHistory);
        }
        if let Some(seg) = name.strip_suffix(".partial") {
            return seg.parse().ok().map(WalFile::Partial);
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let (seg, offset) = rest.split_once('.')?;
            hex8(offset)?;
            return seg.parse().ok().map(WalFile::BackupHistory);
        }
        name.parse().ok().map(WalFile::Segment)
    }

    /// The segment the file belongs to; `None` for timeline history files.
    pub fn segment(&self) -> Option<WalSegment> {
        match self {
            WalFile::Segment(s) | WalFile::Partial(s) | WalFile::BackupHistory(s) => Some(*s),
            WalFile::TimelineHistory(_) => None,
        }
    }
}

/// A kept PostgreSQL base backup, as WAL retention sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseBackup {
    /// The snapshot holding it.
    pub id: Id,
    /// When the backup became consistent: its end (`Summary::backup_end`), so that
    /// recovery to any later instant can start from it. Passing the start time instead
    /// leaves the first minutes of the PITR window (while that backup ran) unreachable.
    pub time: DateTime<FixedOffset>,
    /// Segment of the backup's start LSN (checkpoint/redo point).
    pub start_wal: WalSegment,
    /// Segment of the backup's stop LSN.
    pub stop_wal: WalSegment,
}

/// The WAL half of a PostgreSQL policy: how far back point-in-time recovery must
/// reach. The base backups themselves are kept by the snapshot [`RetentionPolicy`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct WalRetention {
    /// Recovery must reach any instant in `now - pitr_window ..= now`; zero = no PITR,
    /// WAL is kept only for base backup consistency.
    pub pitr_window: RetentionDuration,
}

/// The WAL span one kept base backup needs to be consistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BaseWalRange {
    pub id: Id,
    pub start: WalPosition,
    pub stop: WalPosition,
}

/// Which WAL must stay, computed by [`WalRetention::plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalPlan {
    /// `now - pitr_window`; `None` when PITR is off (or the window reaches past the
    /// representable range, then every base backup counts as inside it).
    pub window_start: Option<DateTime<FixedOffset>>,
    /// The base backup PITR replays from, if PITR is on.
    pub pitr_base: Option<Id>,
    /// Every segment at or after this position is kept; `None` only without base backups
    /// (then nothing is removable).
    pub keep_from: Option<WalPosition>,
    /// Start..=stop of each kept base backup, oldest first.
    pub base_ranges: Vec<BaseWalRange>,
}

impl WalRetention {
    pub fn new(pitr_window: RetentionDuration) -> Self {
        WalRetention { pitr_window }
    }

    /// Computes which WAL positions `kept_bases` and the PITR window need (module docs,
    /// "WAL rules"). Pass only the base backups the snapshot policy keeps.
    pub fn plan(&self, kept_bases: &[BaseBackup], now: DateTime<FixedOffset>) -> WalPlan {
        let mut bases: Vec<&BaseBackup> = kept_bases.iter().collect();
        bases.sort_by(|a, b| {
            a.time
                .cmp(&b.time)
                .then_with(|| a.start_wal.position().cmp(&b.start_wal.position()))
        });
        let base_ranges = bases
            .iter()
            .map(|b| BaseWalRange {
                id: b.id,
                start: b.start_wal.position(),
                stop: b.stop_wal.position(),
            })
            .collect();
        let Some(newest) = bases.last() else {
            return WalPlan {
                window_start: None,
                pitr_base: None,
                keep_from: None,
                base_ranges,
            };
        };
        if self.pitr_window.is_zero() {
            return WalPlan {
                window_start: None,
                pitr_base: None,
                keep_from: Some(newest.start_wal.position()),
                base_ranges,
            };
        }
        let window_start = self.pitr_window.before(now);
        // Newest base finished at or before the window start; else the oldest one.
        let anchor = window_start
            .and_then(|ws| bases.iter().rposition(|b| b.time <= ws))
            .unwrap_or(0);
        // Replay from the anchor needs everything from there on; take the minimum start
        // in case start positions and times disagree.
        let keep_from = bases[anchor..].iter().map(|b| b.start_wal.position()).min();
        WalPlan {
            window_start,
            pitr_base: Some(bases[anchor].id),
            keep_from,
            base_ranges,
        }
    }
}

impl WalPlan {
    /// The oldest position any kept base backup or the PITR window needs; everything
    /// older is removable. `None` when there is no base backup (keep everything).
    pub fn oldest_required(&self) -> Option<WalPosition> {
        self.base_ranges
            .iter()
            .map(|r| r.start)
            .chain(self.keep_from)
            .min()
    }

    /// Whether the segment at `pos` must be kept.
    pub fn is_required(&self, pos: WalPosition) -> bool {
        match self.keep_from {
            None => true,
            Some(from) => {
                pos >= from
                    || self
                        .base_ranges
                        .iter()
                        .any(|r| (r.start..=r.stop).contains(&pos))
            }
        }
    }

    /// The names in `names` that may be deleted: segments, `.partial` and `.backup`
    /// files whose position no kept base backup and no point of the PITR window needs.
    /// Timeline history files and unrecognised names are never returned.
    pub fn removable<'a, S>(&self, names: impl IntoIterator<Item = &'a S>) -> Vec<&'a str>
    where
        S: AsRef<str> + ?Sized + 'a,
    {
        names
            .into_iter()
            .map(AsRef::as_ref)
            .filter(|name| {
                WalFile::parse(name)
                    .and_then(|f| f.segment())
                    .is_some_and(|seg| !self.is_required(seg.position()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{SAFETY_OF_PREFIX, SAFETY_TAG};
    use rstest::rstest;

    const NOW: &str = "2030-01-01T00:00:00Z";

    fn t(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    fn snap(n: u8, time: &str) -> SnapshotEntry {
        SnapshotEntry {
            id: id(n),
            snapshot: Snapshot {
                version: 1,
                time: t(time),
                hostname: "h1".into(),
                username: String::new(),
                paths: vec!["/data".into()],
                tags: Vec::new(),
                source: "files".into(),
                tree: Id::default(),
                parent: None,
                pinned: false,
                summary: None,
                metadata: None,
                program: String::new(),
                original: None,
            },
        }
    }

    fn with(mut e: SnapshotEntry, f: impl FnOnce(&mut Snapshot)) -> SnapshotEntry {
        f(&mut e.snapshot);
        e
    }

    /// A policy without the floor, so the restic rules are seen alone.
    fn p(f: impl FnOnce(&mut RetentionPolicy)) -> RetentionPolicy {
        let mut policy = RetentionPolicy {
            keep_newest_min: 0,
            ..RetentionPolicy::default()
        };
        f(&mut policy);
        policy
    }

    fn d(s: &str) -> RetentionDuration {
        s.parse().unwrap()
    }

    /// `"<id>: <reasons>"` (or `"<id>: remove"`) per snapshot, newest first.
    fn lines(group: &GroupDecision) -> Vec<String> {
        group
            .snapshots
            .iter()
            .map(|dec| {
                let n = dec.snapshot.id.0[0];
                assert_eq!(dec.is_kept(), !dec.reasons.is_empty());
                if dec.is_kept() {
                    let reasons: Vec<String> = dec.reasons.iter().map(|r| r.to_string()).collect();
                    format!("{n}: {}", reasons.join(", "))
                } else {
                    format!("{n}: remove")
                }
            })
            .collect()
    }

    fn decide(policy: &RetentionPolicy, snaps: &[SnapshotEntry]) -> Vec<String> {
        let groups = apply_policy_at(snaps, policy, GroupBy::default(), t(NOW));
        assert_eq!(groups.len(), 1, "expected one group");
        lines(&groups[0])
    }

    #[rstest]
    #[case::last_two(
        p(|p| p.keep_last = 2),
        &[(1, "2021-03-01T10:00:00Z"), (2, "2021-03-02T10:00:00Z"), (3, "2021-03-03T10:00:00Z")],
        &["3: last snapshot", "2: last snapshot", "1: remove"],
    )]
    #[case::last_more_than_available(
        p(|p| p.keep_last = 5),
        &[(1, "2021-03-01T10:00:00Z"), (2, "2021-03-02T10:00:00Z")],
        &["2: last snapshot", "1: last snapshot"],
    )]
    #[case::hourly_boundary(
        p(|p| p.keep_hourly = 2),
        &[(4, "2021-03-10T11:00:00Z"), (3, "2021-03-10T10:59:59Z"),
          (2, "2021-03-10T10:00:00Z"), (1, "2021-03-10T09:59:59Z")],
        &["4: hourly snapshot", "3: hourly snapshot", "2: remove", "1: remove"],
    )]
    #[case::hourly_keeps_oldest_while_count_left(
        p(|p| p.keep_hourly = 3),
        &[(3, "2021-03-10T11:00:00Z"), (2, "2021-03-10T10:30:00Z"), (1, "2021-03-10T10:10:00Z")],
        &["3: hourly snapshot", "2: hourly snapshot", "1: oldest hourly snapshot"],
    )]
    #[case::daily_boundary(
        p(|p| p.keep_daily = 2),
        &[(4, "2021-03-11T00:00:00Z"), (3, "2021-03-10T23:59:59Z"),
          (2, "2021-03-10T00:00:00Z"), (1, "2021-03-09T12:00:00Z")],
        &["4: daily snapshot", "3: daily snapshot", "2: remove", "1: remove"],
    )]
    #[case::weekly_boundary_is_monday(
        p(|p| p.keep_weekly = 3),
        &[(4, "2021-03-15T00:00:00Z"), (3, "2021-03-14T23:59:59Z"),
          (2, "2021-03-08T00:00:00Z"), (1, "2021-03-07T23:59:59Z")],
        &["4: weekly snapshot", "3: weekly snapshot", "2: remove", "1: weekly snapshot"],
    )]
    #[case::iso_week_53_spans_new_year(
        // 2020-12-27 is in 2020-W52; 2020-12-31 .. 2021-01-03 are all 2020-W53;
        // 2021-01-04 starts 2021-W01.
        p(|p| p.keep_weekly = 3),
        &[(5, "2021-01-04T00:00:00Z"), (4, "2021-01-03T12:00:00Z"), (3, "2021-01-01T12:00:00Z"),
          (2, "2020-12-31T12:00:00Z"), (1, "2020-12-27T12:00:00Z")],
        &["5: weekly snapshot", "4: weekly snapshot", "3: remove", "2: remove",
          "1: weekly snapshot"],
    )]
    #[case::iso_week_1_starts_in_december(
        // 2018-12-31 (Monday) already is 2019-W01.
        p(|p| p.keep_weekly = 5),
        &[(3, "2019-01-02T12:00:00Z"), (2, "2018-12-31T00:00:00Z"), (1, "2018-12-30T23:00:00Z")],
        &["3: weekly snapshot", "2: remove", "1: weekly snapshot"],
    )]
    #[case::monthly_boundary(
        p(|p| p.keep_monthly = 2),
        &[(3, "2021-03-01T00:00:00Z"), (2, "2021-02-28T23:59:59Z"), (1, "2021-02-01T00:00:00Z")],
        &["3: monthly snapshot", "2: monthly snapshot", "1: remove"],
    )]
    #[case::yearly_boundary(
        p(|p| p.keep_yearly = 2),
        &[(3, "2021-01-01T00:00:00Z"), (2, "2020-12-31T23:59:59Z"), (1, "2020-06-01T00:00:00Z")],
        &["3: yearly snapshot", "2: yearly snapshot", "1: remove"],
    )]
    #[case::yearly_keeps_oldest_while_count_left(
        p(|p| p.keep_yearly = 3),
        &[(3, "2021-01-01T00:00:00Z"), (2, "2020-12-31T23:59:59Z"), (1, "2020-06-01T00:00:00Z")],
        &["3: yearly snapshot", "2: yearly snapshot", "1: oldest yearly snapshot"],
    )]
    #[case::unlimited_daily(
        p(|p| p.keep_daily = UNLIMITED),
        &[(4, "2021-03-10T18:00:00Z"), (3, "2021-03-10T09:00:00Z"),
          (2, "2021-03-09T10:00:00Z"), (1, "2021-03-08T10:00:00Z")],
        &["4: daily snapshot", "3: remove", "2: daily snapshot", "1: daily snapshot"],
    )]
    #[case::tz_same_utc_day_different_local_days(
        // 2 is 2021-03-11T01:30Z, 3 is 2021-03-11T03:00Z: same UTC day, but the host of 2
        // was still on 10 March.
        p(|p| p.keep_daily = 5),
        &[(3, "2021-03-11T05:00:00+02:00"), (2, "2021-03-10T23:30:00-02:00"),
          (1, "2021-03-09T12:00:00Z")],
        &["3: daily snapshot", "2: daily snapshot", "1: daily snapshot"],
    )]
    #[case::tz_different_utc_days_same_local_day(
        // 2 is 2021-03-10T22:00Z, 3 is 2021-03-11T20:00Z: both 11 March locally.
        p(|p| p.keep_daily = 5),
        &[(3, "2021-03-11T23:00:00+03:00"), (2, "2021-03-11T01:00:00+03:00"),
          (1, "2021-03-09T12:00:00Z")],
        &["3: daily snapshot", "2: remove", "1: daily snapshot"],
    )]
    #[case::tz_half_hour_offset_hours(
        // 04:40Z and 04:20Z share a UTC hour but not a local (+05:30) one.
        p(|p| p.keep_hourly = 5),
        &[(2, "2021-03-10T10:10:00+05:30"), (1, "2021-03-10T09:50:00+05:30")],
        &["2: hourly snapshot", "1: hourly snapshot"],
    )]
    #[case::within_is_relative_to_newest_and_exclusive(
        p(|p| p.keep_within = d("2d")),
        &[(4, "2021-03-10T12:00:00Z"), (3, "2021-03-08T12:00:01Z"),
          (2, "2021-03-08T12:00:00Z"), (1, "2021-03-01T00:00:00Z")],
        &["4: within 2d", "3: within 2d", "2: remove", "1: remove"],
    )]
    #[case::within_month_uses_go_normalisation(
        // 31 March − 1 month = "31 February" = 3 March, as in restic.
        p(|p| p.keep_within = d("1m")),
        &[(3, "2021-03-31T12:00:00Z"), (2, "2021-03-03T12:00:01Z"), (1, "2021-03-02T12:00:00Z")],
        &["3: within 1m", "2: within 1m", "1: remove"],
    )]
    #[case::within_weeks_and_hours(
        p(|p| p.keep_within = d("1w12h")),
        &[(3, "2021-03-10T12:00:00Z"), (2, "2021-03-03T00:00:01Z"), (1, "2021-03-03T00:00:00Z")],
        &["3: within 1w12h", "2: within 1w12h", "1: remove"],
    )]
    #[case::within_ignores_future_snapshot_as_reference(
        p(|p| p.keep_within = d("1d")),
        &[(4, "2099-01-01T00:00:00Z"), (3, "2021-03-10T12:00:00Z"),
          (2, "2021-03-09T13:00:00Z"), (1, "2021-03-09T11:00:00Z")],
        &["4: within 1d", "3: within 1d", "2: within 1d", "1: remove"],
    )]
    #[case::within_hourly(
        p(|p| p.keep_within_hourly = d("2h")),
        &[(4, "2021-03-10T12:30:00Z"), (3, "2021-03-10T12:10:00Z"),
          (2, "2021-03-10T11:00:00Z"), (1, "2021-03-10T10:20:00Z")],
        &["4: hourly within 2h", "3: remove", "2: hourly within 2h", "1: remove"],
    )]
    #[case::within_daily(
        p(|p| p.keep_within_daily = d("3d")),
        &[(5, "2021-03-10T18:00:00Z"), (4, "2021-03-10T09:00:00Z"), (3, "2021-03-09T20:00:00Z"),
          (2, "2021-03-08T08:00:00Z"), (1, "2021-03-07T13:00:00Z")],
        &["5: daily within 3d", "4: remove", "3: daily within 3d", "2: daily within 3d",
          "1: remove"],
    )]
    #[case::within_weekly(
        p(|p| p.keep_within_weekly = d("2w")),
        &[(4, "2021-03-17T12:00:00Z"), (3, "2021-03-15T12:00:00Z"),
          (2, "2021-03-10T12:00:00Z"), (1, "2021-03-03T12:00:00Z")],
        &["4: weekly within 2w", "3: remove", "2: weekly within 2w", "1: remove"],
    )]
    #[case::within_monthly(
        p(|p| p.keep_within_monthly = d("2m")),
        &[(4, "2021-03-15T00:00:00Z"), (3, "2021-03-01T00:00:00Z"),
          (2, "2021-02-20T00:00:00Z"), (1, "2021-01-10T00:00:00Z")],
        &["4: monthly within 2m", "3: remove", "2: monthly within 2m", "1: remove"],
    )]
    #[case::within_yearly(
        p(|p| p.keep_within_yearly = d("1y")),
        &[(3, "2021-06-01T00:00:00Z"), (2, "2021-01-01T00:00:00Z"), (1, "2020-12-31T00:00:00Z")],
        &["3: yearly within 1y", "2: remove", "1: yearly within 1y"],
    )]
    #[case::daily_and_within_daily_combine(
        p(|p| {
            p.keep_daily = 1;
            p.keep_within_daily = d("2d");
        }),
        &[(3, "2021-03-10T18:00:00Z"), (2, "2021-03-09T18:00:00Z"), (1, "2021-03-01T00:00:00Z")],
        &["3: daily snapshot, daily within 2d", "2: daily within 2d", "1: remove"],
    )]
    fn rule(
        #[case] policy: RetentionPolicy,
        #[case] snaps: &[(u8, &str)],
        #[case] expected: &[&str],
    ) {
        let snaps: Vec<SnapshotEntry> = snaps.iter().map(|(n, time)| snap(*n, time)).collect();
        assert_eq!(decide(&policy, &snaps), expected);
    }

    #[test]
    fn input_order_does_not_matter_and_ties_break_by_id() {
        let policy = p(|p| p.keep_daily = 1);
        let a = vec![
            snap(2, "2021-03-10T12:00:00Z"),
            snap(1, "2021-03-10T12:00:00Z"),
            snap(3, "2021-03-09T12:00:00Z"),
        ];
        let mut b = a.clone();
        b.reverse();
        let expected = ["1: daily snapshot", "2: remove", "3: remove"];
        assert_eq!(decide(&policy, &a), expected);
        assert_eq!(decide(&policy, &b), expected);
    }

    #[test]
    fn safety_dumps_are_counted_apart_from_backups() {
        // Two restores after the last backup: keep-last 2 keeps the two backups, and the
        // two newest safety dumps as a group of their own.
        let policy = p(|p| p.keep_last = 2);
        let safety = |n, time| {
            with(snap(n, time), |s| {
                s.tags = vec![SAFETY_TAG.into(), format!("{SAFETY_OF_PREFIX}0a0a0a0a")]
            })
        };
        let snaps = vec![
            safety(6, "2021-03-15T00:00:00Z"),
            safety(5, "2021-03-14T00:00:00Z"),
            safety(4, "2021-03-13T00:00:00Z"),
            snap(3, "2021-03-12T00:00:00Z"),
            snap(2, "2021-03-11T00:00:00Z"),
            snap(1, "2021-03-10T00:00:00Z"),
        ];
        let groups = apply_policy_at(&snaps, &policy, GroupBy::default(), t(NOW));
        let mut all: Vec<Vec<String>> = groups.iter().map(lines).collect();
        all.sort();
        assert_eq!(
            all,
            [
                ["3: last snapshot", "2: last snapshot", "1: remove"],
                ["6: last snapshot", "5: last snapshot", "4: remove"],
            ]
        );
        let key = GroupBy::default().key(&snaps[0].snapshot);
        assert!(key.safety_dumps);
        assert!(key.to_string().ends_with(", safety dumps"), "{key}");
        assert!(!GroupBy::default().key(&snaps[3].snapshot).safety_dumps);
    }

    #[test]
    fn pinned_snapshots_are_always_kept() {
        let policy = p(|p| p.keep_last = 1);
        let snaps = vec![
            with(snap(4, "2021-03-13T00:00:00Z"), |s| s.pinned = true),
            snap(3, "2021-03-12T00:00:00Z"),
            with(snap(2, "2021-03-11T00:00:00Z"), |s| s.pinned = true),
            snap(1, "2021-03-10T00:00:00Z"),
        ];
        assert_eq!(
            decide(&policy, &snaps),
            [
                "4: pinned, last snapshot",
                "3: remove",
                "2: pinned",
                "1: remove"
            ]
        );
    }

    #[test]
    fn keep_tags_need_every_tag_of_an_entry() {
        let policy = p(|p| p.keep_tags = vec!["important".into(), "a, b".into()]);
        let snaps = vec![
            with(snap(5, "2021-03-14T00:00:00Z"), |s| {
                s.tags = vec!["a".into()]
            }),
            with(snap(4, "2021-03-13T00:00:00Z"), |s| {
                s.tags = vec!["b".into(), "a".into(), "important".into()]
            }),
            with(snap(3, "2021-03-12T00:00:00Z"), |s| {
                s.tags = vec!["b".into(), "a".into()]
            }),
            with(snap(2, "2021-03-11T00:00:00Z"), |s| {
                s.tags = vec!["important".into()]
            }),
            snap(1, "2021-03-10T00:00:00Z"),
        ];
        assert_eq!(
            decide(&policy, &snaps),
            [
                "5: remove",
                "4: has tags [important], has tags [a, b]",
                "3: has tags [a, b]",
                "2: has tags [important]",
                "1: remove",
            ]
        );
    }

    #[test]
    fn empty_keep_tag_entry_matches_untagged_snapshots() {
        let policy = p(|p| p.keep_tags = vec![String::new()]);
        let snaps = vec![
            with(snap(2, "2021-03-11T00:00:00Z"), |s| {
                s.tags = vec!["x".into()]
            }),
            snap(1, "2021-03-10T00:00:00Z"),
        ];
        assert_eq!(decide(&policy, &snaps), ["2: remove", "1: has no tags"]);
    }

    #[test]
    fn tags_do_not_consume_counts() {
        let policy = p(|p| {
            p.keep_last = 1;
            p.keep_tags = vec!["t".into()];
        });
        let snaps = vec![
            with(snap(2, "2021-03-11T00:00:00Z"), |s| {
                s.tags = vec!["t".into()]
            }),
            snap(1, "2021-03-10T00:00:00Z"),
        ];
        // The tagged snapshot is also the newest, so it takes the keep-last slot.
        assert_eq!(
            decide(&policy, &snaps),
            ["2: has tags [t], last snapshot", "1: remove"]
        );
    }

    #[test]
    fn every_reason_is_listed_in_order() {
        let policy = RetentionPolicy {
            keep_last: 1,
            keep_daily: 1,
            keep_within: d("1d"),
            keep_within_daily: d("1d"),
            keep_tags: vec!["prod".into()],
            ..RetentionPolicy::default()
        };
        let snaps = vec![
            with(snap(2, "2021-03-10T12:00:00Z"), |s| {
                s.pinned = true;
                s.tags = vec!["prod".into()];
            }),
            snap(1, "2021-03-01T00:00:00Z"),
        ];
        assert_eq!(
            decide(&policy, &snaps),
            [
                "2: pinned, has tags [prod], within 1d, last snapshot, daily snapshot, \
                 daily within 1d, floor (newest 1)",
                "1: remove",
            ]
        );
    }

    #[rstest]
    #[case::no_floor_is_restic(0, &["4: remove", "3: remove", "2: remove", "1: remove"])]
    #[case::default_floor_keeps_newest(
        1,
        &["4: floor (newest 1)", "3: remove", "2: remove", "1: remove"],
    )]
    #[case::floor_of_three(
        3,
        &["4: floor (newest 3)", "3: floor (newest 3)", "2: floor (newest 3)", "1: remove"],
    )]
    #[case::floor_above_group_size(
        9,
        &["4: floor (newest 9)", "3: floor (newest 9)", "2: floor (newest 9)",
          "1: floor (newest 9)"],
    )]
    fn floor(#[case] keep_newest_min: u32, #[case] expected: &[&str]) {
        // A keep-tag that matches nothing: without a floor the group would be emptied.
        let policy = RetentionPolicy {
            keep_tags: vec!["typo".into()],
            keep_newest_min,
            ..RetentionPolicy::default()
        };
        let snaps: Vec<SnapshotEntry> = (1..=4)
            .map(|n| snap(n, &format!("2021-03-1{n}T00:00:00Z")))
            .collect();
        assert_eq!(decide(&policy, &snaps), expected);
    }

    #[test]
    fn floor_applies_per_group() {
        let policy = RetentionPolicy {
            keep_tags: vec!["typo".into()],
            ..RetentionPolicy::default()
        };
        let snaps = vec![
            snap(1, "2021-03-10T00:00:00Z"),
            snap(2, "2021-03-11T00:00:00Z"),
            with(snap(3, "2021-03-01T00:00:00Z"), |s| {
                s.hostname = "h2".into()
            }),
        ];
        let groups = apply_policy_at(&snaps, &policy, GroupBy::default(), t(NOW));
        let all: Vec<Vec<String>> = groups.iter().map(lines).collect();
        assert_eq!(
            all,
            [
                vec!["2: floor (newest 1)", "1: remove"],
                vec!["3: floor (newest 1)"]
            ]
        );
    }

    #[test]
    fn empty_policy_keeps_everything_despite_floor() {
        let policy = RetentionPolicy::default();
        assert!(policy.is_empty());
        let snaps = vec![
            snap(2, "2021-03-11T00:00:00Z"),
            with(snap(1, "2021-03-10T00:00:00Z"), |s| s.pinned = true),
        ];
        assert_eq!(
            decide(&policy, &snaps),
            ["2: policy is empty", "1: pinned, policy is empty"]
        );
    }

    #[rstest]
    #[case::default(RetentionPolicy::default(), true)]
    #[case::floor_only(RetentionPolicy { keep_newest_min: 5, ..RetentionPolicy::default() }, true)]
    #[case::last(p(|p| p.keep_last = 1), false)]
    #[case::hourly(p(|p| p.keep_hourly = 1), false)]
    #[case::daily(p(|p| p.keep_daily = 1), false)]
    #[case::weekly(p(|p| p.keep_weekly = 1), false)]
    #[case::monthly(p(|p| p.keep_monthly = 1), false)]
    #[case::yearly(p(|p| p.keep_yearly = 1), false)]
    #[case::within(p(|p| p.keep_within = d("1h")), false)]
    #[case::within_hourly(p(|p| p.keep_within_hourly = d("1h")), false)]
    #[case::within_daily(p(|p| p.keep_within_daily = d("1d")), false)]
    #[case::within_weekly(p(|p| p.keep_within_weekly = d("1w")), false)]
    #[case::within_monthly(p(|p| p.keep_within_monthly = d("1m")), false)]
    #[case::within_yearly(p(|p| p.keep_within_yearly = d("1y")), false)]
    #[case::tags(p(|p| p.keep_tags = vec!["x".into()]), false)]
    fn is_empty(#[case] policy: RetentionPolicy, #[case] expected: bool) {
        assert_eq!(policy.is_empty(), expected);
    }

    // -- grouping -----------------------------------------------------------

    fn grouping_fixture() -> Vec<SnapshotEntry> {
        vec![
            snap(1, "2021-03-10T00:00:00Z"),
            snap(2, "2021-03-11T00:00:00Z"),
            with(snap(3, "2021-03-12T00:00:00Z"), |s| {
                s.paths = vec!["/etc".into()]
            }),
            with(snap(4, "2021-03-09T00:00:00Z"), |s| {
                s.hostname = "h2".into()
            }),
            with(snap(5, "2021-03-08T00:00:00Z"), |s| {
                s.hostname = "h2".into()
            }),
            with(snap(6, "2021-03-13T00:00:00Z"), |s| {
                s.source = "postgres".into()
            }),
        ]
    }

    #[rstest]
    #[case::default_host_paths_source(
        GroupBy::default(),
        &[
            ("host [h1], paths [/data], source [files]", &["2: last snapshot", "1: remove"][..]),
            ("host [h1], paths [/data], source [postgres]", &["6: last snapshot"][..]),
            ("host [h1], paths [/etc], source [files]", &["3: last snapshot"][..]),
            ("host [h2], paths [/data], source [files]", &["4: last snapshot", "5: remove"][..]),
        ],
    )]
    #[case::host_and_paths(
        "host,paths".parse().unwrap(),
        &[
            ("host [h1], paths [/data]", &["6: last snapshot", "2: remove", "1: remove"][..]),
            ("host [h1], paths [/etc]", &["3: last snapshot"][..]),
            ("host [h2], paths [/data]", &["4: last snapshot", "5: remove"][..]),
        ],
    )]
    #[case::host(
        "host".parse().unwrap(),
        &[
            ("host [h1]", &["6: last snapshot", "3: remove", "2: remove", "1: remove"][..]),
            ("host [h2]", &["4: last snapshot", "5: remove"][..]),
        ],
    )]
    #[case::paths(
        "paths".parse().unwrap(),
        &[
            ("paths [/data]", &["6: last snapshot", "2: remove", "1: remove", "4: remove",
                                "5: remove"][..]),
            ("paths [/etc]", &["3: last snapshot"][..]),
        ],
    )]
    #[case::no_grouping(
        GroupBy::NONE,
        &[("", &["6: last snapshot", "3: remove", "2: remove", "1: remove", "4: remove",
                 "5: remove"][..])],
    )]
    fn grouping(#[case] group_by: GroupBy, #[case] expected: &[(&str, &[&str])]) {
        let policy = p(|p| p.keep_last = 1);
        let groups = apply_policy_at(&grouping_fixture(), &policy, group_by, t(NOW));
        let got: Vec<(String, Vec<String>)> = groups
            .iter()
            .map(|g| (g.key.to_string(), lines(g)))
            .collect();
        let expected: Vec<(String, Vec<String>)> = expected
            .iter()
            .map(|(k, l)| (k.to_string(), l.iter().map(|s| s.to_string()).collect()))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn paths_and_tags_group_as_sets() {
        let policy = p(|p| p.keep_last = 1);
        let snaps = vec![
            with(snap(1, "2021-03-10T00:00:00Z"), |s| {
                s.paths = vec!["/b".into(), "/a".into()];
                s.tags = vec!["x".into(), "y".into()];
            }),
            with(snap(2, "2021-03-11T00:00:00Z"), |s| {
                s.paths = vec!["/a".into(), "/b".into(), "/a".into()];
                s.tags = vec!["y".into(), "x".into()];
            }),
            with(snap(3, "2021-03-12T00:00:00Z"), |s| {
                s.tags = vec!["x".into()]
            }),
        ];
        let groups = apply_policy_at(&snaps, &policy, "paths,tags".parse().unwrap(), t(NOW));
        let got: Vec<(String, Vec<String>)> = groups
            .iter()
            .map(|g| (g.key.to_string(), lines(g)))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "paths [/a, /b], tags [x, y]".to_string(),
                    vec!["2: last snapshot".to_string(), "1: remove".to_string()]
                ),
                (
                    "paths [/data], tags [x]".to_string(),
                    vec!["3: last snapshot".to_string()]
                ),
            ]
        );
    }

    #[rstest]
    #[case("host,paths", GroupBy { host: true, paths: true, tags: false, source: false }, "host,paths")]
    #[case(" source , host ", GroupBy { host: true, paths: false, tags: false, source: true }, "host,source")]
    #[case("tags", GroupBy { host: false, paths: false, tags: true, source: false }, "tags")]
    #[case("host,paths,tags,source", GroupBy { host: true, paths: true, tags: true, source: true }, "host,paths,tags,source")]
    #[case("", GroupBy::NONE, "")]
    fn group_by_parses(#[case] input: &str, #[case] expected: GroupBy, #[case] shown: &str) {
        let g: GroupBy = input.parse().unwrap();
        assert_eq!(g, expected);
        assert_eq!(g.to_string(), shown);
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(serde_json::from_str::<GroupBy>(&json).unwrap(), g);
    }

    #[rstest]
    #[case("host,path", "path")]
    #[case("hostname", "hostname")]
    #[case("host;paths", "host;paths")]
    fn group_by_rejects(#[case] input: &str, #[case] field: &str) {
        assert_eq!(
            input.parse::<GroupBy>(),
            Err(RetentionError::InvalidGroupBy {
                input: input.into(),
                field: field.into()
            })
        );
    }

    #[test]
    fn default_group_by_is_host_paths_source() {
        assert_eq!(GroupBy::default().to_string(), "host,paths,source");
    }

    // -- durations, counts, policy serde ------------------------------------

    #[rstest]
    #[case("2y5m7d3h", (2, 5, 0, 7, 3), "2y5m7d3h")]
    #[case("3h2y", (2, 0, 0, 0, 3), "2y3h")]
    #[case("2w", (0, 0, 2, 0, 0), "2w")]
    #[case("14d", (0, 0, 0, 14, 0), "14d")]
    #[case("0d", (0, 0, 0, 0, 0), "0h")]
    #[case("4294967295h", (0, 0, 0, 0, u32::MAX), "4294967295h")]
    fn duration_parses(
        #[case] input: &str,
        #[case] (years, months, weeks, days, hours): (u32, u32, u32, u32, u32),
        #[case] shown: &str,
    ) {
        let got: RetentionDuration = input.parse().unwrap();
        let expected = RetentionDuration {
            years,
            months,
            weeks,
            days,
            hours,
        };
        assert_eq!(got, expected);
        assert_eq!(got.to_string(), shown);
        assert_eq!(shown.parse::<RetentionDuration>().unwrap(), got);
    }

    #[rstest]
    #[case("", "empty")]
    #[case("5", "number without a unit")]
    #[case("d", "expected a number")]
    #[case("3x", "unknown unit")]
    #[case("1d2d", "unit given twice")]
    #[case("-1d", "expected a number")]
    #[case("1 d", "unknown unit")]
    #[case("4294967296h", "number too large")]
    fn duration_rejects(#[case] input: &str, #[case] reason: &str) {
        assert_eq!(
            input.parse::<RetentionDuration>(),
            Err(RetentionError::InvalidDuration {
                input: input.into(),
                reason: reason.into()
            })
        );
    }

    #[rstest]
    #[case::month_overflow_like_go("2021-03-31T12:00:00Z", "1m", Some("2021-03-03T12:00:00Z"))]
    #[case::leap_day_minus_year("2020-02-29T00:00:00Z", "1y", Some("2019-03-01T00:00:00Z"))]
    #[case::months_across_year("2021-02-15T08:00:00Z", "3m", Some("2020-11-15T08:00:00Z"))]
    #[case::hours_across_midnight("2021-03-10T01:00:00Z", "3h", Some("2021-03-09T22:00:00Z"))]
    #[case::weeks("2021-03-10T00:00:00Z", "1w1d", Some("2021-03-02T00:00:00Z"))]
    #[case::keeps_offset("2021-03-31T01:00:00+05:00", "1m2h", Some("2021-03-02T23:00:00+05:00"))]
    #[case::out_of_range("2021-03-10T00:00:00Z", "4294967295y", None)]
    fn duration_before(#[case] from: &str, #[case] dur: &str, #[case] expected: Option<&str>) {
        let got = d(dur).before(t(from));
        assert_eq!(got, expected.map(t));
        if let Some(got) = got {
            assert_eq!(got.offset(), t(from).offset());
        }
    }

    #[rstest]
    #[case("7", Ok(7))]
    #[case("0", Ok(0))]
    #[case("-1", Ok(UNLIMITED))]
    #[case("unlimited", Ok(UNLIMITED))]
    #[case("-2", Err(()))]
    #[case("seven", Err(()))]
    #[case("", Err(()))]
    fn keep_count_parses(#[case] input: &str, #[case] expected: Result<u32, ()>) {
        assert_eq!(parse_keep_count(input).map_err(|_| ()), expected);
    }

    #[test]
    fn policy_maps_from_config() {
        let json = r#"{
            "keep-last": 3, "keep-hourly": 24, "keep-daily": "unlimited", "keep-weekly": -1,
            "keep-monthly": 12, "keep-yearly": 0,
            "keep-within": "2d", "keep-within-hourly": "12h", "keep-within-daily": "1m",
            "keep-within-weekly": "1y", "keep-within-monthly": "2y", "keep-within-yearly": "10y",
            "keep-tags": ["keep", "prod,db"], "keep-newest-min": 2
        }"#;
        let policy: RetentionPolicy = serde_json::from_str(json).unwrap();
        let expected = RetentionPolicy {
            keep_last: 3,
            keep_hourly: 24,
            keep_daily: UNLIMITED,
            keep_weekly: UNLIMITED,
            keep_monthly: 12,
            keep_yearly: 0,
            keep_within: d("2d"),
            keep_within_hourly: d("12h"),
            keep_within_daily: d("1m"),
            keep_within_weekly: d("1y"),
            keep_within_monthly: d("2y"),
            keep_within_yearly: d("10y"),
            keep_tags: vec!["keep".into(), "prod,db".into()],
            keep_newest_min: 2,
        };
        assert_eq!(policy, expected);
        let back = serde_json::to_value(&policy).unwrap();
        assert_eq!(back["keep-daily"], "unlimited");
        assert_eq!(back["keep-within"], "2d");
        assert!(back.get("keep-yearly").is_none());
        assert_eq!(
            serde_json::from_value::<RetentionPolicy>(back).unwrap(),
            policy
        );
    }

    #[test]
    fn policy_defaults_and_floor() {
        let policy: RetentionPolicy = serde_json::from_str(r#"{ "keep-daily": 7 }"#).unwrap();
        assert_eq!(
            policy,
            RetentionPolicy {
                keep_daily: 7,
                ..RetentionPolicy::default()
            }
        );
        assert_eq!(policy.keep_newest_min, 1);
        let empty: RetentionPolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, RetentionPolicy::default());
    }

    #[rstest]
    #[case::unknown_key(r#"{ "keep-dayly": 7 }"#, "unknown field")]
    #[case::snake_case_key(r#"{ "keep_daily": 7 }"#, "unknown field")]
    #[case::negative_count(r#"{ "keep-daily": -2 }"#, "only -1")]
    #[case::bad_duration(r#"{ "keep-within": "7" }"#, "number without a unit")]
    #[case::bad_count_string(r#"{ "keep-last": "many" }"#, "invalid keep count")]
    fn policy_config_rejects(#[case] json: &str, #[case] message: &str) {
        let err = serde_json::from_str::<RetentionPolicy>(json).unwrap_err();
        assert!(err.to_string().contains(message), "{err}");
    }

    #[test]
    fn policy_describes_itself() {
        let policy = RetentionPolicy {
            keep_last: 2,
            keep_daily: 7,
            keep_monthly: UNLIMITED,
            keep_within: d("2d"),
            keep_within_daily: d("1m"),
            keep_tags: vec!["prod,db".into()],
            ..RetentionPolicy::default()
        };
        assert_eq!(
            policy.to_string(),
            "keep 2 latest, 7 daily, all monthly snapshots, daily snapshots within 1m, \
             all snapshots with tags [prod,db], all snapshots within 2d of the newest, \
             never fewer than the newest 1"
        );
        assert_eq!(
            RetentionPolicy::default().to_string(),
            "keep all snapshots (empty policy)"
        );
    }

    #[test]
    fn decisions_serialize_for_json_output() {
        let policy = p(|p| p.keep_last = 1);
        let snaps = vec![
            snap(2, "2021-03-11T00:00:00Z"),
            snap(1, "2021-03-10T00:00:00Z"),
        ];
        let groups = apply_policy_at(&snaps, &policy, GroupBy::default(), t(NOW));
        let json = serde_json::to_value(&groups).unwrap();
        assert_eq!(json[0]["key"]["hostname"], "h1");
        assert_eq!(json[0]["snapshots"][0]["action"], "keep");
        assert_eq!(json[0]["snapshots"][0]["reasons"][0], "last snapshot");
        assert_eq!(json[0]["snapshots"][1]["action"], "remove");
        assert_eq!(json[0]["snapshots"][1]["snapshot"]["id"], id(1).to_hex());
        assert_eq!(groups[0].kept().count(), 1);
        assert_eq!(groups[0].removed().next().unwrap().snapshot.id, id(1));
    }

    // -- WAL ----------------------------------------------------------------

    fn seg(name: &str) -> WalSegment {
        name.parse().unwrap()
    }

    fn pos(log: u32, seg: u32) -> WalPosition {
        WalPosition { log, seg }
    }

    /// Base backup `n` with WAL from `log/start` to `log/stop` on timeline 1.
    fn base(n: u8, time: &str, start: (u32, u32), stop: (u32, u32)) -> BaseBackup {
        BaseBackup {
            id: id(n),
            time: t(time),
            start_wal: WalSegment {
                timeline: 1,
                log: start.0,
                seg: start.1,
            },
            stop_wal: WalSegment {
                timeline: 1,
                log: stop.0,
                seg: stop.1,
            },
        }
    }

    /// Monthly bases (kept by a "12 monthlies" policy) plus two recent weeklies.
    fn bases() -> Vec<BaseBackup> {
        vec![
            base(5, "2021-03-15T02:00:00Z", (4, 0x10), (4, 0x11)),
            base(1, "2021-01-01T02:00:00Z", (1, 0x00), (1, 0x02)),
            base(3, "2021-03-01T02:00:00Z", (3, 0x00), (3, 0x01)),
            base(2, "2021-02-01T02:00:00Z", (2, 0x00), (2, 0x01)),
            base(4, "2021-03-08T02:00:00Z", (3, 0x80), (3, 0x81)),
        ]
    }

    #[rstest]
    #[case("000000010000000000000002", (1, 0, 2), "000000010000000000000002")]
    #[case("0000000A00000016000000b3", (10, 0x16, 0xB3), "0000000A00000016000000B3")]
    #[case("FFFFFFFFFFFFFFFFFFFFFFFF", (u32::MAX, u32::MAX, u32::MAX), "FFFFFFFFFFFFFFFFFFFFFFFF")]
    fn wal_segment_parses(
        #[case] name: &str,
        #[case] (timeline, log, s): (u32, u32, u32),
        #[case] shown: &str,
    ) {
        let got = seg(name);
        assert_eq!(
            got,
            WalSegment {
                timeline,
                log,
                seg: s
            }
        );
        assert_eq!(got.to_string(), shown);
        assert_eq!(got.position(), pos(log, s));
    }

    #[rstest]
    #[case("00000001000000000000002")]
    #[case("0000000100000000000000020")]
    #[case("00000001000000000000000G")]
    #[case("000000010000000000000002.partial")]
    #[case("+0000001000000000000002")]
    #[case("")]
    fn wal_segment_rejects(#[case] name: &str) {
        assert_eq!(
            name.parse::<WalSegment>(),
            Err(RetentionError::InvalidWalSegment { input: name.into() })
        );
    }

    #[rstest]
    #[case("000000010000000000000003", Some(WalFile::Segment(WalSegment { timeline: 1, log: 0, seg: 3 })))]
    #[case("000000010000000000000003.partial", Some(WalFile::Partial(WalSegment { timeline: 1, log: 0, seg: 3 })))]
    #[case("000000010000000000000003.00000028.backup", Some(WalFile::BackupHistory(WalSegment { timeline: 1, log: 0, seg: 3 })))]
    #[case("00000002.history", Some(WalFile::TimelineHistory(2)))]
    #[case("000000010000000000000003.backup", None)]
    #[case("0000002.history", None)]
    #[case("000000010000000000000003.gz", None)]
    #[case("README", None)]
    fn wal_file_names(#[case] name: &str, #[case] expected: Option<WalFile>) {
        assert_eq!(WalFile::parse(name), expected);
    }

    #[rstest]
    #[case("0/2000028", 16 << 20, "000000010000000000000002")]
    #[case("16/B374D848", 16 << 20, "0000000100000016000000B3")]
    #[case("16/B374D848", 64 << 20, "00000001000000160000002C")]
    #[case("0/0", 1 << 20, "000000010000000000000000")]
    #[case("FFFFFFFF/FFFFFFFF", 1 << 30, "00000001FFFFFFFF00000003")]
    fn wal_segment_of_lsn(#[case] lsn: &str, #[case] size: u64, #[case] expected: &str) {
        let lsn = parse_lsn(lsn).unwrap();
        assert_eq!(
            WalSegment::containing_lsn(1, lsn, size)
                .unwrap()
                .to_string(),
            expected
        );
    }

    #[rstest]
    #[case(0)]
    #[case(3 << 20)]
    #[case(512 << 10)]
    #[case(2 << 30)]
    fn wal_segment_size_rejects(#[case] size: u64) {
        assert_eq!(
            WalSegment::containing_lsn(1, 0, size),
            Err(RetentionError::InvalidWalSegmentSize { size })
        );
    }

    #[rstest]
    #[case("0/0", Ok(0))]
    #[case("16/B374D848", Ok(0x16_B374_D848))]
    #[case("ffffffff/ffffffff", Ok(u64::MAX))]
    #[case("16", Err(()))]
    #[case("/1", Err(()))]
    #[case("1/123456789", Err(()))]
    #[case("1/+1", Err(()))]
    #[case("x/1", Err(()))]
    fn lsn_parses(#[case] input: &str, #[case] expected: Result<u64, ()>) {
        assert_eq!(parse_lsn(input).map_err(|_| ()), expected);
    }

    const ARCHIVE: &[&str] = &[
        "0000000100000000000000FF",
        "000000010000000100000000",
        "000000010000000100000002",
        "000000010000000100000003",
        "000000010000000100000003.00000028.backup",
        "000000010000000100000005.partial",
        "000000020000000100000001",
        "00000002.history",
        "000000010000000200000001",
        "000000010000000200000002",
        "0000000100000002000000FF",
        "000000010000000300000000",
        "000000010000000300000050",
        "000000010000000300000080",
        "000000010000000400000011",
        "000000010000000500000000",
        "000000030000000500000001",
        "not-a-wal-file",
    ];

    #[test]
    fn pitr_window_keeps_replay_from_newest_base_before_window() {
        // Window starts 2021-03-06: base 3 (1 March) is the newest one before it.
        let plan = WalRetention::new(d("14d")).plan(&bases(), t("2021-03-20T00:00:00Z"));
        assert_eq!(plan.window_start, Some(t("2021-03-06T00:00:00Z")));
        assert_eq!(plan.pitr_base, Some(id(3)));
        assert_eq!(plan.keep_from, Some(pos(3, 0)));
        assert_eq!(plan.oldest_required(), Some(pos(1, 0)));
        assert_eq!(
            plan.base_ranges.iter().map(|r| r.id).collect::<Vec<_>>(),
            [id(1), id(2), id(3), id(4), id(5)]
        );
        assert_eq!(
            plan.removable(ARCHIVE),
            [
                "0000000100000000000000FF",
                "000000010000000100000003",
                "000000010000000100000003.00000028.backup",
                "000000010000000100000005.partial",
                "000000010000000200000002",
                "0000000100000002000000FF",
            ]
        );
    }

    #[test]
    fn base_finished_exactly_at_window_start_anchors_pitr() {
        let plan = WalRetention::new(d("12d")).plan(&bases(), t("2021-03-20T02:00:00Z"));
        assert_eq!(plan.window_start, Some(t("2021-03-08T02:00:00Z")));
        assert_eq!(plan.pitr_base, Some(id(4)));
        assert_eq!(plan.keep_from, Some(pos(3, 0x80)));
        assert!(!plan.is_required(pos(3, 0x50)));
        assert!(plan.is_required(pos(3, 0x01)));
        assert!(plan.is_required(pos(3, 0x80)));
    }

    #[test]
    fn window_older_than_every_base_keeps_from_oldest_base() {
        let plan = WalRetention::new(d("1y")).plan(&bases(), t("2021-03-20T00:00:00Z"));
        assert_eq!(plan.pitr_base, Some(id(1)));
        assert_eq!(plan.keep_from, Some(pos(1, 0)));
        assert_eq!(plan.removable(ARCHIVE), ["0000000100000000000000FF"]);
    }

    #[test]
    fn no_pitr_keeps_base_ranges_and_everything_from_newest_base() {
        let plan = WalRetention::default().plan(&bases(), t("2021-03-20T00:00:00Z"));
        assert_eq!(plan.window_start, None);
        assert_eq!(plan.pitr_base, None);
        assert_eq!(plan.keep_from, Some(pos(4, 0x10)));
        assert_eq!(
            plan.removable(ARCHIVE),
            [
                "0000000100000000000000FF",
                "000000010000000100000003",
                "000000010000000100000003.00000028.backup",
                "000000010000000100000005.partial",
                "000000010000000200000002",
                "0000000100000002000000FF",
                "000000010000000300000050",
            ]
        );
    }

    #[test]
    fn without_base_backups_nothing_is_removable() {
        let plan = WalRetention::new(d("14d")).plan(&[], t("2021-03-20T00:00:00Z"));
        assert_eq!(plan.oldest_required(), None);
        assert!(plan.removable(ARCHIVE).is_empty());
    }

    #[test]
    fn removable_ignores_timeline_and_keeps_history_files() {
        let kept = [base(1, "2021-03-01T00:00:00Z", (5, 0), (5, 1))];
        let plan = WalRetention::new(d("1d")).plan(&kept, t("2021-03-20T00:00:00Z"));
        let names: Vec<String> = [
            "000000030000000400000000",
            "000000010000000500000000",
            "000000090000000400000FFF",
            "00000003.history",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let removable = plan.removable(&names);
        assert_eq!(removable, [names[0].as_str(), names[2].as_str()]);
    }

    #[test]
    fn wal_types_serialize_as_names() {
        let b = base(1, "2021-03-01T00:00:00Z", (5, 0), (5, 1));
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(json["start_wal"], "000000010000000500000000");
        assert_eq!(serde_json::from_value::<BaseBackup>(json).unwrap(), b);
        let r: WalRetention = serde_json::from_str(r#"{ "pitr-window": "14d" }"#).unwrap();
        assert_eq!(r.pitr_window, d("14d"));
    }
}
