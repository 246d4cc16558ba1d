//! Choosing snapshots: by id prefix, `latest`, a point in time, and filters.

use chrono::{DateTime, FixedOffset, Local, NaiveDate, NaiveDateTime, TimeZone};

use crate::error::{Error, Result};
use crate::snapshot::{Snapshot, SnapshotEntry};

/// Host, tag, path and source filters; empty lists match everything.
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter {
    pub hosts: Vec<String>,
    /// Each entry is a comma-separated set of tags that must all be present;
    /// a snapshot matches if it matches any entry.
    pub tags: Vec<String>,
    /// Snapshot must contain every one of these paths.
    pub paths: Vec<String>,
    pub source: Option<String>,
}

impl SnapshotFilter {
    pub fn matches(&self, s: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.hostname))
            && (self.tags.is_empty()
                || self.tags.iter().any(|set| {
                    set.split(',')
                        .filter(|t| !t.is_empty())
                        .all(|t| s.tags.iter().any(|x| x == t))
                }))
            && self.paths.iter().all(|p| {
                s.paths
                    .iter()
                    .any(|x| x == p.trim_end_matches('/') || x == p)
            })
            && self.source.as_ref().is_none_or(|src| &s.source == src)
    }

    pub fn apply(&self, snaps: Vec<SnapshotEntry>) -> Vec<SnapshotEntry> {
        snaps
            .into_iter()
            .filter(|s| self.matches(&s.snapshot))
            .collect()
    }
}

