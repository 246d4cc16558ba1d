//! Command-line definitions (clap). Nothing here does work: `settings` resolves
//! these into what the libraries take, `commands` runs them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "lifeboat",
    version,
    about = "Backup and disaster recovery for servers, files and databases",
    long_about = "Lifeboat backs up files, streams and databases into deduplicated, compressed, \
                  encrypted repositories and restores them exactly.\n\n\
                  Exit codes: 0 success, 1 error, 2 usage error, 3 partial backup (some files could not be read).",
    after_help = "Start here: `lifeboat quickstart` runs init, backup, check and restore on a sample folder."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Repository: a path, s3://bucket/prefix, s3:https://host/bucket/prefix, gcs://, azure://,
    /// sftp://user@host/path, webdav(s)://host/path (docs/BACKENDS.md)
    #[arg(short = 'r', long, env = "LIFEBOAT_REPO", global = true)]
    pub repo: Option<String>,
    /// Read the repository password from this file (first line)
    #[arg(long, env = "LIFEBOAT_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Run this shell command and use the first line it prints as the password
    #[arg(long, env = "LIFEBOAT_PASSWORD_COMMAND", global = true)]
    pub password_command: Option<String>,
    /// Print machine-readable JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing but errors (and requested data)
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More log output on stderr (repeat for more)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Parallel storage operations (pack uploads, pack reads) [default: 4 for a remote
    /// repository; for a local one the number of cores, 2 to 4, and for a restore one more,
    /// 3 to 4]
    #[arg(long, global = true)]
    pub connections: Option<usize>,
    /// Never show progress bars
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Upload bandwidth limit in KiB/s
    #[arg(long, value_name = "KIB_S", global = true)]
    pub limit_upload: Option<u64>,
    /// Download bandwidth limit in KiB/s
    #[arg(long, value_name = "KIB_S", global = true)]
    pub limit_download: Option<u64>,
    /// Backend option KEY=VALUE (region, endpoint, storage-class, server-side-encryption,
    /// sse-kms-key-id, addressing, sftp-identity, sftp-known-hosts, gcs-auth); see docs/BACKENDS.md
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE", global = true)]
    pub options: Vec<String>,
    /// Do not use the local metadata cache for remote repositories
    #[arg(long, global = true)]
    pub no_cache: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new repository
    Init(InitArgs),
    /// Back up files and directories (or a stream with --stdin), or a database:
    /// `backup postgres|mysql|redis|sqlite|command`
    Backup(BackupArgs),
    /// Restore a snapshot into a directory
    Restore(RestoreArgs),
    /// Write one file (or a tar of a directory) from a snapshot to stdout
    Dump(DumpArgs),
    /// List snapshots
    Snapshots(SnapshotsArgs),
    /// List files in a snapshot
    Ls(LsArgs),
    /// Show what changed between two snapshots
    Diff(DiffArgs),
    /// Repository and snapshot statistics: sizes, dedup and compression ratios
    Stats(StatsArgs),
    /// Print a repository object as JSON (config, snapshot, index, key, tree)
    Cat(CatArgs),
    /// Verify the repository's structure, and with --read-data every byte
    Check(CheckArgs),
    /// Manage the repository's keys (passwords)
    #[command(subcommand)]
    Key(KeyCommand),
    /// Try Lifeboat on a sample folder: init, backup, change, backup, check, restore, compare
    Quickstart(QuickstartArgs),
    /// Remove snapshots by a retention policy (data is reclaimed by prune)
    Forget(ForgetArgs),
    /// Protect a snapshot from every retention policy (rewrites it: its id changes)
    Pin(PinArgs),
    /// Remove the protection of `pin` (rewrites the snapshot: its id changes)
    Unpin(PinArgs),
    /// Reclaim space: mark unused packs, delete marked ones after a grace period (safe with concurrent backups)
    Prune(PruneArgs),
    /// Rebuild the index from the packs, or rewrite damaged snapshots
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Show or change repository settings (append-only mode)
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Write Reed-Solomon parity sidecars for packs that have none (`check --repair` uses them)
    Parity(ParityArgs),
    /// PostgreSQL physical backups and WAL archiving: wal-push, wal-fetch, backup, verify
    #[command(subcommand)]
    Pg(PgCommand),
    /// Copy snapshots from another repository (--from-repo) into this one, only the missing data
    Copy(CopyArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Default compression for new data: none, lz4, zstd, zstd:LEVEL (small blobs are
    /// compressed in groups with zstd)
    #[arg(long, default_value = "zstd:2")]
    pub compression: String,
    /// Chunker sizes MIN/AVG/MAX in bytes (default 524288/1048576/8388608)
    #[arg(long, hide = true)]
    pub chunker: Option<String>,
    /// Create the repository in append-only mode (forget, prune and key remove refuse)
    #[arg(long)]
    pub append_only: bool,
    /// S3 only: give every object a restore needs Object Lock retention, MODE:DAYSd
    /// (governance:30d, compliance:90d); the bucket must have Object Lock enabled
    #[arg(long, value_name = "MODE:DAYS")]
    pub object_lock: Option<String>,
    /// Take the chunker settings and content key of --from-repo, so `copy` from it moves
    /// blobs by id (encryption keys stay separate)
    #[arg(long, requires = "from_repo")]
    pub copy_chunker_params: bool,
    #[command(flatten)]
    pub from: FromRepoArgs,
    /// Smallest pack size in bytes (tests; packs grow with the repository)
    #[arg(long, hide = true)]
    pub min_pack_size: Option<u64>,
}

/// The source repository of `copy` and `init --copy-chunker-params`.
#[derive(Debug, Args, Default, Clone)]
pub struct FromRepoArgs {
    /// Source repository (same URL forms as --repo)
    #[arg(long, env = "LIFEBOAT_FROM_REPO", value_name = "URL")]
    pub from_repo: Option<String>,
    /// Read the source repository's password from this file (first line);
    /// else LIFEBOAT_FROM_PASSWORD or a prompt
    #[arg(long, env = "LIFEBOAT_FROM_PASSWORD_FILE", value_name = "FILE")]
    pub from_password_file: Option<PathBuf>,
    /// Run this shell command and use the first line it prints as the source password
    #[arg(long, env = "LIFEBOAT_FROM_PASSWORD_COMMAND", value_name = "CMD")]
    pub from_password_command: Option<String>,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Snapshots to copy: id prefixes or `latest` (default: every snapshot matching the filters)
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub from: FromRepoArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Show what would be copied; write nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Also copy the PostgreSQL WAL archive (`pg wal-push` files the destination lacks), so
    /// point-in-time recovery works from the copy
    #[arg(long)]
    pub wal: bool,
}

#[derive(Debug, Args, Default, Clone)]
pub struct FilterArgs {
    /// Only snapshots of this host (repeatable)
    #[arg(long = "host", short = 'H')]
    pub hosts: Vec<String>,
    /// Only snapshots with these tags (comma-separated: all of them; repeat for alternatives).
    /// `latest` passes over restores' safety dumps unless a tag asks for them (`safety`)
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Only snapshots that include this path (repeatable)
    #[arg(long = "path")]
    pub paths: Vec<String>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    /// Back up a database instead of files (a directory named like one: `./postgres`)
    #[command(subcommand)]
    pub source: Option<BackupSource>,
    /// Files and directories to back up
    pub paths: Vec<PathBuf>,
    /// Leave out entries matching this glob (repeatable)
    #[arg(short = 'e', long)]
    pub exclude: Vec<String>,
    /// Like --exclude, case-insensitive
    #[arg(long)]
    pub iexclude: Vec<String>,
    /// Read exclude patterns from a file, one per line (# comments)
    #[arg(long)]
    pub exclude_file: Vec<PathBuf>,
    /// Leave out directories containing a file with this name
    #[arg(long)]
    pub exclude_if_present: Vec<String>,
    /// Leave out files larger than SIZE (e.g. 500M, 2G)
    #[arg(long, value_name = "SIZE")]
    pub exclude_larger_than: Option<String>,
    /// Do not cross file system boundaries
    #[arg(short = 'x', long)]
    pub one_file_system: bool,
    /// Tag the snapshot (repeatable, or comma-separated)
    #[arg(long)]
    pub tag: Vec<String>,
    /// Host name to record (default: this machine's)
    #[arg(long)]
    pub host: Option<String>,
    /// Compare against this snapshot instead of the latest one of the same host and paths
    #[arg(long)]
    pub parent: Option<String>,
    /// Read every file, even those unchanged since the parent snapshot
    #[arg(long)]
    pub force: bool,
    /// Do everything but write to the repository
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Back up standard input as one file
    #[arg(long)]
    pub stdin: bool,
    /// File name for --stdin
    #[arg(long, default_value = "stdin")]
    pub stdin_filename: String,
    /// Compression for new data (default: the repository's)
    #[arg(long)]
    pub compression: Option<String>,
    /// Record this time instead of now (tests, imports)
    #[arg(long, hide = true)]
    pub time: Option<String>,
}

/// Database sources of `backup` (docs/DATABASES.md).
#[derive(Debug, Subcommand)]
pub enum BackupSource {
    /// PostgreSQL: pg_dump (plain SQL) per database + pg_dumpall --globals-only, streamed
    Postgres(PgBackupArgs),
    /// MySQL / MariaDB: mariadb-dump --single-transaction per database, streamed
    #[command(alias = "mariadb")]
    Mysql(MySqlBackupArgs),
    /// Redis: an RDB snapshot over the replication protocol (redis-cli --rdb)
    Redis(RedisBackupArgs),
    /// SQLite: a consistent online copy through SQLite's backup API
    Sqlite(SqliteBackupArgs),
    /// Any command's standard output (e.g. `-- mongodump --archive`)
    Command(CommandBackupArgs),
}

/// Flags every database backup takes.
#[derive(Debug, Args, Clone)]
pub struct DbBackupCommon {
    /// Tag the snapshot (repeatable, or comma-separated)
    #[arg(long)]
    pub tag: Vec<String>,
    /// Host name to record (default: this machine's)
    #[arg(long)]
    pub host: Option<String>,
    /// Dump and chunk everything but write nothing to the repository
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Compression for new data (default: the repository's)
    #[arg(long)]
    pub compression: Option<String>,
    /// Record this time instead of now (tests, imports)
    #[arg(long, hide = true)]
    pub time: Option<String>,
}

#[derive(Debug, Args)]
pub struct PgBackupArgs {
    /// postgresql://user@host:port/maintenance-db?sslmode=... (default: libpq's PG* variables).
    /// Put the password in PGPASSWORD or ~/.pgpass, not in the URL: argv is visible to all users
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Database to dump (repeatable; default: every connectable database)
    #[arg(short = 'd', long = "database", value_name = "DB")]
    pub databases: Vec<String>,
    /// Do not dump roles and tablespaces (pg_dumpall --globals-only needs a superuser)
    #[arg(long)]
    pub no_globals: bool,
    /// Extra pg_dump argument (repeatable, e.g. --pg-dump-arg=--exclude-table=logs)
    #[arg(long = "pg-dump-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub pg_dump_args: Vec<String>,
    /// Let pg_dump read every table. By default the largest tables (64 MiB and more, at most
    /// 4) are read by Lifeboat's own connections, in page ranges, inside pg_dump's snapshot
    #[arg(long)]
    pub pg_dump_only: bool,
    /// Physical base backup for point-in-time recovery instead of pg_dump (= `lifeboat pg backup`)
    #[arg(long, conflicts_with_all = ["databases", "no_globals", "pg_dump_args", "pg_dump_only"])]
    pub physical: bool,
    /// With --physical: start with an immediate checkpoint
    #[arg(long, requires = "physical")]
    pub fast: bool,
    #[command(flatten)]
    pub common: DbBackupCommon,
}

#[derive(Debug, Args)]
pub struct MySqlBackupArgs {
    /// mysql://user@host:port/?socket=/path (default: MYSQL_* variables and the option files).
    /// Put the password in MYSQL_PWD or an option file, not in the URL
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Database to dump (repeatable; default: every database but the system ones)
    #[arg(short = 'd', long = "database", value_name = "DB")]
    pub databases: Vec<String>,
    /// Option file with connection settings (e.g. the password), like the clients' --defaults-extra-file
    #[arg(long, value_name = "FILE")]
    pub defaults_extra_file: Option<PathBuf>,
    #[command(flatten)]
    pub common: DbBackupCommon,
}

#[derive(Debug, Args)]
pub struct RedisBackupArgs {
    /// redis://[user@]host[:port] or rediss:// (password: REDISCLI_AUTH)
    #[arg(long, env = "REDIS_URL", value_name = "URL", hide_env_values = true)]
    pub url: Option<String>,
    #[command(flatten)]
    pub common: DbBackupCommon,
}

#[derive(Debug, Args)]
pub struct SqliteBackupArgs {
    /// The database file
    pub path: PathBuf,
    #[command(flatten)]
    pub common: DbBackupCommon,
}

#[derive(Debug, Args)]
pub struct CommandBackupArgs {
    /// Name of the stream in the snapshot (also its grouping key for retention)
    #[arg(long, default_value = "command.out")]
    pub name: String,
    /// MongoDB preset: `mongodump --archive [--config FILE]` (the URI with its password
    /// goes in a 0600 YAML config file, never in argv)
    #[arg(long, conflicts_with = "command")]
    pub mongodump: bool,
    /// mongodump --config file for --mongodump
    #[arg(long, value_name = "FILE", requires = "mongodump")]
    pub mongo_config: Option<PathBuf>,
    /// The command and its arguments, after `--`
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
    #[command(flatten)]
    pub common: DbBackupCommon,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id prefix or `latest` (the newest backup: restores' safety dumps only with
    /// `--tag safety`), optionally `SNAPSHOT:PATH` to restore a subtree
    #[arg(default_value = "latest")]
    pub snapshot: String,
    /// Directory to restore into (for a database snapshot: its dump files)
    #[arg(short, long, required_unless_present_any = ["to_postgres", "to_mysql", "to_redis_dir", "to_sqlite", "to_command", "to_pgdata"])]
    pub target: Option<PathBuf>,
    /// Pick the newest snapshot at or before this time ("2026-11-20 14:00")
    #[arg(long)]
    pub at: Option<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Restore only entries matching this pattern (repeatable)
    #[arg(short = 'i', long)]
    pub include: Vec<String>,
    /// Do not restore entries matching this pattern (repeatable)
    #[arg(short = 'e', long)]
    pub exclude: Vec<String>,
    /// Replace existing files (files already identical are skipped)
    #[arg(long)]
    pub overwrite: bool,
    /// Re-read and re-hash every restored file
    #[arg(long)]
    pub verify: bool,
    /// List what would be written, write nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub db: DbRestoreArgs,
    #[command(flatten)]
    pub pitr: PitrRestoreArgs,
}

/// Restoring a database snapshot into a server, a data directory, a file or a command.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Database restore (docs/DATABASES.md)")]
pub struct DbRestoreArgs {
    /// Restore a PostgreSQL dump into this server (URL, or empty for libpq's PG* variables)
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "",
          conflicts_with_all = ["target", "to_mysql", "to_redis_dir", "to_sqlite", "to_command"])]
    pub to_postgres: Option<String>,
    /// Restore a MySQL/MariaDB dump into this server (URL, or empty for MYSQL_* and option files)
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "",
          conflicts_with_all = ["target", "to_redis_dir", "to_sqlite", "to_command"])]
    pub to_mysql: Option<String>,
    /// Write a Redis dump as DIR/dump.rdb for a new instance and verify its key count
    #[arg(long, value_name = "DIR", conflicts_with_all = ["target", "to_sqlite", "to_command"])]
    pub to_redis_dir: Option<PathBuf>,
    /// Restore a SQLite dump as this file (new; with --replace-file an existing one)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["target", "to_command"])]
    pub to_sqlite: Option<PathBuf>,
    /// Pipe a stream into the command given after `--` (e.g. `-- mongorestore --archive`)
    #[arg(long, conflicts_with = "target", requires = "command")]
    pub to_command: bool,
    /// Restore into a new database with this name (default: DB_restored_SNAPSHOT)
    #[arg(long = "as", value_name = "NAME", conflicts_with_all = ["replace", "table"])]
    pub as_name: Option<String>,
    /// Replace this existing database: safety backup, restore into a temporary database,
    /// verify, terminate connections, swap names; the original is untouched on failure
    #[arg(long, value_name = "DB", conflicts_with = "table")]
    pub replace: Option<String>,
    /// Restore only this table (repeatable; `schema.table`) into the existing database --database
    #[arg(long, value_name = "TABLE")]
    pub table: Vec<String>,
    /// Which dumped database to restore (needed when the snapshot holds several); with
    /// --table also the target database
    #[arg(long, value_name = "DB")]
    pub database: Option<String>,
    /// SQL returning one boolean, run in the restored database before it is accepted
    #[arg(long, value_name = "SQL")]
    pub check: Option<String>,
    /// Do not compare row counts with those recorded at backup time
    #[arg(long)]
    pub no_verify_rows: bool,
    /// After --replace keep the previous database under a side name instead of dropping it
    #[arg(long)]
    pub keep_previous: bool,
    /// PostgreSQL: also replay roles and tablespaces (globals.sql); existing roles stay as they are
    #[arg(long)]
    pub globals: bool,
    /// MySQL point-in-time recovery: after restoring --as a new database, replay the source
    /// server's binary log from the dump's position up to this time ("YYYY-MM-DD HH:MM:SS",
    /// server time zone) or `end`
    #[arg(
        long,
        value_name = "TIME|end",
        requires = "to_mysql",
        conflicts_with = "replace"
    )]
    pub binlog_until: Option<String>,
    /// SQLite: replace the existing file given to --to-sqlite (after a safety backup)
    #[arg(long)]
    pub replace_file: bool,
    /// Stream to pipe with --to-command (default: the snapshot's only stream)
    #[arg(long, value_name = "NAME")]
    pub stream: Option<String>,
    /// Redis: do not start a throwaway redis-server to verify the key count
    #[arg(long)]
    pub no_verify: bool,
    /// The command for --to-command, after `--`
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Snapshot id prefix or `latest`
    pub snapshot: String,
    /// Path inside the snapshot
    pub path: String,
    /// Pick the newest snapshot at or before this time
    #[arg(long)]
    pub at: Option<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Snapshot id prefix or `latest`
    pub snapshot: String,
    /// Directory or file inside the snapshot
    #[arg(default_value = "/")]
    pub path: String,
    /// Show mode, owner, size and time
    #[arg(short, long)]
    pub long: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    pub first: String,
    pub second: String,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Limit to these snapshots (default: all)
    pub snapshots: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CatArgs {
    /// config, snapshot, index, key or tree
    pub kind: String,
    /// Object id (or id prefix / `latest` for snapshots)
    pub id: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also read, decrypt and re-hash every blob
    #[arg(long)]
    pub read_data: bool,
    /// Read only a subset of packs: n/m (bucket n of m) or a percentage like 10%
    #[arg(long, value_name = "SUBSET")]
    pub read_data_subset: Option<String>,
    /// First rebuild damaged packs from their parity sidecars (see `lifeboat parity`)
    #[arg(long)]
    pub repair: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List key slots
    List,
    /// Add a key slot for a new password (from --new-password-file, LIFEBOAT_NEW_PASSWORD or a prompt)
    Add(AddKeyArgs),
    /// Remove a key slot (not the one in use, not the last one)
    Remove { id: String },
    /// Change the password of the key in use
    Passwd(NewPasswordArgs),
}

