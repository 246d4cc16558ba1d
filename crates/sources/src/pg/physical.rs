//! PostgreSQL physical backups and point-in-time recovery, without repository knowledge:
//!
//! * [`BaseBackupStream`]: `pg_basebackup -D - -Ft -X fetch` as one tar stream, scanned while
//!   it passes for `backup_label` (start LSN, checkpoint, timeline) and the `backup_manifest`
//!   that pg_basebackup injects at the end (its `WAL-Ranges` give the stop LSN);
//! * [`cluster_info`]: system identifier, WAL segment size, versions, archiving settings;
//! * [`WalPageHeader`]: the long page header that starts every WAL segment (system
//!   identifier, segment size, the segment's own address), and [`control_system_id`] for
//!   files without one (`.history`, `.backup`);
//! * [`extract_base_backup`] and [`write_recovery_config`]: turn a stored base backup back
//!   into a data directory that recovers to a target when started.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::PgConnection;
use crate::process::{self, ChildStream};
use crate::{Error, Result};

/// `XLP_LONG_HEADER`: the first page of a segment carries the long header.
const XLP_LONG_HEADER: u16 = 0x0002;

/// Parse an LSN as PostgreSQL prints it (`16/B374D848`).
///
/// # Errors
/// [`Error::Format`] quoting the input.
pub fn parse_lsn(s: &str) -> Result<u64> {
    let err = || Error::Format(format!("{s:?} is not an LSN like 0/16B3748"));
    let (hi, lo) = s.trim().split_once('/').ok_or_else(err)?;
    let part = |p: &str| {
        if p.is_empty() || p.len() > 8 {
            return Err(err());
        }
        u32::from_str_radix(p, 16).map_err(|_| err())
    };
    Ok((u64::from(part(hi)?) << 32) | u64::from(part(lo)?))
}

/// Format an LSN as PostgreSQL does (`16/B374D848`).
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Name of the WAL segment holding byte `lsn` on `timeline`.
pub fn segment_name(timeline: u32, lsn: u64, segment_size: u64) -> String {
    let segno = lsn / segment_size.max(1);
    let per_log = 0x1_0000_0000 / segment_size.max(1);
    format!(
        "{timeline:08X}{:08X}{:08X}",
        segno / per_log.max(1),
        segno % per_log.max(1)
    )
}

/// Segment number (`log * segments_per_log + seg`) of a 24-hex-digit segment name.
pub fn segment_number(name: &str, segment_size: u64) -> Option<u64> {
    let base = name.get(..24)?;
    let log = u64::from_str_radix(base.get(8..16)?, 16).ok()?;
    let seg = u64::from_str_radix(base.get(16..24)?, 16).ok()?;
    Some(log * (0x1_0000_0000 / segment_size.max(1)) + seg)
}

/// The long page header at the start of every WAL segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalPageHeader {
    /// `XLOG_PAGE_MAGIC` (changes with major versions: 0xD110 is PostgreSQL 15).
    pub magic: u16,
    /// Timeline of the first page.
    pub timeline: u32,
    /// WAL address of the first page: the segment's start LSN.
    pub page_addr: u64,
    /// The cluster's system identifier.
    pub system_identifier: u64,
    /// `wal_segment_size`.
    pub segment_size: u32,
    /// `XLOG_BLCKSZ`.
    pub block_size: u32,
}

