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

fn msg(r: &mut impl Read, body: &mut Vec<u8>) -> u8 {
    let mut h = [0u8; 5];
    r.read_exact(&mut h).unwrap();
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize - 4;
    body.clear();
    body.resize(len, 0);
    r.read_exact(body).unwrap();
    h[0]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let sock = args.next().unwrap();
    let db = args.next().unwrap();
    let queries: Vec<String> = args.collect();
    let s = UnixStream::connect(&sock).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::with_capacity(1 << 20, s);
    let mut startup = Vec::new();
    startup.extend_from_slice(&196608u32.to_be_bytes());
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
    let mut m = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
    m.extend_from_slice(&startup);
    w.write_all(&m).unwrap();
    let mut body = Vec::new();
    loop {
        match msg(&mut r, &mut body) {
            b'Z' => break,
            b'E' => panic!("error {}", String::from_utf8_lossy(&body)),
            _ => {}
        }
    }
    let out = std::io::stdout();
    let mut out = out.lock();
    let mut buf: Vec<u8> = Vec::with_capacity(2 << 20);
    for q in queries {
        let mut m = vec![b'Q'];
        m.extend_from_slice(&((q.len() + 5) as u32).to_be_bytes());
        m.extend_from_slice(q.as_bytes());
        m.push(0);
        w.write_all(&m).unwrap();
        loop {
            let mut h = [0u8; 5];
            r.read_exact(&mut h).unwrap();
            let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize - 4;
            if h[0] == b'd' {
                let at = buf.len();
                buf.resize(at + len, 0);
                r.read_exact(&mut buf[at..]).unwrap();
                if buf.len() >= 1 << 20 {
                    out.write_all(&buf).unwrap();
                    buf.clear();
                }
                continue;
            }
            body.clear();
            body.resize(len, 0);
            r.read_exact(&mut body).unwrap();
            match h[0] {
                b'Z' => break,
                b'E' => panic!("error {}", String::from_utf8_lossy(&body)),
                _ => {}
            }
        }
    }
    out.write_all(&buf).unwrap();
}
