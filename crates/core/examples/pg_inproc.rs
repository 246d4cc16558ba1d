//! Probe for docs/PERFORMANCE.md (fifteenth to eighteenth measurements): what `pg_dump`
//! costs a logical backup, and what a `COPY` reader inside Lifeboat would save against
//! `lifeboat backup postgres` (which streams `pg_dump`'s stdout through a pipe). A reader
//! thread runs `COPY ... TO STDOUT` queries over the PostgreSQL wire protocol with the least
//! client work (std only, trust authentication, a Unix socket) from the first moment, and
//! hands 1 MiB blocks (up to 64 MiB ahead) either to stdout (`-` as the repository) or,
//! while the repository is unlocked, to the same stream writer `backup --stdin` uses:
//!
//! ```text
//! LIFEBOAT_PASSWORD=... cargo run --release -p lifeboat-core --example pg_inproc -- \
//!     REPO|- /tmp/lbpg/.s.PGSQL.55432 postgres "COPY public.pgbench_accounts TO STDOUT" ...
//! ```
//!
//! With `PROBE_SPLIT=N:schema.table` (eighteenth measurement) the queries' connection
//! exports its snapshot and N more connections import it and read the table as N ranges of
//! its pages (`ctid`), on N threads, stored as one stream with
//! `StreamSnapshotWriter::add_stream_parts`; for a table without inheritance children or
//! generated columns (pgbench's), the joined rows are byte for byte those of
//! `COPY schema.table TO STDOUT` in the same snapshot. `PROBE_PSQL=1` reads the ranges with
//! `psql` processes instead of connections of the probe's own.
//!
//! A measuring tool, not a dump: no schema, no password auth.
use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::Arc;

use lifeboat_core::archiver::{StreamBackupOptions, StreamSnapshotWriter};
use lifeboat_core::progress::NoProgress;
use lifeboat_core::repository::IndexedRepository;
use lifeboat_core::writer::WriterOptions;
use lifeboat_core::Repository;
use lifeboat_storage::{DynStorage, LocalStorage};

const BLOCK: usize = 1 << 20;

fn send(w: &mut impl Write, kind: Option<u8>, body: &[u8]) {
    let mut m: Vec<u8> = kind.into_iter().collect();
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    w.write_all(&m).unwrap();
}

/// Reads messages up to ReadyForQuery, appending CopyData rows to `rows` and sending
/// full blocks; spent blocks come back on `spent`.
fn until_ready(
    r: &mut impl Read,
    rows: &mut Vec<u8>,
    tx: &mpsc::SyncSender<Vec<u8>>,
    spent: &mpsc::Receiver<Vec<u8>>,
    value: &mut Option<String>,
) {
    let mut body = Vec::new();
    loop {
        let mut h = [0u8; 5];
        r.read_exact(&mut h).unwrap();
        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize - 4;
        let dst = if h[0] == b'd' {
            &mut *rows
        } else {
            body.clear();
            &mut body
        };
        let at = dst.len();
        dst.resize(at + len, 0);
        r.read_exact(&mut dst[at..]).unwrap();
        match h[0] {
            b'd' if rows.len() >= BLOCK => {
                let mut next = spent
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(BLOCK + (64 << 10)));
                next.clear();
                tx.send(std::mem::replace(rows, next)).unwrap();
            }
            b'D' => {
                let n = u32::from_be_bytes([body[2], body[3], body[4], body[5]]) as usize;
                *value = Some(String::from_utf8_lossy(&body[6..6 + n]).into_owned());
            }
            b'Z' => return,
            b'E' => panic!("error {}", String::from_utf8_lossy(&body)),
            // AuthenticationOk is 0; anything else asks for a password this probe lacks.
            b'R' if body.get(..4) != Some(&[0u8; 4][..]) => panic!("only trust authentication"),
            _ => {}
        }
    }
}

