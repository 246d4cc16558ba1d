//! Probe for docs/PERFORMANCE.md (fifteenth measurement): what `pg_dump`'s own CPU costs a
//! logical backup. It runs `COPY ... TO STDOUT` queries over the PostgreSQL wire protocol
//! with the least client work (std only, trust authentication, a Unix socket) and writes
//! the rows to stdout in 1 MiB writes:
//!
//! ```text
//! cargo run --release -p lifeboat-sources --example copy_probe -- \
//!     /tmp/lbpg/.s.PGSQL.55432 postgres "COPY public.pgbench_accounts TO STDOUT" ... \
//!     | lifeboat --repo R backup --stdin --stdin-filename x
//! ```
//!
//! A measuring tool, not a dump: no snapshot across queries, no schema, no password.
use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;

/// Sends one frontend message: its type byte (none for the startup message), length, body.
fn send(w: &mut impl Write, kind: Option<u8>, body: &[u8]) {
    let mut m: Vec<u8> = kind.into_iter().collect();
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    w.write_all(&m).unwrap();
}

/// Reads messages up to ReadyForQuery: the rows of CopyData messages are appended to
/// `rows`, written to `out` 1 MiB or more at a time; an ErrorResponse panics.
fn until_ready(r: &mut impl Read, rows: &mut Vec<u8>, out: &mut impl Write) {
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
            b'd' if rows.len() >= 1 << 20 => {
                out.write_all(rows).unwrap();
                rows.clear();
            }
            b'Z' => return,
            b'E' => panic!("error {}", String::from_utf8_lossy(&body)),
            _ => {}
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let sock = args.next().unwrap();
    let db = args.next().unwrap();
    let queries: Vec<String> = args.collect();
    let s = UnixStream::connect(&sock).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::with_capacity(1 << 20, s);
    let out = std::io::stdout();
    let mut out = out.lock();
    let mut rows: Vec<u8> = Vec::with_capacity(2 << 20);
    let mut startup = 196608u32.to_be_bytes().to_vec();
    for kv in [
        "user",
        "postgres",
        "database",
        &db,
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
    until_ready(&mut r, &mut rows, &mut out);
    for q in queries {
        send(&mut w, Some(b'Q'), format!("{q}\0").as_bytes());
        until_ready(&mut r, &mut rows, &mut out);
    }
    out.write_all(&rows).unwrap();
}