#[derive(Debug, Args)]
pub struct AddKeyArgs {
    #[command(flatten)]
    pub new: NewPasswordArgs,
    /// Generate a random 256-bit secret into FILE (mode 0600, must not exist) and add a key slot
    /// for it with cheap KDF parameters, so it opens in ~1 ms: for `pg wal-push`/`wal-fetch`,
    /// which run once per WAL file (docs/DATABASES.md)
    #[arg(long, value_name = "FILE", conflicts_with = "new_password_file")]
    pub generate: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct NewPasswordArgs {
    #[arg(long, env = "LIFEBOAT_NEW_PASSWORD_FILE")]
    pub new_password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Working directory for the sample data, repository and restore
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Keep the newest N snapshots (N, -1 or `unlimited`)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub keep_last: Option<String>,
    /// Keep the newest snapshot of each of the last N hours
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub keep_hourly: Option<String>,
    /// Keep the newest snapshot of each of the last N days
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub keep_daily: Option<String>,
    /// Keep the newest snapshot of each of the last N ISO weeks
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub keep_weekly: Option<String>,
    /// Keep the newest snapshot of each of the last N months
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub keep_monthly: Option<String>,
    /// Keep the newest snapshot of each of the last N years
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub keep_yearly: Option<String>,
    /// Keep every snapshot within DURATION (e.g. 2y5m7d3h) of the group's newest
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep hourly snapshots within DURATION of the newest
    #[arg(long, value_name = "DURATION")]
    pub keep_within_hourly: Option<String>,
    /// Keep daily snapshots within DURATION of the newest
    #[arg(long, value_name = "DURATION")]
    pub keep_within_daily: Option<String>,
    /// Keep weekly snapshots within DURATION of the newest
    #[arg(long, value_name = "DURATION")]
    pub keep_within_weekly: Option<String>,
    /// Keep monthly snapshots within DURATION of the newest
    #[arg(long, value_name = "DURATION")]
    pub keep_within_monthly: Option<String>,
    /// Keep yearly snapshots within DURATION of the newest
    #[arg(long, value_name = "DURATION")]
    pub keep_within_yearly: Option<String>,
    /// Keep snapshots with these tags (comma-separated: all of them; repeatable)
    #[arg(long = "keep-tag", value_name = "TAGS")]
    pub keep_tags: Vec<String>,
    /// Never remove the newest N snapshots of a group (the floor; default 1)
    #[arg(long, value_name = "N")]
    pub keep_newest_min: Option<u32>,
    /// Group by these fields: host, paths, tags, source (comma-separated; default
    /// host,paths,source). Restores' safety dumps always form groups of their own
    #[arg(long, value_name = "FIELDS")]
    pub group_by: Option<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// PostgreSQL PITR window (e.g. 14d): also delete archived WAL that no kept base
    /// backup needs to be consistent and no point of the last DURATION needs (without
    /// this flag forget never touches WAL)
    #[arg(long, value_name = "DURATION")]
    pub keep_pitr: Option<String>,
    /// Print every snapshot with the rules that keep it, or "remove"; delete nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Run prune afterwards
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub prune_opts: PruneOptionArgs,
}

#[derive(Debug, Args)]
pub struct PinArgs {
    /// Snapshot id prefix or `latest`
    pub snapshot: String,
}

#[derive(Debug, Args, Clone)]
pub struct PruneOptionArgs {
    /// Delete marked packs only once their mark is this old (e.g. 24h, 30m, 0)
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub grace: String,
    /// Repack partly used packs until at most this share of pack bytes is unused
    #[arg(long, value_name = "PERCENT", default_value = "5%")]
    pub max_unused: String,
    /// Repack at most SIZE of packs per run (e.g. 10G)
    #[arg(long, value_name = "SIZE")]
    pub max_repack: Option<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub opts: PruneOptionArgs,
    /// Show what would be marked, repacked and freed; change nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Rebuild the index by reading every pack's header (supersedes the old index files)
    Index {
        #[arg(short = 'n', long)]
        dry_run: bool,
    },
    /// Rewrite snapshots that reference lost data, without the lost files (marked with an error)
    Snapshots {
        #[arg(short = 'n', long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the repository configuration
    Show,
    /// Change a setting: `append-only true|false`, `object-lock MODE:DAYSd|off`
    Set {
        key: String,
        value: String,
        /// Required to turn append-only mode or object lock off (or shorten the lock)
        #[arg(long, alias = "allow-disable-append-only")]
        allow_disable: bool,
    },
}

#[derive(Debug, Args)]
pub struct ParityArgs {
    /// Data shards per pack
    #[arg(long, default_value_t = 20)]
    pub data_shards: u8,
    /// Parity shards per pack (that many damaged shards are repairable)
    #[arg(long, default_value_t = 2)]
    pub parity_shards: u8,
    /// Also rewrite sidecars of an older format version (reads 5 bytes of each sidecar)
    #[arg(long)]
    pub upgrade: bool,
}

/// `lifeboat pg ...`: PostgreSQL physical backups and the WAL archive (docs/DATABASES.md).
#[derive(Debug, Subcommand)]
pub enum PgCommand {
    /// archive_command: store one WAL file, e.g. `archive_command = 'lifeboat pg wal-push %p'`
    WalPush(WalPushArgs),
    /// restore_command: fetch one WAL file (`lifeboat pg wal-fetch %f %p`); exit 1 when it is
    /// not archived, 126 on any other error (PostgreSQL then stops recovery instead of ending it)
    WalFetch(WalFetchArgs),
    /// Physical base backup: pg_basebackup streamed into a snapshot (source postgres-physical)
    Backup(PgPhysicalBackupArgs),
    /// Per cluster: timelines, WAL gaps, and the recoverable window
    Verify(PgVerifyArgs),
}

#[derive(Debug, Args)]
pub struct WalPushArgs {
    /// The WAL file (PostgreSQL's %p, relative to the data directory it runs in)
    pub path: PathBuf,
    /// Cluster (system identifier); default: read from the segment, or from PGDATA/global/pg_control
    #[arg(long, value_name = "ID")]
    pub system_id: Option<u64>,
    /// Data directory (default: $PGDATA, else the current directory, where PostgreSQL runs the command)
    #[arg(long, value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
    /// Compression: none, lz4, zstd, zstd:LEVEL
    #[arg(long, default_value = "zstd:3")]
    pub compression: String,
}

#[derive(Debug, Args)]
pub struct WalFetchArgs {
    /// WAL file name (PostgreSQL's %f)
    pub name: String,
    /// Where to write it (PostgreSQL's %p)
    pub path: PathBuf,
    /// Cluster (system identifier); default: from PGDATA/global/pg_control
    #[arg(long, value_name = "ID")]
    pub system_id: Option<u64>,
    /// Data directory (default: $PGDATA, else the current directory)
    #[arg(long, value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PgPhysicalBackupArgs {
    /// postgresql://user@host:port/db (default: libpq's PG* variables); needs replication rights
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Start with an immediate checkpoint (default: a spread checkpoint, like pg_basebackup)
    #[arg(long)]
    pub fast: bool,
    /// How long to wait for the backup's last WAL segment to be archived (e.g. 60s, 5m)
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub wal_timeout: String,
    /// pg_basebackup --max-rate (e.g. 50M)
    #[arg(long, value_name = "RATE")]
    pub max_rate: Option<String>,
    /// Tag the snapshot (repeatable, or comma-separated)
    #[arg(long)]
    pub tag: Vec<String>,
    /// Host name to record (default: this machine's)
    #[arg(long)]
    pub host: Option<String>,
}

#[derive(Debug, Args)]
pub struct PgVerifyArgs {
    /// Only this cluster (system identifier)
    #[arg(long, value_name = "ID")]
    pub system_id: Option<u64>,
}

/// `restore --to-pgdata`: a physical base backup plus recovery settings.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "PostgreSQL point-in-time recovery (docs/DATABASES.md)")]
pub struct PitrRestoreArgs {
    /// Restore a physical base backup into this new or empty directory, set up to recover to
    /// the target (--at TIME, --lsn, --restore-point, --immediate; default: all archived WAL)
    #[arg(long, value_name = "DIR")]
    pub to_pgdata: Option<PathBuf>,
    /// Recover up to this WAL position (e.g. 0/3000148)
    #[arg(long, value_name = "LSN", requires = "to_pgdata", conflicts_with_all = ["at", "restore_point", "immediate"])]
    pub lsn: Option<String>,
    /// Recover up to this restore point (pg_create_restore_point)
    #[arg(long, value_name = "NAME", requires = "to_pgdata", conflicts_with_all = ["at", "immediate"])]
    pub restore_point: Option<String>,
    /// Stop as soon as the base backup is consistent
    #[arg(long, requires = "to_pgdata", conflicts_with = "at")]
    pub immediate: bool,
    /// What the server does at the target: promote, pause or shutdown
    #[arg(long, default_value = "promote", value_parser = ["promote", "pause", "shutdown"])]
    pub target_action: String,
    /// The cluster (system identifier) when the repository holds several
    #[arg(long, value_name = "ID")]
    pub system_id: Option<u64>,
    /// Password file for the restore_command to use (default: --password-file); never the password itself
    #[arg(long, value_name = "FILE")]
    pub wal_password_file: Option<PathBuf>,
}