impl WalPageHeader {
    /// Parse the first 40 bytes of a segment file (little-endian, as written on x86-64 and
    /// ARM64 servers).
    ///
    /// # Errors
    /// [`Error::Format`] when the bytes are not a long page header.
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() < 40 {
            return Err(Error::Format(
                "WAL segment shorter than its page header".into(),
            ));
        }
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let h = WalPageHeader {
            magic: u16_at(0),
            timeline: u32_at(4),
            page_addr: u64_at(8),
            system_identifier: u64_at(24),
            segment_size: u32_at(32),
            block_size: u32_at(36),
        };
        let info = u16_at(2);
        let sane = info & XLP_LONG_HEADER != 0
            && h.magic & 0xF000 == 0xD000
            && h.segment_size.is_power_of_two()
            && (1 << 20..=1 << 30).contains(&h.segment_size)
            && h.block_size.is_power_of_two()
            && h.system_identifier != 0;
        if !sane {
            return Err(Error::Format(
                "not a PostgreSQL WAL segment (no valid long page header)".into(),
            ));
        }
        Ok(h)
    }

    /// Check that the header belongs to the segment called `name` (its page address is the
    /// segment's start).
    ///
    /// # Errors
    /// [`Error::Format`] naming both.
    pub fn check_name(&self, name: &str) -> Result<()> {
        let size = u64::from(self.segment_size);
        match segment_number(name, size) {
            Some(n) if n * size == self.page_addr => Ok(()),
            _ => Err(Error::Format(format!(
                "the file named {name} holds the WAL segment starting at {} (segment {})",
                format_lsn(self.page_addr),
                segment_name(self.timeline, self.page_addr, size)
            ))),
        }
    }
}

/// The system identifier in `PGDATA/global/pg_control` (its first 8 bytes).
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn control_system_id(pgdata: &Path) -> Result<u64> {
    let path = pgdata.join("global").join("pg_control");
    let mut b = [0u8; 8];
    fs::File::open(&path)
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok(u64::from_le_bytes(b))
}

/// What a running cluster says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub system_identifier: u64,
    pub wal_segment_size: u64,
    pub server_version: String,
    pub server_version_num: u32,
    pub in_recovery: bool,
    pub archive_mode: String,
    pub archive_command: String,
}

/// Query [`ClusterInfo`] over `conn`.
///
/// # Errors
/// Connection failures; [`Error::Format`] when the answer cannot be parsed.
pub fn cluster_info(conn: &PgConnection) -> Result<ClusterInfo> {
    let out = conn.psql(
        &conn.maintenance(),
        "SELECT system_identifier, current_setting('wal_segment_size', true), \
         current_setting('server_version'), current_setting('server_version_num'), \
         pg_is_in_recovery(), current_setting('archive_mode'), current_setting('archive_command') \
         FROM pg_control_system()",
    )?;
    let f: Vec<&str> = out.splitn(7, '|').collect();
    let bad = || Error::Format(format!("unexpected cluster info {out:?}"));
    if f.len() != 7 {
        return Err(bad());
    }
    Ok(ClusterInfo {
        system_identifier: f[0].parse().map_err(|_| bad())?,
        wal_segment_size: parse_size_setting(f[1]).ok_or_else(bad)?,
        server_version: f[2].to_string(),
        server_version_num: f[3].parse().map_err(|_| bad())?,
        in_recovery: f[4] == "t",
        archive_mode: f[5].to_string(),
        archive_command: f[6].to_string(),
    })
}

/// `current_setting('wal_segment_size')` prints `16MB`.
fn parse_size_setting(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let n: u64 = digits.parse().ok()?;
    Some(match &s[digits.len()..] {
        "" | "B" => n,
        "kB" => n << 10,
        "MB" => n << 20,
        "GB" => n << 30,
        _ => return None,
    })
}

/// The server's clock, RFC 3339 in UTC (recovery targets compare against commit times
/// taken from that clock).
///
/// # Errors
/// Connection failures.
pub fn server_now(conn: &PgConnection) -> Result<chrono::DateTime<chrono::FixedOffset>> {
    let out = conn.psql(
        &conn.maintenance(),
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )?;
    chrono::DateTime::parse_from_rfc3339(out.trim())
        .map_err(|e| Error::Format(format!("server time {out:?}: {e}")))
}