/// Resolve `spec` (`latest`, or an id prefix of at least 4 hex digits) among
/// `snaps` (oldest first), after applying `filter` and, with `at`, keeping
/// only snapshots taken at or before that time. `latest` passes over restores'
/// safety dumps ([`crate::snapshot::SAFETY_TAG`]) unless `filter` asks for that
/// tag: after a restore, `restore latest` must mean the latest backup again,
/// not the copy of what the restore replaced.
///
/// # Errors
/// [`Error::SnapshotNotFound`] or [`Error::AmbiguousSnapshot`] naming the spec.
pub fn resolve(
    snaps: &[SnapshotEntry],
    spec: &str,
    filter: &SnapshotFilter,
    at: Option<DateTime<FixedOffset>>,
) -> Result<SnapshotEntry> {
    let candidates: Vec<&SnapshotEntry> = snaps
        .iter()
        .filter(|s| filter.matches(&s.snapshot))
        .filter(|s| at.is_none_or(|t| s.snapshot.time <= t))
        .collect();
    if spec == "latest" {
        use crate::snapshot::{SAFETY_OF_PREFIX, SAFETY_TAG};
        let wants_safety = filter.tags.iter().any(|set| {
            set.split(',')
                .any(|t| t == SAFETY_TAG || t.starts_with(SAFETY_OF_PREFIX))
        });
        return candidates
            .iter()
            .filter(|s| wants_safety || !s.snapshot.is_safety_dump())
            .max_by_key(|s| s.snapshot.time)
            .map(|s| (*s).clone())
            .ok_or_else(|| {
                // Nothing left, so every candidate, if any, was a safety dump passed over.
                let passed_over = if wants_safety { 0 } else { candidates.len() };
                let mut what = match at {
                    Some(t) => format!("latest at or before {t}"),
                    None => "latest".into(),
                };
                if passed_over > 0 {
                    what.push_str(&format!(
                        " ({passed_over} restore safety dump(s) passed over; --tag {SAFETY_TAG} picks them)"
                    ));
                }
                Error::SnapshotNotFound(what)
            });
    }
    if spec.len() < 4 || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::invalid(
            "snapshot",
            format!("{spec:?}: expected \"latest\" or an id prefix of at least 4 hex digits"),
        ));
    }
    let spec_l = spec.to_ascii_lowercase();
    let found: Vec<&&SnapshotEntry> = candidates
        .iter()
        .filter(|s| s.id.to_hex().starts_with(&spec_l))
        .collect();
    match found.as_slice() {
        [] => Err(Error::SnapshotNotFound(spec.to_string())),
        [one] => Ok((**one).clone()),
        many => Err(Error::AmbiguousSnapshot {
            prefix: spec.to_string(),
            matches: many
                .iter()
                .map(|s| s.id.short())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Parse a point in time: RFC 3339, `YYYY-MM-DD HH:MM[:SS]` or `YYYY-MM-DD`
/// (local time zone unless an offset is given; a bare date means its end).
///
/// # Errors
/// [`Error::Invalid`] quoting the text.
pub fn parse_time(s: &str) -> Result<DateTime<FixedOffset>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t);
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, fmt) {
            if let Some(t) = Local.from_local_datetime(&n).earliest() {
                return Ok(t.fixed_offset());
            }
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let end = d.and_hms_opt(23, 59, 59).expect("valid time");
        if let Some(t) = Local.from_local_datetime(&end).earliest() {
            return Ok(t.fixed_offset());
        }
    }
    Err(Error::invalid(
        "time",
        format!("{s:?}: expected \"YYYY-MM-DD HH:MM[:SS]\", \"YYYY-MM-DD\" or RFC 3339"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::Id;

    /// The id `resolve` picks (it must pick one).
    fn resolved(
        snaps: &[SnapshotEntry],
        spec: &str,
        f: &SnapshotFilter,
        at: Option<DateTime<FixedOffset>>,
    ) -> Id {
        resolve(snaps, spec, f, at).unwrap().id
    }
    fn snap(id: u8, time: &str, host: &str, tags: &[&str]) -> SnapshotEntry {
        SnapshotEntry {
            id: Id([id; 32]),
            snapshot: Snapshot {
                version: 1,
                time: DateTime::parse_from_rfc3339(time).unwrap(),
                hostname: host.into(),
                username: String::new(),
                paths: vec!["/data".into()],
                tags: tags.iter().map(|t| t.to_string()).collect(),
                source: "files".into(),
                tree: Id([0; 32]),
                parent: None,
                pinned: false,
                summary: None,
                metadata: None,
                program: String::new(),
                original: None,
            },
        }
    }

    #[test]
    fn latest_at_and_prefix() {
        let snaps = vec![
            snap(0xaa, "2026-11-19T10:00:00+00:00", "a", &["daily"]),
            snap(0xab, "2026-11-20T10:00:00+00:00", "b", &[]),
            snap(0xbb, "2026-11-21T10:00:00+00:00", "a", &["daily", "db"]),
        ];
        let f = SnapshotFilter::default();
        assert_eq!(resolved(&snaps, "latest", &f, None), Id([0xbb; 32]));
        let at = parse_time("2026-11-20T12:00:00+00:00").unwrap();
        assert_eq!(resolved(&snaps, "latest", &f, Some(at)), Id([0xab; 32]));
        let host_a = SnapshotFilter {
            hosts: vec!["a".into()],
            ..Default::default()
        };
        assert_eq!(
            resolved(&snaps, "latest", &host_a, Some(at)),
            Id([0xaa; 32])
        );
        let tagged = SnapshotFilter {
            tags: vec!["daily,db".into()],
            ..Default::default()
        };
        assert_eq!(resolved(&snaps, "latest", &tagged, None), Id([0xbb; 32]));
        assert_eq!(resolved(&snaps, "bbbb", &f, None), Id([0xbb; 32]));
        assert!(resolve(&snaps, "aaaa", &f, None).is_ok());
        assert!(matches!(
            resolve(&snaps, "cccc", &f, None),
            Err(Error::SnapshotNotFound(_))
        ));
        let early = parse_time("2026-01-01").unwrap();
        assert!(resolve(&snaps, "latest", &f, Some(early)).is_err());
        assert!(resolve(&snaps, "xyz!", &f, None).is_err());
    }

    #[test]
    fn latest_passes_over_safety_dumps_unless_asked_for_them() {
        let snaps = vec![
            snap(0xaa, "2026-11-19T10:00:00+00:00", "a", &[]),
            snap(
                0xbb,
                "2026-11-20T10:00:00+00:00",
                "a",
                &["safety", "before-restore-of-aaaaaaaa"],
            ),
            // A backup a user tagged `safety` is a backup.
            snap(0xcc, "2026-11-18T10:00:00+00:00", "b", &["safety"]),
        ];
        let f = SnapshotFilter::default();
        assert_eq!(resolved(&snaps, "latest", &f, None), Id([0xaa; 32]));
        let at = parse_time("2026-11-21").unwrap();
        assert_eq!(resolved(&snaps, "latest", &f, Some(at)), Id([0xaa; 32]));
        let safety = SnapshotFilter {
            tags: vec!["safety".into()],
            ..Default::default()
        };
        assert_eq!(resolved(&snaps, "latest", &safety, None), Id([0xbb; 32]));
        let restored = SnapshotFilter {
            tags: vec!["before-restore-of-aaaaaaaa".into()],
            ..Default::default()
        };
        assert_eq!(resolved(&snaps, "latest", &restored, None), Id([0xbb; 32]));
        assert_eq!(resolved(&snaps, "bbbb", &f, None), Id([0xbb; 32]));
        let host_b = SnapshotFilter {
            hosts: vec!["b".into()],
            ..Default::default()
        };
        assert_eq!(resolved(&snaps, "latest", &host_b, None), Id([0xcc; 32]));
        // Only safety dumps: `latest` finds none and says why.
        match resolve(&snaps[1..2], "latest", &f, None) {
            Err(Error::SnapshotNotFound(what)) => {
                assert!(
                    what.contains("1 restore safety dump(s) passed over"),
                    "{what}"
                );
                assert!(what.contains("--tag safety"), "{what}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ambiguous_prefix() {
        let mut a = snap(0xab, "2026-11-19T10:00:00+00:00", "a", &[]);
        a.id.0[0] = 0xab;
        a.id.0[1] = 0xcd;
        let mut b = a.clone();
        b.id.0[2] = 0x01;
        assert!(matches!(
            resolve(&[a, b], "abcd", &SnapshotFilter::default(), None),
            Err(Error::AmbiguousSnapshot { .. })
        ));
    }

    #[test]
    fn times() {
        assert!(parse_time("2026-11-20 14:00").is_ok());
        assert!(parse_time("2026-11-20 14:00:05").is_ok());
        assert!(parse_time("2026-11-20").is_ok());
        assert!(parse_time("2026-11-20T14:00:00+02:00").is_ok());
        assert!(parse_time("yesterday").is_err());
    }
}
