//! `pg::wire`'s `COPY` loop alone, for docs/PERFORMANCE.md: the rows of each query, in 1 MiB
//! blocks of whole rows, written to stdout (trust or `PGPASSWORD`, a Unix socket):
//!
//! ```text
//! cargo run --release -p lifeboat-sources --example wire_copy -- \
//!     /tmp/lbpg 55432 postgres "COPY public.pgbench_accounts TO STDOUT" > /dev/null
//! ```
use std::io::Write;

use lifeboat_sources::pg::wire::{WireAddress, WireConn, WireTarget};
use lifeboat_sources::Secret;

fn main() {
    let mut args = std::env::args().skip(1);
    let (dir, port, db) = (
        args.next().expect("socket directory"),
        args.next().expect("port").parse().expect("a port number"),
        args.next().expect("database"),
    );
    let target = WireTarget {
        address: WireAddress::socket(dir, port),
        user: std::env::var("PGUSER").unwrap_or_else(|_| "postgres".into()),
        database: db,
        password: std::env::var("PGPASSWORD").ok().map(Secret::new),
        parameters: vec![("client_encoding".into(), "UTF8".into())],
    };
    let mut conn = WireConn::connect(&target).unwrap_or_else(|e| panic!("{e}"));
    let out = std::io::stdout();
    let mut out = out.lock();
    let mut block = Vec::with_capacity((1 << 20) + (64 << 10));
    for sql in args {
        let mut copy = conn.copy_out(&sql).unwrap_or_else(|e| panic!("{e}"));
        loop {
            block.clear();
            let more = copy.read_rows(&mut block, 1 << 20).unwrap();
            out.write_all(&block).unwrap();
            if !more {
                break;
            }
        }
    }
}