/// Options for [`BaseBackupStream::start`].
#[derive(Debug, Clone, Default)]
pub struct BaseBackupOptions {
    /// `--checkpoint=fast` instead of a spread checkpoint.
    pub fast_checkpoint: bool,
    /// `--label`.
    pub label: String,
    /// `--max-rate` (e.g. `50M`).
    pub max_rate: Option<String>,
}

/// Where a base backup starts and stops, from its `backup_label` and manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseBackupPoints {
    pub timeline: u32,
    pub start_lsn: u64,
    pub checkpoint_lsn: u64,
    pub stop_lsn: u64,
    /// `primary` or `standby`.
    pub backup_from: String,
    pub label: String,
}

/// `pg_basebackup -D - -Ft -X fetch` streaming one tar archive of the data directory (with
/// the WAL it needs and the backup manifest). Reading it to the end waits for the tool and
/// fails if it failed; then [`BaseBackupStream::points`] tells where the backup starts and
/// stops.
pub struct BaseBackupStream {
    child: ChildStream,
    scan: TarScan,
    bytes: u64,
}

impl BaseBackupStream {
    /// Start `pg_basebackup` against the server `conn` reaches (replication connection;
    /// the same libpq settings).
    ///
    /// # Errors
    /// [`Error::Config`] when `pg_basebackup` cannot be found.
    pub fn start(conn: &PgConnection, opts: &BaseBackupOptions) -> Result<Self> {
        let mut cmd = conn.command("pg_basebackup", &conn.maintenance());
        cmd.args(["-D", "-", "-Ft", "-X", "fetch", "--no-password"]);
        cmd.arg(if opts.fast_checkpoint {
            "--checkpoint=fast"
        } else {
            "--checkpoint=spread"
        });
        if !opts.label.is_empty() {
            cmd.arg(format!("--label={}", opts.label));
        }
        if let Some(r) = &opts.max_rate {
            cmd.arg(format!("--max-rate={r}"));
        }
        Ok(BaseBackupStream {
            child: ChildStream::spawn(cmd, conn.secrets())?,
            scan: TarScan::default(),
            bytes: 0,
        })
    }

    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Start and stop points, once the stream was read to its end.
    ///
    /// # Errors
    /// [`Error::Format`] when the archive had no `backup_label` or manifest.
    pub fn points(&self) -> Result<BaseBackupPoints> {
        let label =
            self.scan.label.as_deref().ok_or_else(|| {
                Error::Format("pg_basebackup's archive has no backup_label".into())
            })?;
        let manifest = self.scan.manifest.as_deref().ok_or_else(|| {
            Error::Format(
                "pg_basebackup's archive has no backup_manifest (pg_basebackup 13 or newer is \
                 needed, without --no-manifest)"
                    .into(),
            )
        })?;
        parse_points(label, manifest)
    }
}

impl Read for BaseBackupStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.child.read(buf)?;
        self.scan
            .feed(&buf[..n])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Parse `backup_label` text and the manifest JSON into [`BaseBackupPoints`].
///
/// # Errors
/// [`Error::Format`] naming what is missing.
pub fn parse_points(label: &[u8], manifest: &[u8]) -> Result<BaseBackupPoints> {
    let text = String::from_utf8_lossy(label);
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).map(str::trim))
            .ok_or_else(|| Error::Format(format!("backup_label has no {key:?} line")))
    };
    let start = field("START WAL LOCATION:")?;
    let start_lsn = parse_lsn(start.split_whitespace().next().unwrap_or_default())?;
    let checkpoint_lsn = parse_lsn(field("CHECKPOINT LOCATION:")?)?;
    let timeline: u32 = field("START TIMELINE:")?
        .parse()
        .map_err(|_| Error::Format("backup_label: bad START TIMELINE".into()))?;
    let backup_from = field("BACKUP FROM:").unwrap_or("primary").to_string();
    let label_text = field("LABEL:").unwrap_or_default().to_string();

    #[derive(Deserialize)]
    struct Range {
        #[serde(rename = "Timeline")]
        timeline: u32,
        #[serde(rename = "End-LSN")]
        end: String,
    }
    #[derive(Deserialize)]
    struct Manifest {
        #[serde(rename = "WAL-Ranges")]
        wal_ranges: Vec<Range>,
    }
    let m: Manifest = serde_json::from_slice(manifest)
        .map_err(|e| Error::Format(format!("backup_manifest: {e}")))?;
    let last = m
        .wal_ranges
        .last()
        .ok_or_else(|| Error::Format("backup_manifest has no WAL-Ranges".into()))?;
    let stop_lsn = parse_lsn(&last.end)?;
    Ok(BaseBackupPoints {
        timeline: last.timeline.max(timeline),
        start_lsn,
        checkpoint_lsn,
        stop_lsn,
        backup_from,
        label: label_text,
    })
}