struct Blocks {
    rx: mpsc::Receiver<Vec<u8>>,
    spent: mpsc::Sender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Blocks {
    fn new(rx: mpsc::Receiver<Vec<u8>>, spent: mpsc::Sender<Vec<u8>>) -> Blocks {
        Blocks {
            rx,
            spent,
            cur: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for Blocks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(b) => {
                    let old = std::mem::replace(&mut self.cur, b);
                    if old.capacity() > 0 {
                        let _ = self.spent.send(old);
                    }
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

struct Conn {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Conn {
    fn open(sock: &str, db: &str) -> Conn {
        let s = UnixStream::connect(sock).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::with_capacity(1 << 20, s);
        let mut startup = 196608u32.to_be_bytes().to_vec();
        for kv in [
            "user",
            "postgres",
            "database",
            db,
            "client_encoding",
            "UTF8",
            "DateStyle",
            "ISO",
        ] {
            startup.extend_from_slice(kv.as_bytes());
            startup.push(0);
        }
        startup.push(0);
        send(&mut w, None, &startup);
        let (tx, _rx) = mpsc::sync_channel(1);
        let (_stx, srx) = mpsc::channel();
        until_ready(&mut r, &mut Vec::new(), &tx, &srx, &mut None);
        Conn { w, r }
    }

    /// Runs `q`; returns the first column of its last row.
    fn scalar(&mut self, q: &str) -> Option<String> {
        let (tx, _rx) = mpsc::sync_channel(1);
        let (_stx, srx) = mpsc::channel();
        let mut v = None;
        send(&mut self.w, Some(b'Q'), format!("{q}\0").as_bytes());
        until_ready(&mut self.r, &mut Vec::new(), &tx, &srx, &mut v);
        v
    }

    /// Runs `queries` on a thread of its own, their COPY rows as 1 MiB blocks; the
    /// connection closes when they are done.
    fn spawn(mut self, queries: Vec<String>) -> (Blocks, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(64);
        let (spent_tx, spent_rx) = mpsc::channel::<Vec<u8>>();
        let h = std::thread::spawn(move || {
            let mut rows: Vec<u8> = Vec::with_capacity(BLOCK + (64 << 10));
            for q in queries {
                send(&mut self.w, Some(b'Q'), format!("{q}\0").as_bytes());
                until_ready(&mut self.r, &mut rows, &tx, &spent_rx, &mut None);
            }
            if !rows.is_empty() {
                tx.send(rows).unwrap();
            }
        });
        (Blocks::new(rx, spent_tx), h)
    }
}

/// `PROBE_SPLIT=N:schema.table`: after the queries (on the first connection, which exports
/// its snapshot), the table is read by N more connections that import it, each a range of
/// its pages (`ctid`), chunked in parallel into one stream.
fn split_main(repo_dir: String, sock: String, db: String, queries: Vec<String>, split: &str) {
    let (n, table) = split.split_once(':').unwrap();
    let n: u32 = n.parse().unwrap();
    let begin = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";
    let mut c0 = Conn::open(&sock, &db);
    c0.scalar(begin);
    let snap = c0.scalar("SELECT pg_export_snapshot()").unwrap();
    let pages: u64 = c0
        .scalar(&format!(
            "SELECT pg_relation_size('{table}') / current_setting('block_size')::int"
        ))
        .unwrap()
        .parse()
        .unwrap();
    let mut parts = Vec::new();
    let mut children = Vec::new();
    for i in 0..n as u64 {
        let (a, b) = (pages * i / n as u64, pages * (i + 1) / n as u64);
        let range = if i + 1 == n as u64 {
            format!("ctid >= '({a},0)'")
        } else {
            format!("ctid >= '({a},0)' AND ctid < '({b},0)'")
        };
        let copy = format!("COPY (SELECT * FROM ONLY {table} WHERE {range}) TO STDOUT");
        // The same row order as `COPY table`: no scan joining another one midway, no
        // parallel workers (pgbench has no inheritance children nor generated columns,
        // which a real reader would leave out with `ONLY` and `COPY`'s column list).
        let settings = [
            begin.to_string(),
            format!("SET TRANSACTION SNAPSHOT '{snap}'"),
            "SET synchronize_seqscans = off".into(),
            "SET max_parallel_workers_per_gather = 0".into(),
        ];
        if std::env::var_os("PROBE_PSQL").is_some() {
            // `PROBE_PSQL=1`: each range read by a `psql` (libpq's COPY loop, as
            // `pg_dump`'s), stdout buffered 1 MiB, read ahead on a thread.
            let (dir, port) = sock.rsplit_once("/.s.PGSQL.").unwrap();
            let mut cmd = std::process::Command::new("stdbuf");
            cmd.args(["-o1M", "psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"]);
            cmd.args(["-h", dir, "-p", port, "-U", "postgres", "-d", &db]);
            for q in settings.iter().chain([&copy]) {
                cmd.args(["-c", q]);
            }
            let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
            parts.push(read_ahead(child.stdout.take().unwrap()));
            children.push(child);
            continue;
        }
        let mut c = Conn::open(&sock, &db);
        for q in &settings {
            c.scalar(q);
        }
        parts.push(c.spawn(vec![copy]));
    }
    let (mut first, h0) = c0.spawn(queries);
    let repo = open_repo(&repo_dir);
    let mut w = StreamSnapshotWriter::new(&repo, options(&repo), &NoProgress);
    let mut size = w.add_stream("db/probe.sql", &mut first).unwrap();
    let (blocks, handles): (Vec<Blocks>, Vec<_>) = parts.into_iter().unzip();
    let readers: Vec<Box<dyn Read + Send>> = blocks
        .into_iter()
        .map(|b| Box::new(b) as Box<dyn Read + Send>)
        .collect();
    size += w.add_stream_parts("db/table.sql", readers).unwrap();
    for h in handles {
        h.join().unwrap();
    }
    for mut c in children {
        assert!(c.wait().unwrap().success(), "psql failed");
    }
    h0.join().unwrap();
    let out = w.finish(None).unwrap();
    eprintln!("{size} bytes, {:?}", out.snapshot_id);
}

/// A pipe read on a thread of its own into 1 MiB blocks, up to 64 ahead.
fn read_ahead(mut pipe: impl Read + Send + 'static) -> (Blocks, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(64);
    let (spent_tx, spent_rx) = mpsc::channel::<Vec<u8>>();
    let h = std::thread::spawn(move || loop {
        let mut block = spent_rx.try_recv().unwrap_or_else(|_| vec![0; BLOCK]);
        block.resize(BLOCK, 0);
        let mut n = 0;
        while n < BLOCK {
            match pipe.read(&mut block[n..]).unwrap() {
                0 => break,
                m => n += m,
            }
        }
        block.truncate(n);
        if n == 0 || tx.send(block).is_err() || n < BLOCK {
            return;
        }
    });
    (Blocks::new(rx, spent_tx), h)
}

fn open_repo(dir: &str) -> IndexedRepository {
    let password = std::env::var("LIFEBOAT_PASSWORD").unwrap();
    let storage: DynStorage = Arc::new(LocalStorage::new(dir));
    Repository::open(storage, &password)
        .unwrap()
        .into_indexed()
        .unwrap()
}

fn options(repo: &IndexedRepository) -> StreamBackupOptions {
    // As `lifeboat backup postgres` on a local repository: the repository's compression,
    // one storage connection per core (2 to 4).
    StreamBackupOptions {
        source: "postgres".into(),
        paths: vec!["postgres://probe".into()],
        writer: WriterOptions {
            compression: repo.config().compression(),
            connections: std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4)),
            ..WriterOptions::default()
        },
        ..StreamBackupOptions::default()
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let repo_dir = args.next().unwrap();
    let sock = args.next().unwrap();
    let db = args.next().unwrap();
    let queries: Vec<String> = args.collect();
    if let Ok(split) = std::env::var("PROBE_SPLIT") {
        return split_main(repo_dir, sock, db, queries, &split);
    }
    let (mut blocks, reader) = Conn::open(&sock, &db).spawn(queries);
    if repo_dir == "-" {
        // 1 MiB writes, each block as it arrives.
        let out = std::io::stdout();
        let mut out = out.lock();
        for block in &blocks.rx {
            out.write_all(&block).unwrap();
            let _ = blocks.spent.send(block);
        }
        reader.join().unwrap();
        return;
    }
    let repo = open_repo(&repo_dir);
    let mut w = StreamSnapshotWriter::new(&repo, options(&repo), &NoProgress);
    let size = w.add_stream("db/probe.sql", &mut blocks).unwrap();
    reader.join().unwrap();
    let out = w.finish(None).unwrap();
    eprintln!("{size} bytes, {:?}", out.snapshot_id);
}