/// A pass-through scanner of a ustar stream that keeps the content of `backup_label` and
/// `backup_manifest` (the only members pg_basebackup's archive needs to be read for).
#[derive(Default)]
struct TarScan {
    header: Vec<u8>,
    /// Data bytes left in the current member, then padding bytes.
    remaining: u64,
    padding: u64,
    capture: Option<Capture>,
    buf: Vec<u8>,
    label: Option<Vec<u8>>,
    manifest: Option<Vec<u8>>,
    ended: bool,
}

#[derive(Clone, Copy)]
enum Capture {
    Label,
    Manifest,
}

const MAX_CAPTURE: u64 = 1 << 30;

impl TarScan {
    fn feed(&mut self, mut data: &[u8]) -> std::result::Result<(), String> {
        while !data.is_empty() && !self.ended {
            if self.remaining > 0 {
                let n = (self.remaining.min(data.len() as u64)) as usize;
                if self.capture.is_some() {
                    self.buf.extend_from_slice(&data[..n]);
                }
                self.remaining -= n as u64;
                data = &data[n..];
                if self.remaining == 0 {
                    match self.capture.take() {
                        Some(Capture::Label) => self.label = Some(std::mem::take(&mut self.buf)),
                        Some(Capture::Manifest) => {
                            self.manifest = Some(std::mem::take(&mut self.buf))
                        }
                        None => {}
                    }
                }
                continue;
            }
            if self.padding > 0 {
                let n = self.padding.min(data.len() as u64);
                self.padding -= n;
                data = &data[n as usize..];
                continue;
            }
            let need = 512 - self.header.len();
            let n = need.min(data.len());
            self.header.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.header.len() == 512 {
                let h = std::mem::take(&mut self.header);
                self.header_done(&h)?;
            }
        }
        Ok(())
    }

    fn header_done(&mut self, h: &[u8]) -> std::result::Result<(), String> {
        if h.iter().all(|&b| b == 0) {
            // End-of-archive marker: whatever follows is padding.
            self.ended = true;
            return Ok(());
        }
        let stored: u32 = h[148..156]
            .iter()
            .filter(|b| b.is_ascii_digit())
            .fold(0, |a, b| a * 8 + u32::from(b - b'0'));
        let sum: u32 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        if sum != stored {
            return Err("pg_basebackup's output is not a tar archive (bad header checksum)".into());
        }
        let size = if h[124] & 0x80 != 0 {
            // base-256 (PostgreSQL writes it for members of 8 GiB and more)
            h[125..136]
                .iter()
                .fold(0u64, |a, &b| (a << 8) | u64::from(b))
        } else {
            let s = String::from_utf8_lossy(&h[124..136]);
            let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
            if s.is_empty() {
                0
            } else {
                u64::from_str_radix(s, 8).map_err(|_| format!("bad tar member size {s:?}"))?
            }
        };
        let name_end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = &h[..name_end];
        let typeflag = h[156];
        self.remaining = size;
        self.padding = (512 - size % 512) % 512;
        self.capture = match (name, typeflag) {
            (b"backup_label", b'0' | 0) => Some(Capture::Label),
            (b"backup_manifest", b'0' | 0) => Some(Capture::Manifest),
            _ => None,
        };
        if self.capture.is_some() && size > MAX_CAPTURE {
            return Err(format!("{} is {size} bytes", String::from_utf8_lossy(name)));
        }
        self.buf.clear();
        if size == 0 {
            match self.capture.take() {
                Some(Capture::Label) => self.label = Some(Vec::new()),
                Some(Capture::Manifest) => self.manifest = Some(Vec::new()),
                None => {}
            }
        }
        Ok(())
    }
}

/// Whether `dir` is usable as a restore target: missing, or an empty directory.
///
/// # Errors
/// [`Error::Refused`] naming the directory when it is not empty or not a directory.
pub fn check_empty_target(dir: &Path) -> Result<()> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Refused(format!(
                    "{} is not empty: a data directory is restored only into a new or empty \
                     directory",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => Err(Error::Refused(format!(
            "{} exists and is not a directory",
            dir.display()
        ))),
        Err(e) => Err(Error::io(format!("reading {}", dir.display()), e)),
    }
}

/// Unpack a base backup tar into `dir` (new or empty; created with mode 0700). When running
/// as root, owners recorded in the archive are restored and `dir` gets the owner of
/// `PG_VERSION`, so the cluster's user can start it.
///
/// # Errors
/// [`Error::Refused`] for a non-empty target; I/O errors naming `dir`.
pub fn extract_base_backup(reader: impl Read, dir: &Path) -> Result<u64> {
    check_empty_target(dir)?;
    let ctx = |what: &str| format!("{what} {}", dir.display());
    fs::create_dir_all(dir).map_err(|e| Error::io(ctx("creating"), e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(ctx("setting permissions of"), e))?;
    let root = nix::unistd::geteuid().is_root();
    let mut counted = CountingReader {
        inner: reader,
        n: 0,
    };
    let mut archive = tar::Archive::new(&mut counted);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(root);
    archive.set_overwrite(false);
    archive
        .unpack(dir)
        .map_err(|e| Error::io(ctx("unpacking the base backup into"), e))?;
    let version = dir.join("PG_VERSION");
    let meta = fs::metadata(&version).map_err(|e| {
        Error::io(
            format!("{} (not a PostgreSQL data directory?)", version.display()),
            e,
        )
    })?;
    if root {
        std::os::unix::fs::chown(dir, Some(meta.uid()), Some(meta.gid()))
            .map_err(|e| Error::io(ctx("chown"), e))?;
    }
    Ok(counted.n)
}

struct CountingReader<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum RecoveryTarget {
    /// Replay every archived WAL file (no `recovery_target_*`).
    Latest,
    /// `recovery_target = 'immediate'`: stop as soon as the backup is consistent.
    Immediate,
    /// `recovery_target_time` (a timestamp with time zone).
    Time(String),
    /// `recovery_target_lsn`.
    Lsn(String),
    /// `recovery_target_name` (a `pg_create_restore_point` name).
    Name(String),
}

/// Settings written by [`write_recovery_config`].
#[derive(Debug, Clone)]
pub struct RecoveryConfig {
    /// The full `restore_command` (shell command with `%f` and `%p`).
    pub restore_command: String,
    pub target: RecoveryTarget,
    /// `recovery_target_action`: `promote`, `pause` or `shutdown`.
    pub action: String,
    /// A comment line written above the settings.
    pub comment: String,
}

/// Quote a value for `postgresql.conf`.
pub fn conf_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

/// Quote one argument for `/bin/sh` (PostgreSQL runs `restore_command` with `system()`).
pub fn shell_quote(v: &str) -> String {
    if !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-=:,+@%".contains(&b))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
}

/// Append the recovery settings to `dir/postgresql.auto.conf` and create
/// `dir/recovery.signal` (PostgreSQL 12 and newer), owned like `PG_VERSION`.
///
/// # Errors
/// [`Error::Refused`] for PostgreSQL before 12; I/O errors naming the file.
pub fn write_recovery_config(dir: &Path, cfg: &RecoveryConfig) -> Result<()> {
    let version_path = dir.join("PG_VERSION");
    let version = fs::read_to_string(&version_path)
        .map_err(|e| Error::io(format!("reading {}", version_path.display()), e))?;
    let major: u32 = version.trim().parse().unwrap_or(0);
    if major < 12 {
        return Err(Error::Refused(format!(
            "PostgreSQL {} uses recovery.conf; only 12 and newer are supported",
            version.trim()
        )));
    }
    let mut text = format!("\n# {}\n", cfg.comment.replace('\n', " "));
    text.push_str(&format!(
        "restore_command = {}\n",
        conf_quote(&cfg.restore_command)
    ));
    let target = match &cfg.target {
        RecoveryTarget::Latest => None,
        RecoveryTarget::Immediate => Some(("recovery_target", "immediate".to_string())),
        RecoveryTarget::Time(t) => Some(("recovery_target_time", t.clone())),
        RecoveryTarget::Lsn(l) => Some(("recovery_target_lsn", l.clone())),
        RecoveryTarget::Name(n) => Some(("recovery_target_name", n.clone())),
    };
    if let Some((k, v)) = target {
        text.push_str(&format!("{k} = {}\n", conf_quote(&v)));
        text.push_str(&format!(
            "recovery_target_action = {}\n",
            conf_quote(&cfg.action)
        ));
    }
    text.push_str("recovery_target_timeline = 'latest'\n");
    let owner = fs::metadata(&version_path).map(|m| (m.uid(), m.gid())).ok();
    let auto = dir.join("postgresql.auto.conf");
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode_0600()
        .open(&auto)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| Error::io(format!("writing {}", auto.display()), e))?;
    let signal = dir.join("recovery.signal");
    fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode_0600()
        .open(&signal)
        .map_err(|e| Error::io(format!("writing {}", signal.display()), e))?;
    if nix::unistd::geteuid().is_root() {
        if let Some((uid, gid)) = owner {
            for p in [&auto, &signal] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .map_err(|e| Error::io(format!("chown {}", p.display()), e))?;
            }
        }
    }
    Ok(())
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

/// Run `pg_controldata`-free checks on a restored directory: `PG_VERSION` is readable.
/// (Kept small on purpose; the server itself validates the rest when it starts.)
///
/// # Errors
/// I/O errors naming the file.
pub fn data_dir_version(dir: &Path) -> Result<String> {
    let p = dir.join("PG_VERSION");
    fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .map_err(|e| Error::io(format!("reading {}", p.display()), e))
}

/// Run `psql` once to check the server is reachable (used before long operations).
///
/// # Errors
/// Connection failures with psql's message.
pub fn ping(conn: &PgConnection) -> Result<()> {
    let mut cmd = conn.command("psql", &conn.maintenance());
    cmd.args(["-X", "-w", "-A", "-t", "-q", "-c", "SELECT 1"]);
    process::output(cmd, &conn.secrets()).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    const LABEL: &[u8] = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
START TIME: 2026-11-21 18:35:13 UTC\nLABEL: nightly\nSTART TIMELINE: 1\n";
    const MANIFEST: &[u8] = br#"{ "PostgreSQL-Backup-Manifest-Version": 1, "Files": [],
"WAL-Ranges": [ { "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" } ] }"#;

    #[test]
    fn tar_scan_finds_label_and_manifest_in_any_chunking() {
        let big = vec![7u8; 70_000];
        let t = tar_of(&[
            ("backup_label", LABEL),
            ("base/1/1259", &big),
            ("empty", b""),
            ("backup_manifest", MANIFEST),
        ]);
        for chunk in [1, 511, 512, 513, 4096, t.len()] {
            let mut s = TarScan::default();
            for c in t.chunks(chunk) {
                s.feed(c).unwrap();
            }
            assert_eq!(s.label.as_deref(), Some(LABEL), "chunk {chunk}");
            assert_eq!(s.manifest.as_deref(), Some(MANIFEST), "chunk {chunk}");
        }
        let p = parse_points(LABEL, MANIFEST).unwrap();
        assert_eq!(p.start_lsn, 0x2000028);
        assert_eq!(p.checkpoint_lsn, 0x2000060);
        assert_eq!(p.stop_lsn, 0x2000100);
        assert_eq!(p.timeline, 1);
        assert_eq!(p.label, "nightly");
    }

    #[test]
    fn tar_scan_rejects_garbage() {
        let mut s = TarScan::default();
        assert!(s.feed(&[b'x'; 1024]).is_err());
    }

    #[test]
    fn lsn_and_segment_names() {
        assert_eq!(parse_lsn("16/B374D848").unwrap(), 0x16_B374_D848);
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert!(parse_lsn("x").is_err());
        let seg = 16 << 20;
        assert_eq!(segment_name(1, 0x2000100, seg), "000000010000000000000002");
        assert_eq!(
            segment_name(3, 0x1_FF00_0000, seg),
            "0000000300000001000000FF"
        );
        assert_eq!(segment_number("0000000300000001000000FF", seg), Some(0x1FF));
        assert_eq!(parse_size_setting("16MB"), Some(16 << 20));
        assert_eq!(parse_size_setting("1GB"), Some(1 << 30));
    }

    #[test]
    fn wal_header_checks() {
        let mut b = vec![0u8; 64];
        b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        b[2..4].copy_from_slice(&2u16.to_le_bytes());
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[8..16].copy_from_slice(&0x200_0000u64.to_le_bytes());
        b[24..32].copy_from_slice(&7710695140402427445u64.to_le_bytes());
        b[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
        b[36..40].copy_from_slice(&8192u32.to_le_bytes());
        let h = WalPageHeader::parse(&b).unwrap();
        assert_eq!(h.system_identifier, 7710695140402427445);
        h.check_name("000000010000000000000002").unwrap();
        h.check_name("000000020000000000000002").unwrap();
        let e = h.check_name("000000010000000000000003").unwrap_err();
        assert!(e.to_string().contains("000000010000000000000002"), "{e}");
        assert!(WalPageHeader::parse(&[0u8; 64]).is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/usr/bin/lifeboat"), "/usr/bin/lifeboat");
        assert_eq!(shell_quote("a b'c"), "'a b'\\''c'");
        assert_eq!(conf_quote("it's"), "'it''s'");
    }

    #[test]
    fn recovery_config_and_target_dir_rules() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("PG_VERSION"), "15\n").unwrap();
        fs::write(d.path().join("postgresql.auto.conf"), "# auto\n").unwrap();
        write_recovery_config(
            d.path(),
            &RecoveryConfig {
                restore_command: "lifeboat pg wal-fetch %f %p".into(),
                target: RecoveryTarget::Time("2026-11-21 18:00:00+00".into()),
                action: "promote".into(),
                comment: "test".into(),
            },
        )
        .unwrap();
        let conf = fs::read_to_string(d.path().join("postgresql.auto.conf")).unwrap();
        assert!(
            conf.contains("restore_command = 'lifeboat pg wal-fetch %f %p'"),
            "{conf}"
        );
        assert!(conf.contains("recovery_target_time = '2026-11-21 18:00:00+00'"));
        assert!(conf.contains("recovery_target_action = 'promote'"));
        assert!(d.path().join("recovery.signal").exists());
        assert!(check_empty_target(d.path()).is_err());
        assert!(check_empty_target(&d.path().join("new")).is_ok());
    }
}
